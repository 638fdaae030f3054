"""Markdown for what Arbiter posts: code spans, and text that pings no one and hides nothing.

What is code and what a reader sees as text is decided by a CommonMark parser (markdown-it-py,
with GFM tables, as GitHub and GitLab render comments), never by a regular expression:

- `neutralise(text)` makes author- or model-written Markdown safe to post. Outside code, an
  `@` that GitHub or GitLab could read as a mention (a user, `@org/team`, a GitLab group or
  `@all`) gets a zero-width space after it, an HTML entity spelling `@` becomes a defused `@`,
  and `<` becomes `&lt;`: no raw HTML, so no hidden `<!--` marker either. Code is left
  exactly as written, and a fence left open is closed so that it cannot swallow what follows.
  One line of text is read as inline text, as it is where it is put (a title, a list item).
- `code(text)` shows any text as one inline code span: backticks fenced, newlines and other
  control characters shown as their symbols (␊). `table_cell(markdown)` escapes `|` for a
  GFM table cell, where it would otherwise split a code span.
- `defused(comment)` is the last pass over a whole comment before it is posted: whatever
  embedding made live again (a stray backtick before a code span, a cut) is defused, and
  Arbiter's own tags are left alone.
- `spoken_text(markdown)` is the other way round: the words of a comment a reader sees as
  its author's own (not code, quotes, HTML or links), where a mention of the bot counts.

How: each `@`, `&` and (outside autolinks) `<` is swapped for a private-use character of its
own, which CommonMark reads as plain text; the parser then says where each one landed, and
only those in rendered text are changed. The result parses the same way as what was read.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from markdown_it import MarkdownIt
from markdown_it.token import Token

ZWSP = "\u200b"

_PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_AUTOLINK = re.compile(r"<[a-zA-Z][a-zA-Z0-9+.\-]{1,31}:[^<>\x00-\x20]*>")  # CommonMark's
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")  # Ruby's \w
_PRIVATE = re.compile("[\U000f0000-\U0010ffff]")  # where the stand-ins come from
_PLANE = 0xFFFE  # usable private-use characters in each of planes 15 and 16
_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
_TICKS = re.compile(r"`+")
_PIPE = re.compile(r"(\\*)\|")

Where = Literal["text", "html", "code", "autolink"]


@dataclass(frozen=True)
class _Special:
    at: int  # index in the text
    char: str  # "@", "&" or "<"


def neutralise(text: str) -> str:
    """`text` with mentions, entities spelling `@` and raw HTML defused outside code."""
    return _defuse(text, all_html=True)


def defused(comment: str) -> str:
    """A whole comment of Arbiter's, with every live `@` and HTML comment defused; Arbiter's
    own tags (`<sub>`, `<details>`) are kept."""
    return _defuse(comment, all_html=False, close_fence=False)


def spoken_text(markdown: str) -> str:
    """The words a reader sees as the author's own: the rendered text outside code, quotes,
    HTML and links, each block on lines of its own (code and HTML are replaced by a space)."""
    blocks: list[str] = []
    quoted = 0
    for token in _PARSER.parse(markdown):
        if token.type == "blockquote_open":
            quoted += 1
        elif token.type == "blockquote_close":
            quoted -= 1
        elif token.type == "inline" and not quoted:
            blocks.append(_spoken_inline(token.children or []))
    return "\n\n".join(blocks)


def code(text: str) -> str:
    """`text` as one inline code span, whatever it holds."""
    shown = _CONTROL.sub(lambda m: _symbol(m.group()), text)
    if not shown:
        return "` `"
    longest = max((len(run) for run in _TICKS.findall(shown)), default=0)
    ticks = "`" * (longest + 1)
    ends = shown[0] + shown[-1]
    # CommonMark strips one space each side when both are there: pad to keep them.
    pad = " " if "`" in ends or (ends == "  " and shown.strip(" ")) else ""
    return f"{ticks}{pad}{shown}{pad}{ticks}"


def table_cell(markdown: str) -> str:
    """`markdown` (one line) made safe for a GFM table cell: its pipes do not end the cell."""
    line = " ".join(markdown.splitlines())
    return _PIPE.sub(lambda m: m.group(1) + ("" if len(m.group(1)) % 2 else "\\") + "|", line)


def suggestion_block(suggestion: str) -> str:
    longest = max((len(run) for run in re.findall(r"`{3,}", suggestion)), default=2)
    fence = "`" * max(3, longest + 1)
    return f"{fence}suggestion\n{suggestion}\n{fence}"


def _spoken_inline(children: Iterable[Token]) -> str:
    out: list[str] = []
    linked = 0
    for child in children:
        if child.type == "link_open":
            linked += 1
        elif child.type == "link_close":
            linked -= 1
        elif child.type == "text" and not linked:
            out.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            out.append("\n")
        elif child.type in ("code_inline", "html_inline", "image"):
            out.append(" ")
    return "".join(out)


# --- Reading where each special character lands ---------------------------------------------------


def _defuse(text: str, *, all_html: bool, close_fence: bool = True) -> str:
    text = _PRIVATE.sub("\ufffd", text)  # the stand-ins must be ours alone
    specials = _specials(text, all_html=all_html)
    if len(specials) > 2 * _PLANE:
        return _bluntly(text)
    one_line = "\n" not in text and "\r" not in text
    if not specials and (one_line or not close_fence):
        # Nothing to defuse, and no fence to close: what the parse would decide is moot.
        return text + "\\" if one_line and _odd_backslashes(text, len(text)) else text
    standin = list(text)
    for n, special in enumerate(specials):
        standin[special.at] = _standin(n)
    source = "".join(standin)
    tokens = _PARSER.parseInline(source) if one_line else _PARSER.parse(source)
    edits = _edits(text, specials, _landings(tokens, specials))
    out = _apply(text, edits)
    if one_line and _odd_backslashes(out, len(out)):
        out += "\\"  # a last backslash would escape what the text is followed by
    if close_fence and not one_line:
        out += _closing_fence(text, tokens)
    return out


def _specials(text: str, *, all_html: bool) -> list[_Special]:
    found: list[_Special] = []
    for at, char in enumerate(text):
        if char in "@&":
            found.append(_Special(at, char))
        elif char == "<":
            if all_html and _AUTOLINK.match(text, at) is None:
                found.append(_Special(at, char))  # an autolink stays one: it pings no one
            elif not all_html and text.startswith("<!--", at):
                found.append(_Special(at, char))
    return found


def _standin(n: int) -> str:
    return chr(0xF0000 + n) if n < _PLANE else chr(0x100000 + n - _PLANE)


def _index(char: str) -> int | None:
    code_point = ord(char)
    if 0xF0000 <= code_point < 0xF0000 + _PLANE:
        return code_point - 0xF0000
    if 0x100000 <= code_point < 0x100000 + _PLANE:
        return code_point - 0x100000 + _PLANE
    return None


@dataclass(frozen=True)
class _Landing:
    where: Where
    after_word: bool  # rendered right after an ASCII word character


def _landings(tokens: Sequence[Token], specials: Sequence[_Special]) -> dict[int, _Landing]:
    """Where each stand-in was rendered; one not found (a link's target, a fence's info
    string, a reference definition) is not rendered as text at all."""
    found: dict[int, _Landing] = {}

    def mark(content: str, where: Where) -> None:
        for position, char in enumerate(content):
            n = _index(char)
            if n is None:
                continue
            before = content[position - 1] if position else ""
            m = _index(before) if before else None
            if m is not None:
                before = specials[m].char
            found[n] = _Landing(where, before in _WORD)

    def inline(children: Iterable[Token]) -> None:
        autolinks = 0
        for child in children:
            if child.type == "link_open" and child.markup == "autolink":
                autolinks += 1
            elif child.type == "link_close" and child.markup == "autolink":
                autolinks -= 1
            elif child.type == "code_inline":
                mark(child.content, "code")
            elif child.type == "text":
                mark(child.content, "autolink" if autolinks else "text")
            elif child.type == "html_inline":
                mark(child.content, "html")
            elif child.type == "image":
                inline(child.children or [])

    for token in tokens:
        if token.type in ("fence", "code_block"):
            mark(token.content, "code")
        elif token.type == "html_block":
            mark(token.content, "html")
        elif token.type == "inline":
            inline(token.children or [])
    return found


# --- Changing what would act on a reader ---------------------------------------------------------


def _edits(
    text: str, specials: Sequence[_Special], landings: dict[int, _Landing]
) -> list[tuple[int, int, str]]:
    edits: list[tuple[int, int, str]] = []
    for n, special in enumerate(specials):
        landing = landings.get(n)
        if landing is None or landing.where not in ("text", "html"):
            continue
        at = special.at
        if special.char == "@":
            if not landing.after_word and text[at + 1 : at + 2] != ZWSP:
                edits.append((at + 1, at + 1, ZWSP))
        elif _odd_backslashes(text, at):
            continue  # written as `\&` or `\<`: shown as it is
        elif special.char == "<":
            edits.append((at, at + 1, "&lt;"))
        else:
            entity = _ENTITY.match(text, at)
            if entity is not None and "@" in html.unescape(entity.group()):
                edits.append((at, entity.end(), "@" + ZWSP))
    return edits


def _apply(text: str, edits: Sequence[tuple[int, int, str]]) -> str:
    out: list[str] = []
    last = 0
    for start, end, replacement in edits:
        out += [text[last:start], replacement]
        last = end
    out.append(text[last:])
    return "".join(out)


def _odd_backslashes(text: str, at: int) -> bool:
    count = 0
    while at - count > 0 and text[at - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _closing_fence(text: str, tokens: Sequence[Token]) -> str:
    """The line that closes a top-level fence the text leaves open ("" when none is)."""
    fences = [t for t in tokens if t.type == "fence" and t.level == 0 and t.map]
    if not fences:
        return ""
    last = fences[-1]
    assert last.map is not None
    lines = re.split(r"\r\n|\r|\n", text)
    start, end = last.map
    char, length = last.markup[0], len(last.markup)
    closer = re.compile(rf" {{0,3}}{re.escape(char)}{{{length},}}[ \t]*")
    if end - start >= 2 and end <= len(lines) and closer.fullmatch(lines[end - 1]):
        return ""
    if end < len(lines) and any(line.strip() for line in lines[end:]):
        return ""  # ended by its container, not by the end of the text
    return ("" if text.endswith("\n") else "\n") + last.markup


def _bluntly(text: str) -> str:
    """For text with more special characters than there are stand-ins: every `@` defused,
    code or not, and no raw HTML."""
    out = re.sub(f"@(?!{ZWSP})", "@" + ZWSP, text)
    return out.replace("<", "&lt;").replace("&#", "&amp;#")


def _symbol(char: str) -> str:
    """The Unicode control picture of a control character (␊ for a newline)."""
    code_point = ord(char)
    if code_point < 0x20:
        return chr(0x2400 + code_point)
    return "\u2421" if code_point == 0x7F else "\u2424"
