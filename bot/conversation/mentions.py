"""Mentions: what a comment's text asks of the bot, as pure functions.

`read_request(body, bot_name, commands)` finds the first mention of the bot (`@arbiter`, any
case, as a whole word) in the text a reader sees as the author's own words, and reads the words
after it: one of `commands` (the table of bot/conversation/commands.py) is a `Command`,
anything else makes the comment a `Question`.

A mention does not count inside code (spans, fenced or indented blocks), quoted text (`>` lines
and their lazy continuations), HTML or links, as GitHub and GitLab render them (decided by a
CommonMark parser): a pasted log, an example, or a quote of an earlier comment must not set the
bot off.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from bot.core.markdown import spoken_text

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
        rf"(?<![\w@/.+-])@{handle}(?:\[bot\])?(?![\w/-]|\.\w)", re.IGNORECASE | re.UNICODE
    )


def readable_text(body: str) -> str:
    """The text of `body` a reader sees as the author's own, as a CommonMark parser reads it:
    code, quoted text, HTML and links left out (bot/core/markdown.py)."""
    return spoken_text(body)


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
