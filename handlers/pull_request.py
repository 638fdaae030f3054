"""Pull requests: schedule a review when one opens or moves, cancel it when it closes.

The review itself runs as its own job (one per pull request at a time, the newest head
winning), where the repository's configuration decides whether and how to review.
"""

from __future__ import annotations

from bot.context import Context
from bot.review import cancel_review, schedule_review
from bot.router import Router

router = Router()

# These review everything; a push (synchronize) reviews what changed since the last review.
FULL_REVIEW = frozenset({"opened", "reopened", "ready_for_review"})


@router.register("pull_request", action="opened")
@router.register("pull_request", action="reopened")
@router.register("pull_request", action="ready_for_review")
@router.register("pull_request", action="synchronize")
async def review_wanted(ctx: Context) -> None:
    sender = ctx.event.sender
    if sender is not None and sender.is_bot:
        ctx.log.info("no review: the event comes from a bot", sender=sender.login)
        return
    full = ctx.event.action in FULL_REVIEW
    queued = await schedule_review(ctx, full=full, reason=ctx.event.action or "pull_request")
    ctx.log.info(
        "review queued",
        review_job=queued.job_id,
        full=full,
        replaced=list(queued.replaced),
    )


UNWANTED = {"closed": "the pull request was closed", "converted_to_draft": "it became a draft"}


@router.register("pull_request", action="converted_to_draft")
@router.register("pull_request", action="closed")
async def review_unwanted(ctx: Context) -> None:
    cancelled = await cancel_review(ctx, UNWANTED.get(ctx.event.action or "", "not wanted"))
    if cancelled:
        ctx.log.info("queued review cancelled", jobs=cancelled)
