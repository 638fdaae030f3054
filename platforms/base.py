"""The Platform protocol and its normalized data types.

A `Platform` is bound to one repository (and, on GitHub, one installation) for one event. The
reviewer core and the handlers see only this protocol; `platforms/github.py` and
`platforms/gitlab.py` implement it, and they are the only modules that talk to those APIs.

What both platforms and the core share is written here once: the platform names, the user
agent, and the hidden markers by which Arbiter finds its own comments again.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot import __version__

PlatformName = Literal["github", "gitlab"]
USER_AGENT = f"Arbiter/{__version__} (+https://github.com/arbiter-review/arbiter)"

# --- Hidden markers: HTML comments in what Arbiter writes, invisible once rendered --------------

MARKER_PREFIX = "<!-- arbiter:"  # every comment Arbiter writes carries one (findings, summary…)
REPLY_MARKER = "<!-- arbiter:reply -->"


def comment_marker(key: str) -> str:
    """The hidden HTML comment that finds a comment again; "--" would end it early."""
    safe = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._:/-]+", "-", key))
    return f"{MARKER_PREFIX}{safe} -->"


def review_marker(key: str) -> str:
    """The hidden mark that finds a review again by its key."""
    return comment_marker(f"review:{key}")


def reply_marker() -> str:
    """The hidden mark of one reply, its own: a reply whose answer was lost is found by it."""
    return comment_marker(f"reply:{secrets.token_hex(8)}")


def finding_marker(fingerprint: str) -> str:
    """The hidden mark on a finding's comment: its fingerprint, which survives line shifts."""
    return f"{MARKER_PREFIX}finding {fingerprint} -->"


def markers_in(body: str) -> tuple[str, ...]:
    """The markers of a comment, where Arbiter writes them and nowhere else: its first line
    (`upsert_comment`), and the marker lines that end it (reviews, findings, replies). A
    marker elsewhere (a file name in a list, a quote, a code block) is text, not a marker."""
    lines = body.replace("\r\n", "\n").split("\n")
    found: list[str] = []
    if lines and _is_marker(lines[0]):
        found.append(lines[0].rstrip())
    for line in reversed(lines[1:]):
        if _is_marker(line):
            found.append(line.rstrip())
        elif line.strip():
            break
    return tuple(found)


def has_marker(body: str, marker: str) -> bool:
    """Whether `body` carries `marker` where Arbiter writes it (see `markers_in`)."""
    return marker in markers_in(body)


def _is_marker(line: str) -> bool:
    text = line.rstrip()  # Arbiter writes markers at the start of a line: no indent allowed
    return text.startswith(MARKER_PREFIX) and text.endswith("-->") and "\n" not in text


# --- The protocol's data types --------------------------------------------------------------------

Permission = Literal["admin", "write", "read", "none"]
StatusState = Literal["pending", "success", "failure", "error"]
Reaction = Literal["+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"]
FileStatus = Literal["added", "modified", "removed", "renamed", "copied", "changed", "unchanged"]
Side = Literal["RIGHT", "LEFT"]


class PlatformError(Exception):
    """The platform refused or failed a call. `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PlatformNotConfigured(PlatformError):
    """This process has no credentials for the event's platform; the message says what to set."""


class RateLimited(PlatformError):
    """The platform's rate limit would make us wait longer than we are willing to."""

    def __init__(self, message: str, *, retry_after: float, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class WriteUncertain(PlatformError):
    """A write whose answer was lost (a 5xx, a timeout, a connection dropped after it was
    sent): the platform may have carried it out, so it is looked for before it is sent again.
    Callers see it only once every try is spent. `retry_after`: the wait the answer asked for."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: str | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class SinceNotAncestor(PlatformError):
    """An incremental diff was asked from a commit no longer in the history (a force-push)."""


@dataclass(frozen=True)
class PullRequest:
    repo: str
    number: int
    title: str
    body: str | None
    author: str
    author_is_bot: bool
    base_sha: str
    head_sha: str
    base_ref: str
    head_ref: str
    draft: bool
    state: Literal["open", "closed", "merged"]
    labels: tuple[str, ...]
    url: str
    default_branch: str | None = None
    start_sha: str | None = None  # GitLab's diff_refs.start_sha; GitHub: same as base_sha


@dataclass(frozen=True)
class FileChange:
    path: str
    status: FileStatus
    patch: str | None  # the unified-diff hunks; None when binary or too large to show
    previous_path: str | None = None
    additions: int = 0
    deletions: int = 0
    binary: bool = False
    too_large: bool = False


@dataclass(frozen=True)
class Changes:
    base_sha: str
    head_sha: str
    files: tuple[FileChange, ...]
    incremental: bool = False
    truncated: bool = False  # the platform's own limit on files was reached


@dataclass(frozen=True)
class InlineComment:
    path: str
    line: int
    body: str
    side: Side = "RIGHT"
    start_line: int | None = None
    previous_path: str | None = None  # for renamed files (GitLab positions need both paths)


@dataclass(frozen=True)
class CommentRef:
    """Where a comment lives, enough to reply to it or react to it."""

    id: int | str
    kind: Literal["conversation", "inline", "review"]
    number: int | None = None
    thread: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class PostedReview:
    id: int | str | None
    posted: tuple[InlineComment, ...]
    dropped: tuple[tuple[InlineComment, str], ...] = ()  # each with the platform's reason
    url: str | None = None


class Platform(Protocol):
    name: str
    repo: str

    async def pull_request(self, number: int) -> PullRequest: ...

    async def changes(self, pr: PullRequest, since: str | None = None) -> Changes:
        """All changed files, or with `since` only what changed from that commit to the head.

        Raises SinceNotAncestor when `since` is no longer in the head's history.
        """

    async def read_file(self, path: str, ref: str) -> str | None:
        """A file's text at `ref`, or None when it does not exist there."""

    async def default_branch(self) -> str: ...

    async def branch_head(self, branch: str) -> str:
        """The sha of the commit at the tip of `branch`; PlatformError (404) when there is none."""

    async def post_review(
        self,
        pr: PullRequest,
        summary: str,
        comments: Sequence[InlineComment],
        *,
        key: str | None = None,
        fresh: bool = False,
    ) -> PostedReview:
        """One review carrying every inline comment; comments the platform refuses are dropped
        and reported, the others still posted.

        With a `key`, posting is idempotent: a review of ours already carrying that key is
        returned instead of posting another (a retried job must not post twice). `fresh` says
        the key is new (no earlier attempt can have posted under it), so a platform may skip
        looking for it first; a lost answer to this post is still looked for.
        """

    async def upsert_comment(self, pr: PullRequest, key: str, body: str) -> CommentRef:
        """The PR comment marked with `key`, edited in place, or created when there is none."""

    async def find_comment(self, pr: PullRequest, key: str) -> CommentRef | None:
        """Our PR comment marked with `key` (as `upsert_comment` writes it), or None."""

    async def reply(self, comment: CommentRef, body: str) -> CommentRef:
        """A reply in the comment's thread. It carries a hidden mark of its own (`reply_marker`),
        by which a reply whose answer was lost is found instead of posted twice."""

    async def set_status(
        self, pr: PullRequest, state: StatusState, description: str, url: str | None = None
    ) -> None: ...

    async def permission(self, user: str) -> Permission: ...

    async def react(self, comment: CommentRef, reaction: Reaction) -> None: ...


# --- Recovery: the deliveries a platform kept, and open pull requests (bot/recovery/) ------------


@dataclass(frozen=True)
class HookDelivery:
    """One attempt to deliver a webhook, as the platform recorded it.

    `id` is the attempt (GitHub's delivery id, GitLab's hook event id); `guid` the delivery it
    carried, shared by its redeliveries: what Arbiter stores (GitHub's X-GitHub-Delivery,
    GitLab's Idempotency-Key). GitLab's events carry the body (`payload`) but no time.
    """

    id: int
    guid: str
    event: str
    action: str | None
    ok: bool  # the receiver answered 2xx
    status: str  # the platform's words: "OK", "Invalid HTTP Response: 502", "internal error"
    status_code: int | None
    delivered_at: float | None = None
    redelivery: bool = False
    payload: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Deliveries:
    """Delivery attempts, newest first. `complete`: everything back to the boundary asked for
    (or as far back as the platform keeps) is here; False when the limit cut the list."""

    items: tuple[HookDelivery, ...]
    complete: bool


@dataclass(frozen=True)
class OpenPullRequest:
    number: int
    head_sha: str
    updated_at: float  # UNIX seconds, the platform's clock
    draft: bool = False


@dataclass(frozen=True)
class OpenPullRequests:
    """Open pull/merge requests, most recently updated first; `complete` as for Deliveries."""

    items: tuple[OpenPullRequest, ...]
    complete: bool


class ListsOpenPullRequests(Protocol):
    """A Platform that can list its repository's open pull requests (the reconcile sweep)."""

    repo: str

    async def open_pull_requests(
        self, updated_since: float | None, *, limit: int
    ) -> OpenPullRequests:
        """Open pull requests updated at or after `updated_since` (None: all), at most `limit`."""
