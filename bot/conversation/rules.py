"""Who is talking to the bot, and may they: the conversation's rules, as pure functions.

A comment talks to Arbiter when it mentions the bot (mentions.py), or when it is
a reply in an inline thread that one of Arbiter's findings started. An edit counts only when
it adds the mention. Nothing a bot writes counts, Arbiter's own comments least of all: they
are recognised by their author and by the hidden marker every one of them carries, so a
comment Arbiter posts can never start another exchange.

Which thread a reply belongs to, and which of Arbiter's findings started it: threads.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.conversation.commands import COMMAND_NAMES, WRITERS
from bot.conversation.mentions import Request, mentions, read_request
from bot.conversation.threads import is_thread_reply
from bot.events import Comment, Event
from config.repo import EffectiveConfig
from platforms.base import Permission, markers_in


@dataclass(frozen=True)
class ThreadReply:
    """A reply without a mention in an inline thread: a question if the thread is Arbiter's."""

    comment: Comment


def classify(event: Event, bot_name: str) -> Request | ThreadReply | None:
    """What a `comment` event asks of the bot (None: nothing)."""
    comment = event.comment
    if comment is None or event.repo is None or event.number is None:
        return None
    if written_by_a_bot(event, bot_name):
        return None
    request = parse_request(comment.body, bot_name)
    if event.action == "edited":
        # Only an edit that adds the mention; GitLab does not say what the text was before.
        before = comment.previous_body
        if request is None or before is None or mentions(before, bot_name):
            return None
        return request
    if event.action != "created":
        return None
    if request is not None:
        return request
    return ThreadReply(comment) if is_thread_reply(comment) else None


def written_by_a_bot(event: Event, bot_name: str) -> bool:
    """A bot wrote or changed the comment, or it is one of Arbiter's (with an App, Arbiter is a
    bot; with a personal token it is a user, known by its name or its comments' marker)."""
    comment = event.comment
    people = [p for p in (comment.author if comment else None, event.sender) if p is not None]
    if any(p.is_bot or is_arbiter(p.login, bot_name) for p in people):
        return True
    return comment is not None and bool(markers_in(comment.body))


def is_arbiter(login: str, bot_name: str) -> bool:
    name = bot_name.removesuffix("[bot]").casefold()
    return login.casefold() in (name, f"{name}[bot]")


def parse_request(body: str, bot_name: str) -> Request | None:
    """What a comment's text asks of the bot (None: it does not mention it), with Arbiter's
    commands (the table of commands.py)."""
    return read_request(body, bot_name, COMMAND_NAMES)


def may_ask(effective: EffectiveConfig, permission: Permission) -> bool:
    """Whether someone with `permission` may put questions to the bot on this repository."""
    followup = effective.config.followup
    if not (effective.config.enabled and followup.enabled):
        return False
    return followup.allow == "everyone" or permission in WRITERS
