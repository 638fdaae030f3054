"""Benchmark: the review pipeline on diffs of 100, 1,000 and 10,000 changed lines.

    .venv/bin/python bench/review_pipeline.py            # all three sizes, one process each
    .venv/bin/python bench/review_pipeline.py --lines 10000 --files 300

The model is the fake OpenAI server of tests/fakes in instant mode (no recording, answers at
once with a finding per file). Printed per size:

- pipeline: the reviewer's own time (parse, filter, plan, render, check findings, render the
  summary): wall time minus the time spent inside `llm.complete()` (chunks run one at a time,
  so the two do not overlap);
- model calls: the time inside `llm.complete()` (SDK, HTTP, the fake server);
- peak RSS: the process's peak resident memory (Python, both SDKs and the fake included), and
  the peak of Python allocations during the review (tracemalloc, on a second, untimed run);
- prompt tokens per changed line, as the fake counts them (about 4 characters a token).

Target: the 10,000-line diff in under 1 s of pipeline time and under 200 MB peak RSS.
This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = ((100, 10), (1_000, 100), (10_000, 300))
WORDS = ("value", "result", "item", "count", "total", "index", "name", "data", "cache", "user")


def make_diff(changed_lines: int, files: int, seed: int = 7) -> str:
    """A git-style diff: `files` modified Python files, hunks of 7 added and 3 removed lines
    between 3 context lines, adding up to `changed_lines` changed lines."""
    rng = random.Random(seed)
    per_file = [
        changed_lines // files + (1 if i < changed_lines % files else 0) for i in range(files)
    ]
    out: list[str] = []
    for number, changes in enumerate(per_file):
        path = f"src/pkg{number % 17}/module_{number:04d}.py"
        out.append(f"diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n")
        out.append(f"--- a/{path}\n+++ b/{path}\n")
        old = new = 10
        left = changes
        while left > 0:
            added = min(7, left)
            removed = min(3, left - added)
            left -= added + removed
            out.append(f"@@ -{old},{3 + removed + 3} +{new},{3 + added + 3} @@ def f{old}():\n")
            body = [f" {_code(rng)}" for _ in range(3)]
            body += [f"-{_code(rng)}" for _ in range(removed)]
            body += [f"+{_code(rng)}" for _ in range(added)]
            body += [f" {_code(rng)}" for _ in range(3)]
            out.append("\n".join(body) + "\n")
            old += 6 + removed + 20
            new += 6 + added + 20
    return "".join(out)


def _code(rng: random.Random) -> str:
    a, b, c = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
    return f"    {a}_{rng.randrange(100)} = compute({b}, {c}={rng.randrange(1000)})"


async def measure(changed_lines: int, files: int) -> dict[str, Any]:
    from bot.core import ReviewOptions, review_changes
    from bot.core.diff import parse_diff
    from bot.llm import make_llm
    from bot.metrics import Metrics
    from config.settings import load_settings
    from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt

    diff = make_diff(changed_lines, files)
    first_added = {f.path: next(iter(f.new_lines)) + 3 for f in parse_diff(diff)}
    async with FakeOpenAI(record=False) as fake:
        fake.respond(findings_in_prompt(finding(p, n) for p, n in first_added.items()))
        settings = load_settings(
            **fake.settings(),
            max_tokens_per_review=10**9,
            max_cost_per_review_usd=0,  # no cap: review everything
            cache_ttl_hours=0,
        )
        llm = make_llm(settings, None, Metrics())
        inside = [0.0]
        complete = llm.complete

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await complete(*args, **kwargs)
            finally:
                inside[0] += time.perf_counter() - started

        llm.complete = timed  # type: ignore[method-assign]
        options = ReviewOptions(concurrency=1, max_comments=None)
        await review_changes(llm, make_diff(20, 2), options)  # warm up: SDK import, client
        inside[0] = 0.0
        started = time.perf_counter()
        result = await review_changes(llm, diff, options)
        wall = time.perf_counter() - started
        model = inside[0]
        tracemalloc.start()
        await review_changes(llm, diff, options)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        await llm.close()
    assert result.complete, result.not_reviewed[:3]
    return {
        "lines": changed_lines,
        "files": files,
        "chunks": result.chunks,
        "findings": len(result.findings),
        "pipeline_s": wall - model,
        "model_s": model,
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "traced_peak_mb": traced_peak / 1024 / 1024,
        "tokens_per_line": result.usage.input_tokens / changed_lines,
    }


def _row(m: dict[str, Any]) -> str:
    return (
        f"{m['lines']:>7,} lines {m['files']:>4} files {m['chunks']:>3} chunks | "
        f"pipeline {m['pipeline_s'] * 1000:7.1f} ms | model calls {m['model_s'] * 1000:7.1f} ms | "
        f"peak RSS {m['peak_rss_mb']:6.1f} MB (Python allocations {m['traced_peak_mb']:5.1f} MB)"
        f" | {m['tokens_per_line']:5.1f} prompt tokens per changed line"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int)
    parser.add_argument("--files", type=int)
    args = parser.parse_args()
    if args.lines and args.files:
        print(_row(asyncio.run(measure(args.lines, args.files))))
        return
    print(f"review pipeline, instant fake model, Python {sys.version.split()[0]}")
    for lines, files in SIZES:
        # One process per size, so each peak RSS is its own.
        child = subprocess.run(
            [sys.executable, __file__, "--lines", str(lines), "--files", str(files)],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            print(child.stdout + child.stderr, file=sys.stderr)
            raise SystemExit(child.returncode)
        print(child.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
