"""One exchange with a person on a pull request: recorded from start to end, and the two things
Arbiter does on the platform in it, reply in the comment's thread and react to the comment.

A retried job finds its exchange again by delivery: one already finished is not handled twice.
With ARBITER_POST_COMMENTS=false nothing is posted (the exchange is still recorded).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bot.events import comment_ref
from bot.reviewer.conversation import as_reply
from bot.store.base import ExchangeOutcome, ExchangeRecord, ExchangeStart
from platforms.base import CommentRef, PlatformError, Reaction

if TYPE_CHECKING:
    from bot.context import Context


async def begin(ctx: Context, start: ExchangeStart) -> ExchangeRecord | None:
    """The exchange for this delivery, or None when an earlier attempt already finished it."""
    record = await ctx.store.start_exchange(start)
    if record.outcome != "pending":
        ctx.log.info("exchange already handled", exchange=record.id, outcome=record.outcome)
        return None
    return record


async def finish(
    ctx: Context, record: ExchangeRecord, outcome: ExchangeOutcome, **changes: Any
) -> None:
    await ctx.store.update_exchange(record.id, outcome=outcome, finished_at=time.time(), **changes)
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
