"""The conversation's rules alone: which comment events talk to Arbiter, who may command it,
and which of its findings a reply's thread is about."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bot.conversation.commands import COMMAND_NAMES as COMMANDS
from bot.conversation.commands import may_command
from bot.conversation.exchange import as_reply, exchange_start, requester
from bot.conversation.mentions import Command, Question
from bot.conversation.rules import ThreadReply, classify, written_by_a_bot
from bot.conversation.threads import thread_findings
from bot.events import Comment, Event, Sender
from bot.store.base import FindingRecord
from platforms.base import REPLY_MARKER

ALICE = Sender("alice")
BOT = "arbiter"


def _comment(body: str, **fields: Any) -> Comment:
    values: dict[str, Any] = {"id": 10, "body": body, "author": ALICE, "kind": "conversation"}
    values.update(fields)
    return Comment(**values)


def _inline(body: str, *, reply_to: int | None = 5, **fields: Any) -> Comment:
    thread = str(reply_to) if reply_to else "10"
    values: dict[str, Any] = {
        "kind": "inline",
        "thread": thread,
        "in_reply_to": reply_to,
        "path": "app.py",
        "line": 3,
    }
    values.update(fields)
    return _comment(body, **values)


def _event(comment: Comment | None, action: str = "created", **fields: Any) -> Event:
    values: dict[str, Any] = {
        "platform": "github",
        "name": "comment",
        "action": action,
        "delivery_id": "d-1",
        "repo": "o/r",
        "number": 7,
        "sender": comment.author if comment else ALICE,
        "comment": comment,
    }
    values.update(fields)
    return Event(**values)


def _finding(path: str = "app.py", line: int = 3, *, posted: bool = True) -> FindingRecord:
    return FindingRecord(
        fingerprint=f"{path}:{line}:{posted}",
        path=path,
        line=line,
        severity="major",
        category="bug",
        title="A bug",
        body="Why.",
        confidence=0.9,
        posted=posted,
    )


# --- Who is talking to Arbiter ------------------------------------------------------------------


def test_a_new_comment_with_a_mention_is_a_request() -> None:
    assert classify(_event(_comment("@arbiter pause")), BOT) == Command("pause")
    assert classify(_event(_comment("@arbiter why?")), BOT) == Question("@arbiter why?")
    assert classify(_event(_inline("@arbiter why?", reply_to=None)), BOT) == Question(
        "@arbiter why?"
    )


def test_a_comment_without_a_mention_is_nothing_unless_it_replies_inline() -> None:
    assert classify(_event(_comment("looks good to me")), BOT) is None
    assert classify(_event(_inline("a new thread", reply_to=None)), BOT) is None
    reply = _inline("why is this a bug?")
    assert classify(_event(reply), BOT) == ThreadReply(reply)


def test_a_gitlab_note_in_a_diff_discussion_is_a_reply() -> None:
    note = _inline("why?", reply_to=None, thread="6a9c1750b37d513a43987b574953fceb50b03ce7")
    assert classify(_event(note, platform="gitlab"), BOT) == ThreadReply(note)


def test_an_edit_counts_only_when_it_adds_the_mention() -> None:
    added = _comment("@arbiter why?", previous_body="why?")
    assert classify(_event(added, "edited"), BOT) == Question("@arbiter why?")
    kept = _comment("@arbiter why? (typo fixed)", previous_body="@arbiter why?")
    assert classify(_event(kept, "edited"), BOT) is None
    was_quoted = _comment("@arbiter pause", previous_body="> @arbiter pause")
    assert classify(_event(was_quoted, "edited"), BOT) == Command("pause")
    unknown = _comment("@arbiter why?", previous_body=None)  # GitLab says nothing of before
    assert classify(_event(unknown, "edited"), BOT) is None
    in_thread = _inline("why, really?", previous_body="why?")
    assert classify(_event(in_thread, "edited"), BOT) is None


def test_other_actions_and_other_events_are_nothing() -> None:
    assert classify(_event(_comment("@arbiter pause"), "deleted"), BOT) is None
    assert classify(_event(None), BOT) is None
    assert classify(_event(_comment("@arbiter pause"), number=None), BOT) is None


@pytest.mark.parametrize(
    ("author", "sender", "body"),
    [
        (Sender("dependabot[bot]", is_bot=True), None, "@arbiter review"),
        (Sender("renovate", is_bot=True), None, "@arbiter why?"),
        (ALICE, Sender("some-app[bot]", is_bot=True), "@arbiter pause"),  # a bot's edit
        (Sender("arbiter"), None, "@arbiter pause"),  # its own name
        (Sender("Arbiter[bot]"), None, "@arbiter pause"),
        # Arbiter on a personal token is a user: its comments carry its marker.
        (Sender("arbiter-bot"), None, as_reply("Ask `@arbiter help`. @arbiter pause")),
        (Sender("arbiter-bot"), None, "finding\n<!-- arbiter:finding 0123456789abcdef -->"),
    ],
)
def test_bots_and_arbiter_itself_never_talk_to_arbiter(
    author: Sender, sender: Sender | None, body: str
) -> None:
    for comment in (_comment(body, author=author), _inline(body, author=author)):
        event = _event(comment, sender=sender or author)
        assert written_by_a_bot(event, BOT)
        assert classify(event, BOT) is None


def test_a_person_quoting_arbiters_marker_is_still_heard() -> None:
    body = "> <!-- arbiter:reply -->\n> earlier answer\n\n@arbiter why? `<!-- arbiter:summary -->`"

    event = _event(_comment(body), sender=ALICE)

    assert not written_by_a_bot(event, BOT)
    assert classify(event, BOT) is not None


def test_arbiter_marks_every_reply() -> None:
    assert as_reply("Done.\n") == f"Done.\n\n{REPLY_MARKER}"


def test_the_requester_is_who_acted() -> None:
    comment = _comment("@arbiter pause", author=Sender("bob"))
    assert requester(_event(comment, "edited", sender=ALICE)) == ALICE
    assert requester(_event(comment, sender=None)) == Sender("bob")


# --- Which thread ------------------------------------------------------------------------------


def test_a_reply_is_about_the_posted_findings_on_its_line() -> None:
    here, other_line, other_file = _finding(), _finding(line=4), _finding("lib.py")
    unposted = _finding(posted=False)
    findings = [here, other_line, other_file, unposted]
    assert thread_findings(_inline("why?"), findings) == [here]
    assert thread_findings(_inline("why?", line=9), findings) == []
    assert thread_findings(_inline("a new thread", reply_to=None), findings) == []
    assert thread_findings(_comment("why?"), findings) == []
    assert thread_findings(_inline("why?", line=None), findings) == []


# --- Who may command ----------------------------------------------------------------------------


@pytest.mark.parametrize("permission", ["admin", "write", "read", "none"])
@pytest.mark.parametrize("name", COMMANDS)
def test_commands_need_write_access_except_help(name: Any, permission: Any) -> None:
    allowed = name == "help" or permission in ("admin", "write")
    assert may_command(name, permission) is allowed


# --- What is recorded ---------------------------------------------------------------------------


def test_an_exchange_starts_with_the_comment_and_who_asked() -> None:
    reply = _inline("@arbiter why?", id=42)
    start = exchange_start(_event(reply, delivery_id="d-9"), Question(reply.body))
    assert (start.platform, start.delivery_id, start.repo, start.number) == (
        "github",
        "d-9",
        "o/r",
        7,
    )
    assert (start.comment_id, start.author, start.kind, start.command) == (
        "42",
        "alice",
        "question",
        None,
    )
    assert (start.question, start.thread, start.path, start.line) == (
        "@arbiter why?",
        "5",
        "app.py",
        3,
    )
    command = exchange_start(_event(_comment("@arbiter full review")), Command("full review"))
    assert (command.kind, command.command, command.thread) == ("command", "full review", None)
    with pytest.raises(ValueError, match="not a comment"):
        exchange_start(_event(None), Command("help"))


def test_a_comment_event_round_trips_through_the_queue() -> None:
    """What classify() reads survives the job queue's JSON."""
    event = _event(_inline("why?", previous_body="before"))
    again = Event.from_json(event.to_json())
    assert replace(again, payload={}) == event
    assert classify(again, BOT) == classify(event, BOT)
