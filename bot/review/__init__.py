"""The pull-request review use case: a review job, from the queue to what the pull request shows.

Handlers call `schedule_review(ctx)` / `cancel_review(ctx, reason)` (request.py); the worker
runs `review_pull_request(ctx, request, attempt)` (pull_request.py), which decides with the
repository's configuration (policy.py), reviews with the pure core (bot/core/), posts through
the Platform, reports configuration problems (config_problems.py) and records everything.
"""

from bot.review.pull_request import Attempt, ReviewFailed, attempt_deadline, review_pull_request
from bot.review.request import (
    REVIEW_JOB,
    ReviewRequest,
    cancel_review,
    queue_review,
    review_job_key,
    schedule_review,
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
