"""Patterns a repository writes (branch regexes, globs), matched in time linear in the text.

Python's `re` backtracks: `(a+)+$` against a long branch name, or a glob of many `**`, can
keep it busy for hours. Every user pattern is matched by RE2 (google-re2) instead, which never
backtracks; what RE2 cannot match (look-arounds, back-references) is refused when the file is
read, with the reason in plain words. Patterns are bounded in length, and the memory each may
take is capped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import re2

MAX_REGEX_CHARS = 200
MAX_PATTERN_MEMORY = 1 << 20  # bytes for one compiled pattern (RE2's default is 8 MiB)
_CACHED = 1024  # compiled patterns kept; a repository has at most a few hundred


class PatternError(ValueError):
    """A pattern RE2 cannot compile or would not match safely; the message says why."""


@dataclass(frozen=True, eq=False)
class LinearPattern:
    """A compiled pattern whose matching takes time linear in the text."""

    source: str
    compiled: Any  # re2._Regexp: google-re2 ships no type information

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of `text` matches (a lone surrogate counts as one character)."""
        return self.compiled.fullmatch(text.encode("utf-8", "replace")) is not None


@functools.lru_cache(maxsize=_CACHED)
def compile_regex(
    pattern: str, *, dot_all: bool = False, max_mem: int = MAX_PATTERN_MEMORY
) -> LinearPattern:
    """`pattern` (Python / RE2 syntax) compiled by RE2; PatternError when it cannot be. Past
    `max_mem` RE2 still matches in linear time, with a slower engine."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.never_capture = True  # only whether it matches is wanted
    options.max_mem = max_mem
    options.dot_nl = dot_all
    try:
        return LinearPattern(pattern, re2.compile(pattern, options))
    except re2.error as exc:
        raise PatternError(_explain(exc)) from None


def _explain(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else exc
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    for found, why in _WHY:
        if found in text:
            return f"{text}: {why}"
    return text


_BACKTRACKING = "which needs a backtracking engine; Arbiter matches in linear time (RE2 syntax)"
_WHY = (
    ("invalid perl operator: (?=", f"a look-around, {_BACKTRACKING}"),
    ("invalid perl operator: (?!", f"a look-around, {_BACKTRACKING}"),
    ("invalid perl operator: (?<=", f"a look-around, {_BACKTRACKING}"),
    ("invalid perl operator: (?<!", f"a look-around, {_BACKTRACKING}"),
    ("invalid escape sequence: \\Z", "write \\z for the end of the text"),
    *((f"invalid escape sequence: \\{n}", f"a back-reference, {_BACKTRACKING}") for n in range(10)),
    ("invalid repetition size", "a repeat count is over 1,000 (or repeats a large repeat)"),
    ("bad repetition operator", "a repeat of a repeat that cannot be matched"),
    ("pattern too large", "the pattern compiles to more than Arbiter allows"),
)
