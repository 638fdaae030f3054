"""Issue 16, item 3: no pattern from a repository's `.arbiter.yml` runs unbounded.

Globs and branch regexes are matched by RE2, whose time is linear in the text; what RE2 cannot
match (look-arounds, back-references) and what is too long is refused with a problem naming
the key. Hostile patterns are run in a child process with a generous deadline: under a
backtracking engine each of them takes longer than the age of the universe, so the child
either answers at once or never.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from config.globs import MAX_GLOB_CHARS, compile_glob, matches
from config.patterns import LinearPattern, compile_regex
from config.repo import glob_problem, resolve

DEEP = "/".join(["a"] * 40) + "/y"
HOSTILE_GLOBS = [
    "/".join(["**"] * 10) + "/z",  # issue 16: froze the server 12 s on a 25-level path
    "/".join(["**"] * 20) + "/z",
    "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
    "{**/,**/,**/,**/,**/,**/}{**/,**/,**/,**/,**/,**/}{**/,**/,**/,**/}z",
    "**/*" * 12 + "z",
]
HOSTILE_REGEXES = ["(a+)+$", "(a|a)*b", "(a*)*b", "(.*a){25}", "((a+)+)+c"]


def _in_a_child(code: str) -> Any:
    """Run `code` (which prints JSON) in a fresh interpreter; a backtracking engine never
    returns, so the generous deadline is a liveness guard, not a timing."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_hostile_globs_are_matched_in_linear_time() -> None:
    answers = _in_a_child(
        f"""
        import json
        from config.globs import matches
        patterns = {HOSTILE_GLOBS!r}
        paths = [{DEEP!r}, {"a" * 5000 + "/y"!r}, {"/".join(["ab"] * 300)!r}]
        print(json.dumps([[matches(p, path) for path in paths] for p in patterns]))
        """
    )

    assert answers == [[False, False, False]] * len(HOSTILE_GLOBS)


def test_the_glob_engine_is_linear_and_keeps_the_documented_syntax() -> None:
    pattern = compile_glob(HOSTILE_GLOBS[0])

    assert isinstance(pattern, LinearPattern)
    assert matches(HOSTILE_GLOBS[0], "a/b/c/z") and matches(HOSTILE_GLOBS[0], "z")
    assert matches("src/**", "src/a\nb.py")  # a newline in a path is still a character


def test_hostile_branch_regexes_are_matched_in_linear_time() -> None:
    answers = _in_a_child(
        f"""
        import json
        from config.patterns import compile_regex
        names = [{"a" * 60 + "!"!r}, {"a" * 100_000!r}]
        regexes = {HOSTILE_REGEXES!r}
        print(json.dumps([[compile_regex(r).fullmatch(n) for n in names] for r in regexes]))
        """
    )

    assert [row[0] for row in answers] == [False] * len(HOSTILE_REGEXES)


def test_a_review_decision_with_a_hostile_regex_returns() -> None:
    answer = _in_a_child(
        """
        import json
        from dataclasses import replace
        from bot.review.policy import skip_reason
        from config.repo import resolve
        from platforms.base import PullRequest
        effective = resolve("auto_review:\\n  base_branches: ['(a+)+$', '(a|a)*b']\\n")
        pr = PullRequest(repo="o/r", number=1, title="t", body=None, author="dev",
            author_is_bot=False, base_sha="b", head_sha="h", base_ref="a" * 60 + "!",
            head_ref="x", draft=False, state="open", labels=(), url="u", default_branch="main")
        print(json.dumps(skip_reason(effective, pr)))
        """
    )

    assert isinstance(answer, str) and "auto_review.base_branches" in answer


@pytest.mark.parametrize(
    ("regex", "words"),
    [
        ("(?=release)rel.*", "look-around"),
        ("(a)\\1", "back-reference"),
        ("(?<!x)y", "look-around"),
        ("a{1001}", "repeat"),
        ("(" * 150 + "a" + ")" * 150, "over"),
    ],
)
def test_a_regex_re2_cannot_match_is_refused_with_the_key(regex: str, words: str) -> None:
    effective = resolve(f"auto_review:\n  base_branches: [{json.dumps(regex)}]\n")

    (problem,) = effective.problems
    assert problem.key == "auto_review.base_branches[0]"
    assert words in problem.message
    assert effective.config.auto_review.base_branches == []  # the defaults are used


def test_a_python_style_regex_that_re2_reads_the_same_is_accepted() -> None:
    branches = "['release/.*', 'v\\d+\\.\\d+', 'hotfix-(?P<n>\\d+)']"
    effective = resolve(f"auto_review:\n  base_branches: {branches}\n")

    assert effective.problems == ()
    regex = compile_regex("v\\d+\\.\\d+")
    assert regex.fullmatch("v1.2") and not regex.fullmatch("v1.2-rc")


def test_overlong_and_too_many_globs_are_refused_with_the_key() -> None:
    long = "src/" + "x" * MAX_GLOB_CHARS
    assert glob_problem(long) is not None and f"{MAX_GLOB_CHARS:,}" in str(glob_problem(long))

    effective = resolve(f"path_filters: [{json.dumps(long)}]\n")
    (problem,) = effective.problems
    assert problem.key == "path_filters[0]" and "characters" in problem.message

    instructions = resolve(
        f"path_instructions:\n  - path: {json.dumps(long)}\n    instructions: hi\n"
    )
    (problem,) = instructions.problems
    assert problem.key == "path_instructions[0].path"


def test_a_glob_re2_cannot_compile_is_refused_not_crashed() -> None:
    assert glob_problem("[z-a].py") is not None
    effective = resolve("path_filters: ['[z-a].py']\n")
    assert effective.problems[0].key == "path_filters[0]"
