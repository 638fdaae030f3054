"""The GitLab platform: the Platform protocol over GitLab's REST API v4, through python-gitlab.

`GitLab` is built once per process from Settings. It holds the token, the thread pool and the
connection pool; `GitLab.for_repo(repo, delivery_id=...)` hands out a `GitLabPlatform` bound to
one project (its path, "group/sub/project", or its numeric id) for one event.

python-gitlab is synchronous, so every Platform call is one hop to a bounded thread pool (sized
by ARBITER_WORKER_MAX_JOBS: a job makes one platform call at a time): the whole call, however
many requests it makes, runs there, and the event loop never blocks. Requests go through
`RetryingAdapter` (platforms/gitlab_transport.py): ARBITER_INTEGRATION_TIMEOUT,
ARBITER_INTEGRATION_MAX_RETRIES, 429s waited out up to ARBITER_GITLAB_RATE_LIMIT_MAX_WAIT, and
the webhook delivery id in an `X-Arbiter-Delivery` header.

A review on GitLab is a set of notes: one discussion per inline comment and one note with the
review's body. They are written as draft notes and published in bulk, so they appear at once
(or, on a GitLab without the draft notes API, posted one by one, the body last). Every note
carries a hidden marker, which is what makes `post_review(..., key=...)` idempotent; see
`GitLabPlatform.post_review`.

The markers also make each write happen once when GitLab carried it out but its answer was
lost (a 502, a timeout, a dropped connection): the note, discussion or draft is looked for
before it is sent again (`GitLabPlatform._write`). GitLab's REST API honours no
`Idempotency-Key` on these writes (it only sends one on its webhooks), so none is sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

from bot.events import is_gitlab_bot
from bot.logs import get_logger
from config.settings import Settings
from platforms.base import (
    MARKER_PREFIX,
    USER_AGENT,
    Changes,
    CommentRef,
    Deliveries,
    FileChange,
    HookDelivery,
    InlineComment,
    OpenPullRequest,
    OpenPullRequests,
    Permission,
    PlatformError,
    PlatformNotConfigured,
    PostedReview,
    PullRequest,
    Reaction,
    SinceNotAncestor,
    StatusState,
    comment_marker,
    has_marker,
    reply_marker,
    review_marker,
)
from platforms.gitlab_diff import (
    MAX_DIFF_FILES,
    DiffRefs,
    file_change_from,
    find_change,
    place,
)
from platforms.gitlab_hooks import FAILED as FAILED_EVENTS
from platforms.gitlab_hooks import event_from, open_merge_request_from
from platforms.retry import (
    DELIVERY_HEADER,
    BlockingSleep,
    Clock,
    LostAnswers,
    RequestPolicy,
    once_blocking,
)

if TYPE_CHECKING:
    import gitlab
    from gitlab.exceptions import GitlabError
    from gitlab.v4.objects import Project, ProjectMergeRequest

    from platforms.gitlab_transport import Sessions

__all__ = ["EMOJI", "STATES", "GitLab", "GitLabPlatform", "permission_from", "pull_request_from"]

T = TypeVar("T")

STATUS_DESCRIPTION_LIMIT = 255
REVIEW_MARK_PREFIX = f"{MARKER_PREFIX}review:"  # every note of every review of ours carries it

# Arbiter's commit states in GitLab's words: a review under way is "running".
STATES: dict[StatusState, str] = {
    "pending": "running",
    "success": "success",
    "failure": "failed",
    "error": "failed",
}
# GitHub's reaction names (the protocol's) as GitLab award emoji.
EMOJI: dict[Reaction, str] = {
    "+1": "thumbsup",
    "-1": "thumbsdown",
    "laugh": "laughing",
    "confused": "confused",
    "heart": "heart",
    "hooray": "tada",
    "rocket": "rocket",
    "eyes": "eyes",
}
# GitLab's access levels: Guest 10, Planner 15, Reporter 20, Developer 30, Maintainer 40, Owner 50.
DEVELOPER, MAINTAINER = 30, 40


class GitLab:
    """The GitLab API client of this process: token, thread pool, connection pool, policy.

    `sleep` (blocking: it runs in the pool's threads) and `clock` are injectable so tests need
    not wait; `executor` replaces the thread pool.
    """

    name = "gitlab"

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: BlockingSleep = time.sleep,
        clock: Clock = time.time,
        executor: Executor | None = None,
    ) -> None:
        if settings.gitlab_token is None:
            raise PlatformNotConfigured("gitlab is not configured: set ARBITER_GITLAB_TOKEN")
        self.settings = settings
        self.base_url = settings.gitlab_base_url
        self._token = settings.gitlab_token.get_secret_value()
        threads = self._threads = settings.worker_max_jobs
        self.policy = RequestPolicy.from_settings(settings, "gitlab", sleep=sleep, clock=clock)
        self._log = get_logger(component="gitlab")
        self._sessions: Sessions | None = None  # made by the first call: _session_pool()
        self._sessions_lock = threading.Lock()
        self._own_pool = executor is None
        self._pool: Executor = executor or ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="arbiter-gitlab"
        )
        self._me: dict[str, Any] | None = None
        self._me_lock = threading.Lock()

    def __repr__(self) -> str:  # the token never reaches a log line or a traceback
        return f"GitLab(base_url={self.base_url!r})"

    def for_repo(self, repo: str | int, *, delivery_id: str | None = None) -> GitLabPlatform:
        """A Platform bound to one project: its path ("group/project") or its numeric id."""
        return GitLabPlatform(self, str(repo), delivery_id=delivery_id)

    def close(self) -> None:
        if self._own_pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._sessions is not None:
            self._sessions.close()

    async def run(
        self, action: str, work: Callable[[gitlab.Gitlab], T], delivery_id: str | None
    ) -> T:
        """`work` in the thread pool with a python-gitlab client: the one hop of a call.
        GitLab's refusals come back as PlatformError naming `action`."""
        context = contextvars.copy_context()  # structlog's bound fields travel along
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, context.run, self._in_thread, action, work, delivery_id
        )

    def _in_thread(
        self, action: str, work: Callable[[gitlab.Gitlab], T], delivery_id: str | None
    ) -> T:
        try:
            return work(self.client(delivery_id))
        except gitlab_error() as exc:
            raise platform_error(action, exc) from exc

    def _session_pool(self) -> Sessions:
        """The sessions, made with the first call: python-gitlab and requests (6 MiB resident)
        are imported then, in a pool thread, and not by a process that never calls GitLab."""
        with self._sessions_lock:
            if self._sessions is None:
                from platforms.gitlab_transport import RetryingAdapter, Sessions

                adapter = RetryingAdapter(self.policy, pool_size=self._threads, log=self._log)
                self._sessions = Sessions(adapter)
            return self._sessions

    def client(self, delivery_id: str | None = None) -> gitlab.Gitlab:
        """A python-gitlab client on this thread's session (cheap: no request is made)."""
        import gitlab

        client = gitlab.Gitlab(
            self.base_url,
            private_token=self._token,
            timeout=self.settings.integration_timeout,
            user_agent=USER_AGENT,
            retry_transient_errors=False,  # RetryingAdapter retries, with a bound on waits
            session=self._session_pool().current(),
        )
        if delivery_id:
            client.headers[DELIVERY_HEADER] = delivery_id
        return client

    def me(self, client: gitlab.Gitlab) -> dict[str, Any]:
        """The token's user (GET /user), asked once per process: whose notes are ours."""
        with self._me_lock:
            if self._me is None:
                data = client.http_get("/user")
                if not isinstance(data, dict):
                    raise PlatformError("GitLab answered GET /user with something other than JSON")
                self._me = data
            return self._me

    # --- Webhook events (bot/recovery/; GitLab 17.3 lists them, 17.4 resends) ---------------

    async def hook_events(
        self, project: str, hook_id: int, *, after_id: int | None = None, limit: int = 1000
    ) -> Deliveries:
        """The failed events of a project webhook (client and server failures, "internal
        error" included), newest first, down to `after_id`, at most `limit`. A GitLab before
        17.3 answers 404, as it does for a webhook that does not exist."""
        path = f"/projects/{quote(project, safe='')}/hooks/{hook_id}/events"

        def work(client: gitlab.Gitlab) -> Deliveries:
            found: list[HookDelivery] = []
            pages = client.http_list(
                path,
                iterator=True,
                per_page=min(100, max(limit, 1)),
                query_data={"status[]": list(FAILED_EVENTS)},
            )
            for raw in _dicts(pages):
                event = event_from(raw)
                if after_id is not None and event.id <= after_id:
                    break
                if len(found) >= limit:
                    return Deliveries(tuple(found), complete=False)
                found.append(event)
            return Deliveries(tuple(found), complete=True)

        return await self.run(f"list the events of webhook {hook_id} of {project}", work, None)

    async def resend_hook_event(self, project: str, hook_id: int, event_id: int) -> int | None:
        """Have GitLab send a webhook event again (it does so at once); the status code the
        receiver answered, when GitLab says."""
        path = f"/projects/{quote(project, safe='')}/hooks/{hook_id}/events/{event_id}/resend"

        def work(client: gitlab.Gitlab) -> int | None:
            answer = client.http_post(path)
            status = answer.get("response_status") if isinstance(answer, dict) else None
            known = isinstance(status, int | str) and str(status).isdigit()
            return int(str(status)) if known else None

        return await self.run(
            f"resend event {event_id} of webhook {hook_id} of {project}", work, None
        )


def gitlab_error() -> type[GitlabError]:
    """python-gitlab's base error, for `except`: it can only be raised once a call imported
    python-gitlab, so naming it never imports python-gitlab first."""
    from gitlab.exceptions import GitlabError

    return GitlabError


def platform_error(action: str, exc: GitlabError) -> PlatformError:
    status = exc.response_code
    detail = str(exc.error_message or "").strip() or "no message"
    # GitLab's messages mostly start with the status already ("404 Project Not Found").
    code = f"{status} " if status and not detail.startswith(str(status)) else ""
    return PlatformError(f"GitLab refused to {action}: {code}{detail}", status=status)


def _status(exc: GitlabError) -> int | None:
    return exc.response_code


# --- One project, one event ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Draft:
    id: int
    note: str


class GitLabPlatform:
    """The Platform protocol for one GitLab project, for one event."""

    name = "gitlab"

    def __init__(self, gitlab_: GitLab, repo: str, *, delivery_id: str | None = None) -> None:
        self.repo = repo
        self.delivery_id = delivery_id
        self._gitlab = gitlab_
        self._id = quote(repo, safe="")  # a path is URL-encoded; a numeric id stays as it is
        self._log = get_logger(component="gitlab", repo=repo, delivery_id=delivery_id)

    async def _run(self, action: str, work: Callable[[gitlab.Gitlab], T]) -> T:
        return await self._gitlab.run(action, work, self.delivery_id)

    def _write(self, action: str, send: Callable[[], T], find: Callable[[], T | None] | None) -> T:
        """A write that creates something, in the pool's thread: when its answer is lost,
        `find` looks on GitLab for what it made before it is sent again. Without `find` the
        write is idempotent in effect, and is simply sent again."""
        policy = self._gitlab.policy
        return once_blocking(LostAnswers(policy, action, self._log), send, find, policy.sleep)

    def _note_url(self, number: int, note_id: Any) -> str | None:
        if self.repo.isdigit():
            return None  # a project known by its id only: its web address is unknown here
        base = f"{self._gitlab.base_url}/{self.repo}/-/merge_requests/{number}"
        return f"{base}#note_{note_id}"

    def _project(self, client: gitlab.Gitlab) -> Project:
        return client.projects.get(self.repo, lazy=True)

    def _mr(self, client: gitlab.Gitlab, number: int) -> ProjectMergeRequest:
        return self._project(client).mergerequests.get(number, lazy=True)

    # --- Reading ------------------------------------------------------------------------------

    async def pull_request(self, number: int) -> PullRequest:
        def work(client: gitlab.Gitlab) -> PullRequest:
            mr = self._project(client).mergerequests.get(number)
            project = client.projects.get(self.repo)  # its default branch, saving a call later
            return pull_request_from(self.repo, mr.attributes, project.attributes)

        return await self._run(f"read merge request !{number} of {self.repo}", work)

    async def changes(self, pr: PullRequest, since: str | None = None) -> Changes:
        if since is not None:
            return await self._changes_since(pr, since)

        def work(client: gitlab.Gitlab) -> Changes:
            files = self._diff_files(client, pr.number)
            return Changes(
                base_sha=pr.base_sha,
                head_sha=pr.head_sha,
                files=tuple(files),
                truncated=len(files) >= MAX_DIFF_FILES,
            )

        return await self._run(f"list the changes of !{pr.number}", work)

    def _diff_files(self, client: gitlab.Gitlab, number: int) -> list[FileChange]:
        """The merge request's latest diff, every page of it."""
        path = f"/projects/{self._id}/merge_requests/{number}/diffs"
        try:
            items = client.http_list(path, iterator=True, per_page=100)
            return [file_change_from(item) for item in _dicts(items)]
        except gitlab_error() as exc:
            if _status(exc) != 404:
                raise
        # GitLab before 15.7 has no /diffs: the older /changes carries the same file entries.
        data = self._mr(client, number).changes()
        changes = data.get("changes") if isinstance(data, dict) else None
        return [file_change_from(item) for item in _dicts(changes or [])]

    async def _changes_since(self, pr: PullRequest, since: str) -> Changes:
        def work(client: gitlab.Gitlab) -> Changes:
            project = self._project(client)
            try:
                base = project.repository_merge_base([since, pr.head_sha])
            except gitlab_error() as exc:
                if _status(exc) in (400, 404):  # GitLab no longer has the commit
                    raise _force_pushed(pr, since, _status(exc)) from None
                raise
            if not isinstance(base, dict) or base.get("id") != since:
                raise _force_pushed(pr, since, None)
            data = project.repository_compare(since, pr.head_sha)
            diffs = data.get("diffs") if isinstance(data, dict) else None
            files = [file_change_from(item) for item in _dicts(diffs or [])]
            truncated = bool(isinstance(data, dict) and data.get("compare_timeout"))
            return Changes(
                base_sha=since,
                head_sha=pr.head_sha,
                files=tuple(files),
                incremental=True,
                truncated=truncated or len(files) >= MAX_DIFF_FILES,
            )

        return await self._run(f"compare {since[:12]} with !{pr.number}'s head", work)

    async def read_file(self, path: str, ref: str) -> str | None:
        def work(client: gitlab.Gitlab) -> str | None:
            try:
                raw = self._project(client).files.raw(file_path=path.strip("/"), ref=ref)
            except gitlab_error() as exc:
                if _status(exc) == 404:
                    return None
                raise
            return bytes(raw).decode("utf-8", "replace")

        return await self._run(f"read {path} at {ref}", work)

    async def default_branch(self) -> str:
        def work(client: gitlab.Gitlab) -> str:
            return str(client.projects.get(self.repo).default_branch)

        return await self._run(f"read the project {self.repo}", work)

    async def branch_head(self, branch: str) -> str:
        def work(client: gitlab.Gitlab) -> str:
            found = self._project(client).branches.get(branch)
            return str(found.commit["id"])

        return await self._run(f"read the head of {branch} in {self.repo}", work)

    async def permission(self, user: str) -> Permission:
        def work(client: gitlab.Gitlab) -> Permission:
            users = client.http_list("/users", query_data={"username": user}, get_all=False)
            found = next(iter(_dicts(users)), None)
            if found is None:
                return "none"  # no such user, or not visible to us: no access
            try:
                member = self._project(client).members_all.get(found["id"])
            except gitlab_error() as exc:
                if _status(exc) == 404:
                    return "none"  # not a member, directly or through a group
                raise
            return permission_from(member.attributes)

        return await self._run(f"read {user}'s access to {self.repo}", work)

    # --- Writing ------------------------------------------------------------------------------

    async def post_review(
        self,
        pr: PullRequest,
        summary: str,
        comments: Sequence[InlineComment],
        *,
        key: str | None = None,
        fresh: bool = False,
    ) -> PostedReview:
        """Every inline comment as a discussion at its diff position, and the body as a note.

        Comments GitLab would refuse (not on a line of the diff) are dropped with the reason;
        the others still go up. With a `key` it is exactly once, whatever happened before
        (`fresh` or not: the look at what is there also clears drafts a crash left):

        - every note carries a marker: the body the key's, each comment its own (key + content);
        - our body note already there: the review is up; drafts of it a crash left unpublished
          are published, and nothing else is posted;
        - otherwise comments already up are skipped, drafts left from an attempt that never
          published are deleted, the rest is drafted, drafts that a retried request doubled
          are deleted, and all is published at once.
        """

        def work(client: gitlab.Gitlab) -> PostedReview:
            return _ReviewPoster(self, client, pr, key).post(summary, comments)

        return await self._run(f"post a review on !{pr.number}", work)

    async def upsert_comment(self, pr: PullRequest, key: str, body: str) -> CommentRef:
        marker = comment_marker(key)
        text = body if has_marker(body, marker) else f"{marker}\n{body}"

        def work(client: gitlab.Gitlab) -> CommentRef:
            mr = self._mr(client, pr.number)
            existing = self._find_note(client, mr, marker)
            if existing is None:
                made = self._write(
                    f"write the {key} note on !{pr.number}",
                    lambda: mr.notes.create({"body": text}).attributes,
                    lambda: self._find_note(client, mr, marker),
                )
                return _note_ref(made, pr)
            if existing.get("body") == text:
                return _note_ref(existing, pr)  # an unchanged body needs no edit
            mr.notes.update(existing["id"], {"body": text})
            return _note_ref(existing, pr)

        return await self._run(f"write the {key} note on !{pr.number}", work)

    async def find_comment(self, pr: PullRequest, key: str) -> CommentRef | None:
        def work(client: gitlab.Gitlab) -> CommentRef | None:
            found = self._find_note(client, self._mr(client, pr.number), comment_marker(key))
            return None if found is None else _note_ref(found, pr)

        return await self._run(f"list the notes of !{pr.number}", work)

    def _our_notes(
        self, client: gitlab.Gitlab, mr: ProjectMergeRequest, *, newest_first: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Our notes on the merge request, page by page: a marker copied into someone
        else's note is not ours."""
        me = self._gitlab.me(client)["username"]
        order = "desc" if newest_first else "asc"
        for note in mr.notes.list(iterator=True, per_page=100, sort=order, order_by="created_at"):
            data = note.attributes
            if (data.get("author") or {}).get("username") == me and not data.get("system"):
                yield data

    def _find_note(
        self, client: gitlab.Gitlab, mr: ProjectMergeRequest, marker: str
    ) -> dict[str, Any] | None:
        notes = self._our_notes(client, mr, newest_first=True)
        return next((n for n in notes if has_marker(n.get("body") or "", marker)), None)

    async def reply(self, comment: CommentRef, body: str) -> CommentRef:
        """A reply in the note's discussion, with a mark of its own so that a reply whose
        answer was lost is found instead of posted twice."""
        number = comment.number
        if number is None:
            raise PlatformError(f"cannot reply to note {comment.id}: no merge request number")
        marker = reply_marker()
        text = f"{body.rstrip()}\n\n{marker}"
        where = f"discussion {comment.thread}" if comment.thread else f"note {comment.id}"

        def work(client: gitlab.Gitlab) -> CommentRef:
            mr = self._mr(client, number)

            def send() -> dict[str, Any]:
                if comment.thread:
                    # Inside the discussion (a reply to a lone note makes it a thread).
                    discussion = mr.discussions.get(comment.thread, lazy=True)
                    return dict(discussion.notes.create({"body": text}).attributes)
                return dict(mr.notes.create({"body": text}).attributes)

            made = self._write(
                f"reply to {where} on !{number}", send, lambda: self._find_note(client, mr, marker)
            )
            return CommentRef(
                id=int(made["id"]),
                kind="inline" if comment.kind == "inline" else "conversation",
                number=number,
                thread=comment.thread,
                url=self._note_url(number, made["id"]),
            )

        return await self._run(f"reply to {where} on !{number}", work)

    async def set_status(
        self, pr: PullRequest, state: StatusState, description: str, url: str | None = None
    ) -> None:
        payload: dict[str, Any] = {
            "state": STATES[state],
            "name": self._gitlab.settings.status_check_context,
            "description": trim_description(description),
        }
        if url:
            payload["target_url"] = url

        action = f"set the status of {pr.head_sha[:12]}"

        def send(client: gitlab.Gitlab) -> None:
            commit = self._project(client).commits.get(pr.head_sha, lazy=True)
            try:
                commit.statuses.create(payload)
            except gitlab_error() as exc:
                # Setting the state it already has: GitLab refuses the transition, we are done.
                if _status(exc) != 400 or "cannot transition status" not in str(exc).lower():
                    raise

        def work(client: gitlab.Gitlab) -> None:
            # Idempotent in effect: the newest status of a name is the commit's, and the same
            # state twice is refused as no transition (above), so it is simply sent again.
            self._write(action, lambda: send(client), None)

        await self._run(action, work)

    async def react(self, comment: CommentRef, reaction: Reaction) -> None:
        number = comment.number
        if number is None:
            raise PlatformError(f"cannot react to note {comment.id}: no merge request number")

        action = f"react to note {comment.id} on !{number}"

        def send(client: gitlab.Gitlab) -> None:
            note = self._mr(client, number).notes.get(comment.id, lazy=True)
            try:
                note.awardemojis.create({"name": EMOJI[reaction]})
            except gitlab_error() as exc:
                # The same emoji twice: "Name has already been taken"; it is there, as asked.
                if _status(exc) != 404 or "already been taken" not in str(exc):
                    raise

        def work(client: gitlab.Gitlab) -> None:
            # Idempotent in effect: the same emoji twice is refused as taken (above).
            self._write(action, lambda: send(client), None)

        await self._run(action, work)

    # --- Open merge requests (the reconcile sweep, bot/recovery/) -----------------------------

    async def open_pull_requests(
        self, updated_since: float | None, *, limit: int
    ) -> OpenPullRequests:
        """Open merge requests updated at or after `updated_since`, most recently updated
        first, at most `limit` (GitLab filters by `updated_after` itself)."""
        query: dict[str, Any] = {"state": "opened", "order_by": "updated_at", "sort": "desc"}
        if updated_since is not None:
            query["updated_after"] = datetime.fromtimestamp(updated_since, UTC).isoformat()

        def work(client: gitlab.Gitlab) -> OpenPullRequests:
            found: list[OpenPullRequest] = []
            pages = client.http_list(
                f"/projects/{self._id}/merge_requests",
                iterator=True,
                per_page=min(100, max(limit, 1)),
                query_data=query,
            )
            for raw in _dicts(pages):
                if len(found) >= limit:
                    return OpenPullRequests(tuple(found), complete=False)
                found.append(open_merge_request_from(raw))
            return OpenPullRequests(tuple(found), complete=True)

        return await self._run(f"list the open merge requests of {self.repo}", work)


# --- Posting a review ---------------------------------------------------------------------------


class _ReviewPoster:
    """One review's notes, posted in the pool's thread (see GitLabPlatform.post_review)."""

    def __init__(
        self, platform: GitLabPlatform, client: gitlab.Gitlab, pr: PullRequest, key: str | None
    ) -> None:
        self.platform = platform
        self.client = client
        self.pr = pr
        self.key = key
        self.mr = platform._mr(client, pr.number)
        self.marker = review_marker(key) if key is not None else None
        self.log = platform._log

    def tag(self, comment: InlineComment) -> str | None:
        """The marker of one comment of this review: the key and the comment's content."""
        if self.key is None:
            return None
        text = f"{comment.path}\0{comment.line}\0{comment.side}\0{comment.body}"
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return comment_marker(f"review:{self.key}:{digest}")

    def post(self, summary: str, comments: Sequence[InlineComment]) -> PostedReview:
        body = summary if self.marker is None else f"{summary}\n\n{self.marker}".lstrip()
        posted_tags: set[str] = set()
        if self.marker is not None:
            body_note: dict[str, Any] | None = None
            for ours in self.platform._our_notes(self.client, self.mr):
                text = ours.get("body") or ""
                if has_marker(text, self.marker):
                    body_note = ours
                posted_tags.update(t for c in comments if (t := self.tag(c)) and t in text)
            if body_note is not None:
                return self._already_up(body_note, comments, posted_tags)
        todo = [c for c in comments if self.tag(c) not in posted_tags]
        earlier = [c for c in comments if self.tag(c) in posted_tags]
        refs, files = self._version()
        placed: list[tuple[InlineComment, dict[str, Any]]] = []
        dropped: list[tuple[InlineComment, str]] = []
        for comment in todo:
            spot = place(comment, find_change(files, comment), refs)
            if spot.position is None:
                dropped.append((comment, spot.problem or "not placeable"))
            else:
                placed.append((comment, spot.position))
        drafts = self._drafts()
        if drafts is None:
            kept, refused, note = self._one_by_one(placed, body)
        else:
            kept, refused, note = self._as_drafts(drafts, placed, body)
        dropped += refused
        if dropped:
            self.log.warning(
                "review comments dropped",
                number=self.pr.number,
                dropped=[f"{c.path}:{c.line}: {reason}" for c, reason in dropped],
            )
        return PostedReview(
            id=note.get("id") if note else None,
            posted=tuple(earlier + kept),
            dropped=tuple(dropped),
            url=_note_url(self.pr, note.get("id")) if note else None,
        )

    def _already_up(
        self, note: Mapping[str, Any], comments: Sequence[InlineComment], posted_tags: set[str]
    ) -> PostedReview:
        """The review is up: finish a publication a crash cut short, post nothing more."""
        drafts = self._drafts() or []
        tags = {t for c in comments if (t := self.tag(c))}
        left = [d for d in drafts if any(t in d.note for t in tags)]
        if left:
            self.log.info("finishing a review's publication", drafts=len(left))
            others = any(d not in left for d in drafts)
            self._publish([d.id for d in left], others=others)
            posted_tags |= {t for t in tags if any(t in d.note for d in left)}
        return PostedReview(
            id=note.get("id"),
            posted=tuple(c for c in comments if self.tag(c) in posted_tags),
            dropped=tuple(
                (c, "not posted when this review first went up (refused, or not on the diff)")
                for c in comments
                if self.tag(c) not in posted_tags
            ),
            url=_note_url(self.pr, note.get("id")),
        )

    def _version(self) -> tuple[DiffRefs, dict[str, FileChange]]:
        """The diff version to place comments on, its SHAs read fresh, and its files.

        When the merge request moved on since the review began, its comments still belong to
        the head they were written for: that version's SHAs and diff (base to head).
        """
        fresh = self.platform._project(self.client).mergerequests.get(self.pr.number)
        refs_data = fresh.attributes.get("diff_refs")
        if isinstance(refs_data, dict) and refs_data.get("head_sha") == self.pr.head_sha:
            refs = DiffRefs.from_api(refs_data)
            files = self.platform._diff_files(self.client, self.pr.number)
        else:
            refs = DiffRefs(
                self.pr.base_sha, self.pr.start_sha or self.pr.base_sha, self.pr.head_sha
            )
            compare = self.platform._project(self.client).repository_compare(
                refs.base_sha, refs.head_sha, straight=True
            )
            diffs = compare.get("diffs") if isinstance(compare, dict) else None
            files = [file_change_from(item) for item in _dicts(diffs or [])]
        return refs, {f.path: f for f in files}

    def _drafts(self) -> list[_Draft] | None:
        """Our draft notes on the merge request; None when this GitLab has no draft notes."""
        try:
            found = self.mr.draft_notes.list(iterator=True, per_page=100)
            return [_Draft(int(d.id), str(d.attributes.get("note") or "")) for d in found]
        except gitlab_error() as exc:
            if _status(exc) in (404, 405):
                return None
            raise

    def _as_drafts(
        self,
        drafts: list[_Draft],
        placed: list[tuple[InlineComment, dict[str, Any]]],
        body: str,
    ) -> tuple[list[InlineComment], list[tuple[InlineComment, str]], dict[str, Any] | None]:
        for stale in (d for d in drafts if REVIEW_MARK_PREFIX in d.note):
            # Never published: an earlier attempt died before publishing, so start afresh.
            self._delete_draft(stale.id)
        kept, refused = self._each_placed(
            placed, lambda text, position: self._draft({"note": text, "position": position})
        )
        self._draft({"note": body})
        mine, others = self._dedupe(body, kept)
        self._publish(mine, others=others)
        note = self._find_body(body)
        return kept, refused, note

    def _draft(self, data: dict[str, Any]) -> dict[str, Any]:
        """A draft note, made once: one whose answer was lost is looked for among the drafts."""
        identity = self._identity(str(data["note"]))

        def find() -> dict[str, Any] | None:
            drafts = self._drafts() or []
            found = next((d for d in drafts if self._identity(d.note) == identity), None)
            return None if found is None else {"id": found.id, "note": found.note}

        return self.platform._write(
            f"draft a note on !{self.pr.number}",
            lambda: dict(self.mr.draft_notes.create(data).attributes),
            find,
        )

    def _delete_draft(self, draft_id: int) -> None:
        try:
            self.mr.draft_notes.delete(draft_id)
        except gitlab_error() as exc:
            if _status(exc) != 404:  # gone: an earlier try whose answer was lost deleted it
                raise

    def _dedupe(self, body: str, kept: list[InlineComment]) -> tuple[list[int], bool]:
        """Our drafts of this review, each once (a safety net: a draft made twice, by a GitLab
        that showed the first one late, say), and whether the user has other drafts here."""
        wanted = {self._identity(self._text(c)) for c in kept} | {self._identity(body)}
        seen: set[str] = set()
        mine: list[int] = []
        others = False
        for draft in self._drafts() or []:
            identity = self._identity(draft.note)
            if identity not in wanted:
                others = True
            elif identity in seen:
                self._delete_draft(draft.id)
            else:
                seen.add(identity)
                mine.append(draft.id)
        return mine, others

    def _identity(self, text: str) -> str:
        """What names a note of this review: its marker when there is a key, else its text."""
        if self.key is None:
            return text.strip()
        start = text.rfind(REVIEW_MARK_PREFIX)
        return text[start:].strip() if start >= 0 else text.strip()

    def _publish(self, mine: list[int], *, others: bool) -> None:
        """Publish our drafts at once; one by one when the user has other drafts here (bulk
        publishing would make a person's pending comments public)."""
        if not others:
            try:
                # Idempotent in effect: publishing again publishes the drafts left, none.
                action = f"publish the review on !{self.pr.number}"
                self.platform._write(action, self.mr.draft_notes.bulk_publish, None)
                return
            except gitlab_error() as exc:
                if _status(exc) not in (404, 405):
                    raise
        for draft_id in mine:
            try:
                self.mr.draft_notes.get(draft_id, lazy=True).publish()
            except gitlab_error() as exc:
                if _status(exc) != 404:  # gone: published by a try whose answer was lost
                    raise

    def _one_by_one(
        self, placed: list[tuple[InlineComment, dict[str, Any]]], body: str
    ) -> tuple[list[InlineComment], list[tuple[InlineComment, str]], dict[str, Any] | None]:
        """No draft notes on this GitLab: each discussion, then the body (which marks the
        review as complete)."""
        kept, refused = self._each_placed(
            placed,
            lambda text, position: self._note(
                lambda: self.mr.discussions.create({"body": text, "position": position}), text
            ),
        )
        note = self._note(lambda: self.mr.notes.create({"body": body}), body)
        return kept, refused, note

    def _note(self, create: Callable[[], Any], text: str) -> dict[str, Any]:
        """A note or discussion of this review, made once: one whose answer was lost is looked
        for among our notes by its marker (without a key, by its words)."""
        identity = self._identity(text)

        def find() -> dict[str, Any] | None:
            notes = self.platform._our_notes(self.client, self.mr, newest_first=True)
            return next((n for n in notes if self._identity(n.get("body") or "") == identity), None)

        def send() -> dict[str, Any]:
            made = create().attributes
            # A discussion's answer is the discussion: its first note is the note.
            return dict(made["notes"][0]) if "notes" in made else dict(made)

        return self.platform._write(f"post a review note on !{self.pr.number}", send, find)

    def _each_placed(
        self,
        placed: list[tuple[InlineComment, dict[str, Any]]],
        create: Callable[[str, dict[str, Any]], object],
    ) -> tuple[list[InlineComment], list[tuple[InlineComment, str]]]:
        """`create(text, position)` for each placed comment. One GitLab refuses (400: not a
        line it takes) is dropped with GitLab's reason; the others still go up."""
        kept: list[InlineComment] = []
        refused: list[tuple[InlineComment, str]] = []
        for comment, position in placed:
            try:
                create(self._text(comment), position)
            except gitlab_error() as exc:
                if _status(exc) != 400:
                    raise
                refused.append((comment, f"GitLab: {exc.error_message}"))
            else:
                kept.append(comment)
        return kept, refused

    def _text(self, comment: InlineComment) -> str:
        tag = self.tag(comment)
        return comment.body if tag is None else f"{comment.body}\n\n{tag}"

    def _find_body(self, body: str) -> dict[str, Any] | None:
        identity = self._identity(body)
        notes = self.platform._our_notes(self.client, self.mr, newest_first=True)
        return next((n for n in notes if self._identity(n.get("body") or "") == identity), None)


# --- GitLab's shapes to ours ---------------------------------------------------------------------


def pull_request_from(
    repo: str, data: Mapping[str, Any], project: Mapping[str, Any] | None = None
) -> PullRequest:
    """A merge request (GET /projects/:id/merge_requests/:iid) as a PullRequest."""
    refs = data.get("diff_refs")
    if not isinstance(refs, dict) or not refs.get("head_sha") or not refs.get("base_sha"):
        # Right after a merge request opens or moves, GitLab may still be computing its diff.
        raise PlatformError(
            f"GitLab has not prepared the diff of !{data.get('iid')} yet (no diff_refs); "
            "try again shortly"
        )
    author = data.get("author") or {}
    login = str(author.get("username") or "ghost")
    raw_state = data.get("state")
    state: Literal["open", "closed", "merged"] = "open"
    if raw_state == "merged":
        state = "merged"
    elif raw_state in ("closed", "locked"):
        state = "closed"
    labels = tuple(
        str(label.get("name") or label.get("title")) if isinstance(label, dict) else str(label)
        for label in data.get("labels") or ()
    )
    return PullRequest(
        repo=repo,
        number=int(data["iid"]),
        title=data.get("title") or "",
        body=data.get("description"),
        author=login,
        author_is_bot=bool(author.get("bot")) or is_gitlab_bot(login),
        base_sha=str(refs["base_sha"]),
        head_sha=str(refs["head_sha"]),
        base_ref=data.get("target_branch") or "",
        head_ref=data.get("source_branch") or "",
        draft=bool(data.get("draft") or data.get("work_in_progress")),
        state=state,
        labels=labels,
        url=data.get("web_url") or "",
        default_branch=(project or {}).get("default_branch"),
        start_sha=str(refs.get("start_sha") or refs["base_sha"]),
    )


def permission_from(member: Mapping[str, Any]) -> Permission:
    """Developer and up may use commands ("write"); Maintainer and Owner administer."""
    level = int(member.get("access_level") or 0)
    if member.get("state") not in (None, "active"):
        return "none"  # blocked or awaiting approval
    if level >= MAINTAINER:
        return "admin"
    if level >= DEVELOPER:
        return "write"
    return "read" if level > 0 else "none"


def trim_description(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= STATUS_DESCRIPTION_LIMIT:
        return text
    return text[: STATUS_DESCRIPTION_LIMIT - 1].rstrip() + "…"


def _note_url(pr: PullRequest, note_id: Any) -> str | None:
    return f"{pr.url}#note_{note_id}" if pr.url and note_id is not None else None


def _note_ref(data: Mapping[str, Any], pr: PullRequest) -> CommentRef:
    return CommentRef(
        id=int(data["id"]),
        kind="conversation",
        number=pr.number,
        url=_note_url(pr, data["id"]),
    )


def _force_pushed(pr: PullRequest, since: str, status: int | None) -> SinceNotAncestor:
    return SinceNotAncestor(
        f"{since[:12]} is no longer in the history of !{pr.number} (force-pushed?); "
        "review the whole merge request instead",
        status=status,
    )


def _dicts(items: Any) -> Iterator[dict[str, Any]]:
    for item in items:
        if isinstance(item, dict):
            yield item
