"""Benchmark: what a hostile repository or model output costs the event loop (issue 16).

    .venv/bin/python bench/hostile_input.py

Printed:

- path filters: the worst a `.arbiter.yml` can ask of `filter_files` (200 globs of up to
  500 characters, half of them `**/**/…` chains, over 3,000 files 40 directories deep, as
  many as GitHub lists for a pull request; the review runs it off the event loop), 30
  typical globs, and the issue's hostile glob alone;
- branch regexes: 50 hostile regexes against a 10,000-character branch name;
- Markdown: `neutralise` on a 60,000-character model answer full of mentions, code and HTML,
  and `defused` on a 60,000-character summary.

Each figure is the best of 3 runs. This prints figures; it asserts nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.core.diff import from_file_changes
from bot.core.filters import filter_files
from bot.core.markdown import code, defused, neutralise
from config.globs import MAX_GLOB_CHARS
from config.patterns import compile_regex
from platforms.base import FileChange

FILES = 3000
DEPTH = 40


def best(run: Callable[[], object], times: int = 3) -> float:
    found = float("inf")
    for _ in range(times):
        start = time.perf_counter()
        run()
        found = min(found, time.perf_counter() - start)
    return found


def main() -> None:
    deep = "/".join(f"dir{n}" for n in range(DEPTH))
    files = from_file_changes(
        [
            FileChange(f"{deep}/file{n}.py", "added", "@@ -0,0 +1 @@\n+x = 1", additions=1)
            for n in range(FILES)
        ]
    )
    chain = "/".join(["**"] * 20) + "/z"
    globs = [
        (chain + "/" + "x" * (MAX_GLOB_CHARS - len(chain) - 1 - n))[:MAX_GLOB_CHARS]
        if n % 2
        else "!" + ("*a" * 240)[: MAX_GLOB_CHARS - 2] + "b"
        for n in range(200)
    ]
    took = best(lambda: filter_files(files, globs))
    print(f"path filters: 200 globs x {FILES:,} files {DEPTH} deep: {took * 1000:.0f} ms")
    typical = ["src/**", "!**/*.snap", "!**/__fixtures__/**", "!docs/**", "*.{ts,tsx,py,go}"] * 6
    took = best(lambda: filter_files(files, typical))
    print(f"path filters: 30 typical globs x {FILES:,} files: {took * 1000:.0f} ms")
    issue = ["/".join(["**"] * 10) + "/z"]
    took = best(lambda: filter_files(files, issue))
    print(f"path filters: the issue's `**/**/…/z` x {FILES:,} files: {took * 1000:.1f} ms")

    regexes = ["(a+)+$", "(a|a)*b", "(a*)*b", "(.*a){25}", "((a+)+)+c"] * 10
    branch = "a" * 10_000 + "!"
    took = best(lambda: [compile_regex(r).fullmatch(branch) for r in regexes])
    print(f"branch regexes: 50 hostile x a 10,000-character name: {took * 1000:.1f} ms")

    piece = (
        "See @octocat and &#64;team. `@Override` <b>bold</b> <!-- hidden -->\n\n"
        "```java\n@Override\nvoid run() {}\n```\n\n- item @someone\n\n"
    )
    answer = (piece * (60_000 // len(piece) + 1))[:60_000]
    took = best(lambda: neutralise(answer))
    print(f"neutralise: a 60,000-character answer: {took * 1000:.0f} ms")
    line = f"- {code('src/@x `y`.py')} line 3: {neutralise('cc @octocat `x` <b>')}\n"
    summary = (line * (60_000 // len(line) + 1))[:60_000]
    took = best(lambda: defused(summary))
    print(f"defused: a 60,000-character summary: {took * 1000:.0f} ms")


if __name__ == "__main__":
    main()
