"""Mentions: what a comment's text asks of the bot, as pure functions.

`read_request(body, bot_name, commands)` finds the first mention of the bot (`@arbiter`, any
case, as a whole word) in the text a reader sees as the author's own words, and reads the words
after it: one of `commands` (the table of bot/conversation/commands.py) is a `Command`,
anything else makes the comment a `Question`.

A mention does not count inside code (spans, fenced or indented blocks), quoted text (`>` lines
and their lazy continuations) or HTML comments, as GitHub and GitLab render them: a pasted log,
an example, or a quote of an earlier comment must not set the bot off.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

_FENCE_OPEN = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_QUOTE = re.compile(r"^ {0,3}>")
_INDENTED = re.compile(r"^(?: {4}|\t)")
_TICKS = re.compile(r"`+")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_WORD = re.compile(r"[ \t:,]*(?P<word>[A-Za-z][A-Za-z-]*)")  # on the mention's line


@dataclass(frozen=True)
class Command:
    name: str  # one of the command table's names, e.g. "full review"


@dataclass(frozen=True)
class Question:
    text: str  # the whole comment: quotes and code are part of what is asked


Request = Command | Question


def handle_for(bot_name: str) -> str:
    """The name people type after `@`: a GitHub App's `arbiter[bot]` is mentioned as `@arbiter`."""
    return bot_name.removesuffix("[bot]")


def mention_pattern(bot_name: str) -> re.Pattern[str]:
    handle = re.escape(handle_for(bot_name))
    # Not part of an e-mail address, a longer name (@arbiter-dev, @arbiter.ci) or a team
    # (@arbiter/reviewers); a full stop that ends the sentence is fine.
    return re.compile(
        rf"(?<![\w@/.+`-])@{handle}(?:\[bot\])?(?![\w/-]|\.\w)", re.IGNORECASE | re.UNICODE
    )


def readable_text(body: str) -> str:
    """`body` with code, quoted text and HTML comments blanked out (each replaced by spaces or
    empty lines, so the words around them stay apart)."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    fence: tuple[str, int] | None = None
    after_blank = True  # an indented code block starts only after a blank line
    in_code = in_quote = False
    for line in lines:
        if fence is not None:
            char, length = fence
            if re.fullmatch(rf" {{0,3}}{re.escape(char)}{{{length},}}[ \t]*", line):
                fence = None
            kept.append("")
            continue
        opening = _FENCE_OPEN.match(line)
        if opening and not (opening["fence"][0] == "`" and "`" in opening["info"]):
            fence = (opening["fence"][0], len(opening["fence"]))
            kept.append("")
            in_code = in_quote = False
            continue
        if not line.strip():
            kept.append("")
            after_blank, in_quote = True, False
            continue
        if _QUOTE.match(line) or in_quote:  # a line right after a quote continues it
            kept.append("")
            in_quote, after_blank, in_code = True, False, False
            continue
        if _INDENTED.match(line) and (after_blank or in_code):
            kept.append("")
            in_code, after_blank = True, False
            continue
        kept.append(line)
        in_code = after_blank = False
    paragraphs = "\n".join(kept).split("\n\n")  # a code span never crosses a blank line
    text = "\n\n".join(_without_code_spans(p) for p in paragraphs)
    return _HTML_COMMENT.sub(" ", text)


def _without_code_spans(text: str) -> str:
    """CommonMark's rule: a run of backticks opens a span that the next run of the same length
    closes; a run that is never closed is literal text."""
    out: list[str] = []
    start = position = 0
    while (opening := _TICKS.search(text, position)) is not None:
        run = opening.group(0)
        closing = re.compile(rf"(?<!`){run}(?!`)").search(text, opening.end())
        if closing is None:
            position = opening.end()
            continue
        out += [text[start : opening.start()], " "]
        start = position = closing.end()
    out.append(text[start:])
    return "".join(out)


def mentions(body: str, bot_name: str) -> bool:
    """Whether `body` mentions the bot where a reader would see it."""
    return mention_pattern(bot_name).search(readable_text(body)) is not None


def read_request(body: str, bot_name: str, commands: Collection[str]) -> Request | None:
    """What a comment asks of the bot; None when it does not mention it.

    The words right after the first mention pick a command, the longest of `commands` they
    spell (`full review`, not `review`); the rest of the text is not read, so no part of a
    comment can pass options. Anything else is a question.
    """
    text = readable_text(body)
    found = mention_pattern(bot_name).search(text)
    if found is None:
        return None
    spelled = {tuple(name.split()): name for name in commands}
    longest = max((len(words) for words in spelled), default=0)
    words = tuple(m["word"].lower() for m in _words_after(text, found.end(), longest))
    for size in range(len(words), 0, -1):
        name = spelled.get(words[:size])
        if name is not None:
            return Command(name)
    return Question(body)


def _words_after(text: str, position: int, count: int) -> list[re.Match[str]]:
    found: list[re.Match[str]] = []
    while len(found) < count:
        match = _WORD.match(text, position)
        if match is None:
            break
        found.append(match)
        position = match.end()
        if position < len(text) and not text[position].isspace():
            break  # "review." or "review!": the word ends the sentence
    return found
