"""Markdown helpers for what Arbiter posts: code spans, and text made harmless to post.

`neutralise(text)` defuses what would act on a reader: `@user` and `@org/team` mentions get a
zero-width space after the `@` (no one is pinged), and `<!--` is escaped so text cannot fake
the hidden markers Arbiter finds its own comments by. Code is left exactly as written.
"""

from __future__ import annotations

import re

ZWSP = "\u200b"

_CODE = re.compile(
    r"^[ \t]*(?P<fence>`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*(?P=fence)[ \t]*$|\Z)"  # fenced block
    r"|(?P<ticks>`+).+?(?P=ticks)",  # inline code span
    re.DOTALL | re.MULTILINE,
)
_MENTION = re.compile(r"(?<![\w@/.`+-])@(?=[A-Za-z0-9_])")


def neutralise(text: str) -> str:
    """`text` with mentions and HTML-comment openers defused outside code."""
    out: list[str] = []
    last = 0
    for match in _CODE.finditer(text):
        out.append(_defuse(text[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_defuse(text[last:]))
    return "".join(out)


def _defuse(text: str) -> str:
    return _MENTION.sub("@" + ZWSP, text).replace("<!--", "&lt;!--")


def code(text: str) -> str:
    """`text` as an inline code span, whatever backticks it holds."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def suggestion_block(suggestion: str) -> str:
    longest = max((len(run) for run in re.findall(r"`{3,}", suggestion)), default=2)
    fence = "`" * max(3, longest + 1)
    return f"{fence}suggestion\n{suggestion}\n{fence}"
