"""What Arbiter posts on a pull request passes through here: a Platform whose writes are
redacted (bot/redaction.py) before they reach GitHub or GitLab.

The runtime wraps every Platform it hands to a Context, so a review, its summary, a commit
status, an answer or a command's reply cannot carry a secret, whether it came from a
provider's error, the model, or the pull request itself. Reads pass through untouched. A
Platform call added later that carries text must be wrapped here too (tests/test_redaction.py
checks the protocol).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bot.redaction import Redactor
from platforms.base import (
    CommentRef,
    InlineComment,
    Platform,
    PostedReview,
    PullRequest,
    StatusState,
)


class RedactedPlatform:
    """`inner`, with every text it is asked to post scrubbed by `redactor`."""

    def __init__(self, inner: Platform, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor
        self.name = inner.name
        self.repo = inner.repo

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # reads, and what carries no text

    async def post_review(
        self,
        pr: PullRequest,
        summary: str,
        comments: Sequence[InlineComment],
        *,
        key: str | None = None,
        fresh: bool = False,
    ) -> PostedReview:
        scrub = self.redactor.scrub
        clean = [replace(c, body=scrub(c.body)) for c in comments]
        return await self.inner.post_review(pr, scrub(summary), clean, key=key, fresh=fresh)

    async def upsert_comment(self, pr: PullRequest, key: str, body: str) -> CommentRef:
        return await self.inner.upsert_comment(pr, key, self.redactor.scrub(body))

    async def reply(self, comment: CommentRef, body: str) -> CommentRef:
        return await self.inner.reply(comment, self.redactor.scrub(body))

    async def set_status(
        self, pr: PullRequest, state: StatusState, description: str, url: str | None = None
    ) -> None:
        await self.inner.set_status(pr, state, self.redactor.scrub(description), url)
