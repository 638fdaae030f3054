"""Glob patterns over repository paths, as in `.gitignore` and CodeRabbit's path filters.

`*` matches within one path segment, `**` across segments (`src/**`, `**/*.test.ts`), `?` one
character, `[abc]` a class, `{a,b}` alternatives. A pattern without a `/` matches a file name
anywhere in the tree (`*.lock`); one ending in `/` matches everything under that directory.

A glob is translated to a regular expression matched by RE2 (config/patterns.py), in time
linear in the path whatever the pattern: `**/**/**/…/z` cannot freeze anything. Globs are
bounded in length; one RE2 cannot compile raises PatternError.
"""

from __future__ import annotations

import functools
import re

from config.patterns import LinearPattern, PatternError, compile_regex

MAX_GLOB_CHARS = 500


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> LinearPattern:
    """The pattern a path must fully match for `pattern` to select it (PatternError when the
    glob is too long or cannot be compiled)."""
    if len(pattern) > MAX_GLOB_CHARS:
        raise PatternError(
            f"it is {len(pattern):,} characters long, over the limit of {MAX_GLOB_CHARS:,}"
        )
    return _compiled(pattern)


def _compiled(pattern: str) -> LinearPattern:
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
    return compile_regex(f"{body}(?:/.*)?", dot_all=True)


def matches(pattern: str, path: str) -> bool:
    return compile_glob(pattern).fullmatch(path)


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
