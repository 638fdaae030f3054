"""Glob patterns over repository paths, as in `.gitignore` and CodeRabbit's path filters.

`*` matches within one path segment, `**` across segments (`src/**`, `**/*.test.ts`), `?` one
character, `[abc]` a class, `{a,b}` alternatives. A pattern without a `/` matches a file name
anywhere in the tree (`*.lock`); one ending in `/` matches everything under that directory.

A glob is translated to a regular expression matched by RE2 (config/patterns.py), in time
linear in the path whatever the pattern: `**/**/**/…/z` cannot freeze anything. Globs are
bounded in length; one RE2 cannot compile raises PatternError. A list of globs is matched a
few globs at a time, as one RE2 pattern each (`matches_any`, `first_match`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from config.patterns import LinearPattern, PatternError, compile_regex

MAX_GLOB_CHARS = 500
GROUP_CHARS = 1000  # regex characters matched as one RE2 pattern (see `_groups`)


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> LinearPattern:
    """The pattern a path must fully match for `pattern` to select it (PatternError when the
    glob is too long or cannot be compiled)."""
    return compile_regex(glob_regex(pattern), dot_all=True)


def glob_regex(pattern: str) -> str:
    """The regular expression (RE2 syntax) a path must fully match for `pattern` to select it."""
    if len(pattern) > MAX_GLOB_CHARS:
        raise PatternError(
            f"it is {len(pattern):,} characters long, over the limit of {MAX_GLOB_CHARS:,}"
        )
    text = pattern.strip()
    if text.startswith("./"):
        text = text[2:]
    if text.endswith("/"):
        text += "**"
    anchored = "/" in text.rstrip("/")
    text = text.lstrip("/")
    body = _translate(text)
    if not anchored:
        body = f"(?:.*/)?{body}"
    return f"{body}(?:/.*)?"


def matches(pattern: str, path: str) -> bool:
    return compile_glob(pattern).fullmatch(path)


def matches_any(patterns: Sequence[str], path: str) -> bool:
    """Whether one of `patterns` selects `path`."""
    return any(group.fullmatch(path) for group, _ in _groups(tuple(patterns)))


def first_match(patterns: Sequence[str], path: str) -> str | None:
    """The first of `patterns` that selects `path`, or None."""
    for group, members in _groups(tuple(patterns)):
        if group.fullmatch(path):
            return next((p for p in members if matches(p, path)), None)
    return None


@functools.lru_cache(maxsize=256)
def _groups(patterns: tuple[str, ...]) -> tuple[tuple[LinearPattern, tuple[str, ...]], ...]:
    """The list as a few RE2 patterns, each matching any of a run of globs: one pass over a
    path per run rather than per glob. Runs are kept small enough for RE2's fast engine."""
    groups: list[tuple[LinearPattern, tuple[str, ...]]] = []
    run: list[str] = []
    size = 0
    for pattern in (*patterns, None):
        regex = glob_regex(pattern) if pattern is not None else ""
        if run and (pattern is None or size + len(regex) > GROUP_CHARS):
            either = "|".join(f"(?:{glob_regex(p)})" for p in run)
            groups.append((compile_regex(either, dot_all=True), tuple(run)))
            run, size = [], 0
        if pattern is not None:
            run.append(pattern)
            size += len(regex)
    return tuple(groups)


def _translate(glob: str) -> str:
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if glob.startswith("**", i):
                i += 2
                if glob.startswith("/", i):  # `**/` : zero or more whole directories
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find(
                "]", i + 2 if glob.startswith("[!", i) or glob.startswith("[^", i) else i + 1
            )
            if end == -1:
                out.append(re.escape(c))
            else:
                inner = glob[i + 1 : end]
                if inner.startswith(("!", "^")):
                    inner = "^" + inner[1:]
                out.append(f"[{inner.replace(chr(92), chr(92) * 2)}]")
                i = end
        elif c == "{":
            end = glob.find("}", i)
            if end == -1:
                out.append(re.escape(c))
            else:
                options = glob[i + 1 : end].split(",")
                out.append("(?:" + "|".join(_translate(opt) for opt in options) + ")")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)
