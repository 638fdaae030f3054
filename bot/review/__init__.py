"""The pull-request review use case: a review job, from the queue to what the pull request shows.

Handlers call `schedule_review(ctx)` / `cancel_review(ctx, reason)` (request.py); the worker
runs `review_pull_request(ctx, request, attempt)` (pull_request.py), which decides with the
repository's configuration (policy.py), reviews with the pure core (bot/core/), posts through
the Platform, reports configuration problems (config_problems.py) and records everything.

Queueing a review needs only request.py; the review itself (pull_request.py, and with it the
review core, its Markdown parser, the repository configuration) is imported when first named,
by the job that runs one, so a process that only takes webhooks does not hold it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.review.request import (
    REVIEW_JOB,
    ReviewRequest,
    cancel_review,
    queue_review,
    review_job_key,
    schedule_review,
)

if TYPE_CHECKING:
    from bot.review.pull_request import (
        Attempt,
        ReviewFailed,
        attempt_deadline,
        review_pull_request,
    )

__all__ = [
    "REVIEW_JOB",
    "Attempt",
    "ReviewFailed",
    "ReviewRequest",
    "attempt_deadline",
    "cancel_review",
    "queue_review",
    "review_job_key",
    "review_pull_request",
    "schedule_review",
]

_REVIEW = frozenset({"Attempt", "ReviewFailed", "attempt_deadline", "review_pull_request"})


def __getattr__(name: str) -> Any:
    if name in _REVIEW:
        from bot.review import pull_request

        return getattr(pull_request, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
