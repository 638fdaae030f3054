"""A review job: which pull request, why, and how it is queued (one per pull request at a time).

`schedule_review(ctx)` queues a review of the event's pull request; a newer one replaces a
review still waiting under the same key, so three quick pushes cost at most one running and
one queued review. `cancel_review(ctx, reason)` withdraws a queued one.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from bot.store import Enqueued, NewJob, Store
from platforms.base import PlatformName

if TYPE_CHECKING:
    from bot.context import Context

REVIEW_JOB = "review"


@dataclass(frozen=True)
class ReviewRequest:
    platform: PlatformName
    repo: str
    number: int
    installation_id: int | None = None
    delivery_id: str | None = None
    reason: str = "opened"  # the event or command that asked for it
    requested_by: str | None = None  # a person's command, rather than an automatic review
    fresh: bool = False  # ignore earlier findings (a "full review" command)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ReviewRequest:
        return cls(**json.loads(text))


def review_job_key(platform: str, repo: str, number: int) -> str:
    """One queued review per pull request: a newer push replaces a queued one with this key."""
    return f"review:{platform}:{repo}#{number}"


async def schedule_review(
    ctx: Context,
    *,
    full: bool = False,
    reason: str = "pull_request",
    requested_by: str | None = None,
    fresh: bool = False,
) -> Enqueued:
    """Queue a review of the event's pull request, replacing one queued but not started.

    `full` reviews everything rather than what changed since the last review; `fresh` also
    ignores earlier findings; `requested_by` names the person who asked (their request
    overrides the automatic-review rules and a pause).
    """
    e = ctx.event
    if e.repo is None or e.number is None:
        raise ValueError(f"{e.label} is not about a pull request")
    request = ReviewRequest(
        platform=e.platform,
        repo=e.repo,
        number=e.number,
        installation_id=e.installation_id,
        delivery_id=e.delivery_id,
        reason=reason,
        requested_by=requested_by,
        fresh=fresh,
    )
    queued = await queue_review(
        ctx.store, request, max_attempts=ctx.settings.worker_retry_attempts + 1, full=full
    )
    ctx.notify()
    return queued


async def queue_review(
    store: Store, request: ReviewRequest, *, max_attempts: int, full: bool = False
) -> Enqueued:
    """Queue the review job of `request` under its pull request's key (a newer one replaces a
    queued one), and remember the repository for the reconcile sweep (bot/recovery/). `full`
    marks the pull request for a full review first (kept on the pull request, not the job: a
    later push may replace the queued job)."""
    if full:
        await store.update_pr_state(
            request.platform, request.repo, request.number, full_requested=True
        )
    # Both at once: the store writes them together (on SQLite, in one transaction).
    noted, queued = await asyncio.gather(
        store.note_repositories(
            request.platform, [request.repo], installation_id=request.installation_id
        ),
        store.enqueue(
            NewJob(
                kind=REVIEW_JOB,
                payload=request.to_json(),
                key=review_job_key(request.platform, request.repo, request.number),
                max_attempts=max_attempts,
                delivery_id=request.delivery_id,
            )
        ),
        return_exceptions=True,
    )
    for outcome in (noted, queued):
        if isinstance(outcome, BaseException):
            raise outcome
    assert not isinstance(queued, BaseException)
    return queued


async def cancel_review(ctx: Context, reason: str) -> list[int]:
    """Cancel the event's pull request's queued (not yet running) review."""
    e = ctx.event
    if e.repo is None or e.number is None:
        return []
    return await ctx.store.cancel_queued(review_job_key(e.platform, e.repo, e.number), reason)
