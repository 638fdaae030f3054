"""One exchange with a person on a pull request: recorded from start to end, and the two things
Arbiter does on the platform in it, reply in the comment's thread and react to the comment.

A retried job finds its exchange again by delivery: one already finished is not handled twice.
With ARBITER_POST_COMMENTS=false nothing is posted (the exchange is still recorded).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bot.context import Context
from bot.conversation.mentions import Command, Request
from bot.core.markdown import defused
from bot.events import Event, Sender, comment_ref
from bot.store.base import ExchangeOutcome, ExchangeRecord, ExchangeStart
from platforms.base import REPLY_MARKER, CommentRef, PlatformError, Reaction


async def begin(ctx: Context, start: ExchangeStart) -> ExchangeRecord | None:
    """The exchange for this delivery, or None when an earlier attempt already finished it."""
    record = await ctx.store.start_exchange(
        replace(start, question=ctx.redactor.scrub(start.question))
    )
    if record.outcome != "pending":
        ctx.log.info("exchange already handled", exchange=record.id, outcome=record.outcome)
        return None
    return record


async def finish(
    ctx: Context, record: ExchangeRecord, outcome: ExchangeOutcome, **changes: Any
) -> None:
    # What was said is kept and served: secrets (a pasted token, one the model echoed) are not.
    text = {k: ctx.redactor.scrub(v) for k, v in changes.items() if isinstance(v, str)}
    await ctx.store.update_exchange(
        record.id, outcome=outcome, finished_at=time.time(), **{**changes, **text}
    )
    ctx.log.info(
        "exchange done",
        exchange=record.id,
        kind=record.kind,
        command=record.command,
        outcome=outcome,
        author=record.author,
        cost_usd=round(float(changes.get("cost_usd", 0.0)), 6),
    )


async def say(ctx: Context, text: str) -> CommentRef | None:
    """Reply in the thread of the event's comment (on the conversation for a conversation
    comment); None when comments are not posted."""
    if not ctx.settings.post_comments:
        ctx.log.info("dry run: reply not posted (ARBITER_POST_COMMENTS=false)")
        return None
    return await ctx.platform.reply(comment_ref(ctx.event), as_reply(text))


async def react(ctx: Context, reaction: Reaction) -> None:
    """React to the event's comment. A reaction is a courtesy: failing one is logged, not fatal."""
    if not ctx.settings.post_comments:
        return
    try:
        await ctx.platform.react(comment_ref(ctx.event), reaction)
    except PlatformError as exc:
        ctx.log.warning("could not react to the comment", reaction=reaction, error=str(exc))


def reply_id(ref: CommentRef | None) -> str | None:
    return None if ref is None else str(ref.id)


def requester(event: Event) -> Sender:
    """Who is asking: whoever wrote the comment, or edited the mention into it."""
    if event.sender is not None:
        return event.sender
    assert event.comment is not None
    return event.comment.author


def exchange_start(event: Event, request: Request) -> ExchangeStart:
    comment = event.comment
    if comment is None or event.repo is None or event.number is None:
        raise ValueError(f"{event.label} is not a comment on a pull request")
    return ExchangeStart(
        platform=event.platform,
        delivery_id=event.delivery_id,
        repo=event.repo,
        number=event.number,
        comment_id=str(comment.id),
        author=requester(event).login,
        kind="command" if isinstance(request, Command) else "question",
        command=request.name if isinstance(request, Command) else None,
        question=comment.body,
        thread=comment.thread,
        path=comment.path,
        line=comment.line,
    )


def as_reply(text: str) -> str:
    """Arbiter's reply as posted: the last pass over it (no mention pings, bot/core/markdown.py),
    and the marker that keeps it from being taken as a request."""
    return f"{defused(text.rstrip())}\n\n{REPLY_MARKER}"
