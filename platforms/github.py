"""The GitHub platform: the Platform protocol over GitHub's REST API, through gidgethub.

`GitHub` is built once per process from Settings and the process's aiohttp session. It holds
the credentials (App installation tokens, or a plain token), the ETag cache and the request
policy; `GitHub.for_repo(repo, installation_id, delivery_id=...)` hands out a `GitHubPlatform`
bound to one repository for one event.

Every request goes through `Transport` (platforms/github_transport.py): a timeout, retries,
rate limits waited out up to ARBITER_GITHUB_RATE_LIMIT_MAX_WAIT, and the delivery id. What
GitHub's diffs allow a review comment to sit on, and the review payloads, are the pure functions
of platforms/github_diff.py; credentials are platforms/github_auth.py's.

Every write that creates something carries a hidden marker (a review its key's, a comment its
key's, a reply its own), so a write whose answer was lost is looked for on GitHub before it is
sent again (`GitHubPlatform._write`): GitHub applies a write and answers 502 often enough.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Literal, TypeVar, cast
from urllib.parse import quote

import aiohttp
import cachetools
from gidgethub import BadRequest, HTTPException

from bot.logs import get_logger
from config.settings import Settings, platform_status
from platforms import github_hooks
from platforms.base import (
    USER_AGENT,
    Changes,
    CommentRef,
    Deliveries,
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
from platforms.github_auth import (
    AppCredentials,
    InstallationToken,
    InstallationTokens,
    load_private_key,
    parse_expiry,
)
from platforms.github_diff import (
    MAX_COMPARE_FILES,
    MAX_PR_FILES,
    Dropped,
    Numbered,
    Refusal,
    anchor_problem,
    file_change_from,
    line_refusal,
    posted_review,
    review_payload,
)
from platforms.github_hooks import Hook, open_pull_request_from
from platforms.github_transport import (
    ETAG_CACHE_ENTRIES,
    EtagCache,
    Request,
    ScopedCache,
    Transport,
    collect,
    delete,
    get,
    get_raw,
    patch,
    platform_error,
    post,
)
from platforms.retry import AsyncSleep, Clock, LostAnswers, RequestPolicy, once

# The markers and the user agent live in platforms/base.py; importing them from here still works.
__all__ = [
    "USER_AGENT",
    "GitHub",
    "GitHubPlatform",
    "comment_marker",
    "load_private_key",
    "review_marker",
]

STATUS_DESCRIPTION_LIMIT = 140
T = TypeVar("T")
Find = Callable[[], Awaitable[T | None]]  # what a write made, looked for on GitHub


# --- The process-wide client --------------------------------------------------------------------


class GitHub:
    """The GitHub API client of this process: credentials, ETag cache and request policy.

    App mode when ARBITER_GITHUB_APP_ID and a private key are set; token mode when only
    ARBITER_GITHUB_TOKEN is. `clock` and `sleep` are injectable so tests need not wait.
    """

    name = "github"

    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        *,
        clock: Clock = time.time,
        sleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.base_url = settings.github_base_url
        self.mode: Literal["app", "token"] | None = None
        self._session = session
        self._policy = RequestPolicy.from_settings(settings, "github", sleep=sleep, clock=clock)
        self._app: AppCredentials | None = None
        self._token: str | None = None
        mode = platform_status(settings)["github"].mode
        if mode == "app" and settings.github_app_id:
            key = load_private_key(settings)
            if key is not None:
                self._app = AppCredentials(settings.github_app_id, key)
                self.mode = "app"
        elif mode == "token" and settings.github_token is not None:
            self._token = settings.github_token.get_secret_value()
            self.mode = "token"
        self._etags: EtagCache = cachetools.LRUCache(ETAG_CACHE_ENTRIES)
        self._tokens = InstallationTokens(clock)
        self._installations: dict[str, int] = {}
        self._login: str | None = None
        self._login_lock = asyncio.Lock()
        self._log = get_logger(component="github")

    @property
    def policy(self) -> RequestPolicy[AsyncSleep]:
        return self._policy

    def for_repo(
        self, repo: str, installation_id: int | None, *, delivery_id: str | None = None
    ) -> GitHubPlatform:
        """A Platform bound to `repo` ("owner/name"). In App mode a missing installation id is
        looked up from the repository on first use."""
        if self.mode is None:
            raise PlatformNotConfigured(
                "github is not configured: set ARBITER_GITHUB_TOKEN, or ARBITER_GITHUB_APP_ID "
                "with ARBITER_GITHUB_PRIVATE_KEY (or ARBITER_GITHUB_PRIVATE_KEY_PATH)"
            )
        return GitHubPlatform(self, repo, installation_id, delivery_id=delivery_id)

    # --- Credentials --------------------------------------------------------------------------

    async def credential(
        self, repo: str, installation_id: int | None, *, delivery_id: str | None = None
    ) -> tuple[str, int | None]:
        """The token for calls on `repo`, and the installation it belongs to (None: a PAT)."""
        if self._app is None:
            if self._token is None:
                raise PlatformNotConfigured("github is not configured")
            return self._token, None
        if installation_id is None:
            installation_id = await self.installation_for(repo, delivery_id=delivery_id)
        token = await self.installation_token(installation_id, delivery_id=delivery_id)
        return token, installation_id

    async def installation_token(
        self, installation_id: int, *, delivery_id: str | None = None
    ) -> str:
        app = self._require_app()

        async def mint() -> InstallationToken:
            return await self._mint(app, installation_id, delivery_id)

        return await self._tokens.get(installation_id, mint)

    def forget_token(self, installation_id: int, token: str) -> None:
        """Drop a cached token GitHub refused (revoked, or expired early)."""
        self._tokens.forget(installation_id, token)

    async def installation_for(self, repo: str, *, delivery_id: str | None = None) -> int:
        """The App's installation on `repo`, asked of GitHub once per process."""
        if repo not in self._installations:
            app = self._require_app()
            data = await self._as_app(
                f"find the App's installation on {repo}",
                f"{_repo_path(repo)}/installation",
                app,
                delivery_id,
            )
            self._installations[repo] = int(data["id"])
        return self._installations[repo]

    async def login(self, *, delivery_id: str | None = None) -> str:
        """The login Arbiter comments as: `<app-slug>[bot]`, or the token's user."""
        async with self._login_lock:
            if self._login is None:
                if self._app is not None:
                    data = await self._as_app("read the App", "/app", self._app, delivery_id)
                    self._login = f"{data['slug']}[bot]"
                else:
                    http = self.transport("token", delivery_id)
                    try:
                        data = await http.getitem("/user", oauth_token=self._token)
                    except HTTPException as exc:
                        raise platform_error("read the token's user", exc) from exc
                    self._login = str(data["login"])
            return self._login

    def transport(self, scope: str, delivery_id: str | None) -> Transport:
        """A gidgethub client whose conditional GETs use `scope`'s share of the ETag cache."""
        return Transport(
            self._session,
            self._policy,
            base_url=self.base_url,
            cache=ScopedCache(self._etags, scope),
            delivery_id=delivery_id,
            log=self._log.bind(delivery_id=delivery_id) if delivery_id else self._log,
        )

    def _require_app(self) -> AppCredentials:
        if self._app is None:
            raise PlatformNotConfigured("this call needs the GitHub App (ARBITER_GITHUB_APP_ID)")
        return self._app

    async def _mint(
        self, app: AppCredentials, installation_id: int, delivery_id: str | None
    ) -> InstallationToken:
        from gidgethub.apps import get_installation_access_token  # PyJWT: App mode only

        http = self.transport("app", delivery_id)

        async def issue() -> dict[str, Any]:
            return await get_installation_access_token(
                http,
                installation_id=str(installation_id),
                app_id=app.app_id,
                private_key=app.private_key,
            )

        action = f"issue a token for installation {installation_id}"
        try:
            # A second token where the first one's answer was lost does no harm: send again.
            lost = LostAnswers(self._policy, action, self._log)
            data = await once(lost, issue, None, self._policy.sleep)
        except HTTPException as exc:
            raise platform_error(
                f"issue a token for installation {installation_id} (check ARBITER_GITHUB_APP_ID "
                "and the private key)",
                exc,
            ) from exc
        self._log.info(
            "github installation token issued",
            installation_id=installation_id,
            expires=data["expires_at"],
        )
        return InstallationToken(token=data["token"], expires_at=parse_expiry(data["expires_at"]))

    async def _as_app(
        self, action: str, url: str, app: AppCredentials, delivery_id: str | None
    ) -> Any:
        http = self.transport("app", delivery_id)
        try:
            return await http.getitem(url, jwt=app.jwt())
        except HTTPException as exc:
            raise platform_error(action, exc) from exc

    # --- Webhook deliveries (bot/recovery/; the calls are platforms/github_hooks.py's) -------

    async def hook_deliveries(
        self, hook: Hook | None = None, *, newer_than: float | None = None, limit: int = 1000
    ) -> Deliveries:
        """Delivery attempts of the App's webhook (`hook` None) or of a repository webhook,
        newest first, back to `newer_than` (UNIX seconds), at most `limit`."""
        return await github_hooks.list_deliveries(
            self._hook_access(hook), hook, newer_than=newer_than, limit=limit
        )

    async def redeliver(self, delivery_id: int, hook: Hook | None = None) -> None:
        """Ask GitHub to send a delivery again; PlatformError when it refuses."""
        await github_hooks.redeliver(self._hook_access(hook), hook, delivery_id)

    def _hook_access(self, hook: Hook | None) -> github_hooks.Access:
        """The App's JWT for its webhook; the token (admin:repo_hook) for a repository's."""
        if hook is None:
            return self.transport("app", None), self._require_app().jwt(), None
        if self._token is None:
            raise PlatformNotConfigured(
                "repository webhooks are read with ARBITER_GITHUB_TOKEN (admin:repo_hook)"
            )
        return self.transport("token", None), None, self._token


# --- One repository, one event ------------------------------------------------------------------


class GitHubPlatform:
    """The Platform protocol for one GitHub repository, for one event."""

    name = "github"

    def __init__(
        self,
        github: GitHub,
        repo: str,
        installation_id: int | None,
        *,
        delivery_id: str | None = None,
    ) -> None:
        self.repo = repo
        self.installation_id = installation_id
        self.delivery_id = delivery_id
        self._github = github
        self._path = _repo_path(repo)
        # ETags are kept per credential; an unknown installation is one per repository.
        scope = "token"
        if github.mode == "app":
            known = installation_id is not None
            scope = f"installation:{installation_id}" if known else f"repo:{repo}"
        self._http = github.transport(scope, delivery_id)
        self._log = get_logger(component="github", repo=repo, delivery_id=delivery_id)
        # Our comments in each comment listing read to its end, by the listing's URL: a review
        # looks for its marked comments twice (the repository file's problems before the model,
        # the summary after it), and one listing answers both. Only this job writes our marked
        # comments on the pull request (one job per pull request runs at a time), and every
        # write here forgets the listing; a lost answer's check reads it again.
        self._ours: dict[str, list[dict[str, Any]]] = {}

    # --- Reading ------------------------------------------------------------------------------

    async def pull_request(self, number: int) -> PullRequest:
        url = f"{self._path}/pulls/{number}"
        data = await self._call(f"read pull request #{number} of {self.repo}", get(url))
        return pull_request_from(self.repo, data)

    async def changes(self, pr: PullRequest, since: str | None = None) -> Changes:
        if since is not None:
            return await self._changes_since(pr, since)
        url = f"{self._path}/pulls/{pr.number}/files?per_page=100"
        files = await self._call(
            f"list the files of #{pr.number}", collect(url, limit=MAX_PR_FILES)
        )
        return Changes(
            base_sha=pr.base_sha,
            head_sha=pr.head_sha,
            files=tuple(file_change_from(item) for item in files),
            truncated=len(files) >= MAX_PR_FILES,
        )

    async def _changes_since(self, pr: PullRequest, since: str) -> Changes:
        url = f"{self._path}/compare/{quote(since, safe='')}...{quote(pr.head_sha, safe='')}"
        try:
            data = await self._call(f"compare {since[:12]} with #{pr.number}'s head", get(url))
        except PlatformError as exc:
            if exc.status == 404:  # GitHub no longer has the commit
                raise _force_pushed(pr, since, 404) from exc
            raise
        if data.get("status") in ("diverged", "behind"):
            raise _force_pushed(pr, since, None)
        files = data.get("files") or []
        return Changes(
            base_sha=since,
            head_sha=pr.head_sha,
            files=tuple(file_change_from(item) for item in files),
            incremental=True,
            truncated=len(files) >= MAX_COMPARE_FILES,
        )

    async def read_file(self, path: str, ref: str) -> str | None:
        url = f"{self._path}/contents/{quote(path.strip('/'), safe='/')}?ref={quote(ref, safe='')}"
        action = f"read {path} at {ref}"
        try:
            data = await self._call(action, get(url))
            if not isinstance(data, dict) or data.get("type") != "file":
                return None  # a directory or a submodule has no text
            if data.get("encoding") == "base64":
                return base64.b64decode(data.get("content") or "").decode("utf-8", "replace")
            # Over 1 MB GitHub leaves `content` empty: only the raw media type carries it.
            raw = await self._call(action, get_raw(url))
        except PlatformError as exc:
            if exc.status == 404:
                return None
            raise
        return raw.decode("utf-8", "replace")

    async def default_branch(self) -> str:
        data = await self._call(f"read the repository {self.repo}", get(self._path))
        return str(data["default_branch"])

    async def branch_head(self, branch: str) -> str:
        url = f"{self._path}/git/ref/heads/{quote(branch, safe='/')}"
        data = await self._call(f"read the head of {branch} in {self.repo}", get(url))
        return str(data["object"]["sha"])

    async def permission(self, user: str) -> Permission:
        url = f"{self._path}/collaborators/{quote(user, safe='')}/permission"
        try:
            data = await self._call(f"read {user}'s permission on {self.repo}", get(url))
        except PlatformError as exc:
            if exc.status == 404:
                return "none"  # not a user GitHub knows, or not visible to us: no access
            raise
        return permission_from(data)

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
        """One review with every comment; when GitHub refuses a line, the others still go up.

        GitHub refuses the whole review for one misplaced line without saying which, so the
        culprits are found against the diff, then, if GitHub still disagrees, by asking GitHub
        about halves of the remainder with pending reviews it never shows anyone. With a
        `key`, a submitted review of ours whose body carries the key's marker is returned
        instead of posting again, unless the key is `fresh` (no earlier attempt used it: one
        request less before the post). Without one the review is marked all the same, so that a
        post whose answer was lost is found rather than posted twice.
        """
        marker = review_marker(key if key is not None else _nonce())
        summary = summary if has_marker(summary, marker) else f"{summary}\n\n{marker}".lstrip()
        if key is not None and not fresh:
            existing = await self._find_review(pr, marker)
            if existing is not None:
                return PostedReview(
                    id=existing.get("id"),
                    posted=tuple(comments),
                    url=existing.get("html_url"),
                )
        items = list(enumerate(comments))
        outcome = await self._submit(pr, summary, marker, items)
        if isinstance(outcome, dict):
            return posted_review(outcome, items, [])
        keep, dropped = await self._split_by_diff(pr, items, outcome)
        outcome = await self._submit(pr, summary, marker, keep)
        if isinstance(outcome, Refusal) and keep:
            refused = await self._refused_by_github(pr, keep, outcome)
            dropped += refused
            refused_indexes = {index for index, _, _ in refused}
            keep = [item for item in keep if item[0] not in refused_indexes]
            outcome = await self._submit(pr, summary, marker, keep)
        if isinstance(outcome, Refusal):
            # The summary alone, rather than nothing.
            dropped += [(index, comment, outcome.reason) for index, comment in keep]
            keep = []
            outcome = await self._submit(pr, summary, marker, keep)
            if isinstance(outcome, Refusal):
                raise PlatformError(f"GitHub refused even an empty review: {outcome.reason}")
        if dropped:
            self._log.warning(
                "review comments dropped",
                number=pr.number,
                dropped=[f"{c.path}:{c.line}: {reason}" for _, c, reason in dropped],
            )
        return posted_review(outcome, keep, dropped)

    async def _find_review(self, pr: PullRequest, marker: str) -> dict[str, Any] | None:
        for review in await self._our_reviews(pr):
            if review.get("state") != "PENDING" and has_marker(review.get("body") or "", marker):
                return review
        return None

    async def _our_reviews(self, pr: PullRequest) -> list[dict[str, Any]]:
        """The reviews of the pull request written by Arbiter, submitted or pending."""
        me = await self._github.login(delivery_id=self.delivery_id)
        url = f"{self._path}/pulls/{pr.number}/reviews?per_page=100"
        reviews = await self._call(f"list the reviews of #{pr.number}", collect(url, limit=3000))
        return [r for r in reviews if (r.get("user") or {}).get("login") == me]

    async def _split_by_diff(
        self, pr: PullRequest, items: list[Numbered], refusal: Refusal
    ) -> tuple[list[Numbered], list[Dropped]]:
        """The comments that sit on lines of the diff, and the others with the reason."""
        try:
            changes = await self.changes(pr)
        except PlatformError as exc:
            self._log.warning("diff unavailable for checking comments", error=str(exc))
            return items, []
        by_path = {change.path: change for change in changes.files}
        keep: list[Numbered] = []
        dropped: list[Dropped] = []
        for index, comment in items:
            problem = anchor_problem(comment, by_path.get(comment.path))
            if problem is None:
                keep.append((index, comment))
            else:
                dropped.append((index, comment, f"{problem} (GitHub: {refusal.reason})"))
        return keep, dropped

    async def _submit(
        self, pr: PullRequest, summary: str, marker: str, items: Sequence[Numbered]
    ) -> dict[str, Any] | Refusal:
        payload = review_payload(pr.head_sha, [c for _, c in items], summary=summary)

        async def find() -> dict[str, Any] | None:
            return await self._find_review(pr, marker)

        return await self._post_review(f"post a review on #{pr.number}", pr, payload, find)

    async def _post_review(
        self, action: str, pr: PullRequest, payload: dict[str, Any], find: Find[dict[str, Any]]
    ) -> dict[str, Any] | Refusal:
        """The review GitHub made (or, its answer lost, the one `find` finds), or its refusal
        of a comment's line (any other error raises)."""
        url = f"{self._path}/pulls/{pr.number}/reviews"
        try:
            review = await self._write(action, post(url, payload), find)
        except PlatformError as exc:
            refusal = line_refusal(exc)
            if refusal is None:
                raise
            return refusal
        return cast(dict[str, Any], review)

    async def _refused_by_github(
        self, pr: PullRequest, items: list[Numbered], refusal: Refusal
    ) -> list[Dropped]:
        try:
            await self._delete_own_pending_reviews(pr)
            return await self._bisect(pr, items)
        except PlatformError as exc:
            # Probing failed: GitHub named no culprit, so none of these can go up.
            self._log.warning("review probe failed", number=pr.number, error=str(exc))
            return [(index, comment, refusal.reason) for index, comment in items]

    async def _delete_own_pending_reviews(self, pr: PullRequest) -> None:
        """GitHub allows one pending review per user: a probe left by a crash would block ours."""
        for review in await self._our_reviews(pr):
            if review.get("state") == "PENDING":
                await self._delete_pending_review(pr, review["id"])

    async def _delete_pending_review(self, pr: PullRequest, review_id: int) -> None:
        endpoint = f"{self._path}/pulls/{pr.number}/reviews/{review_id}"
        try:
            await self._call(f"delete a pending review on #{pr.number}", delete(endpoint))
        except PlatformError as exc:
            if exc.status != 404:  # gone: an earlier try whose answer was lost deleted it
                raise

    async def _bisect(self, pr: PullRequest, items: list[Numbered]) -> list[Dropped]:
        """The comments GitHub refuses, found by halving: O(bad × log n) probes."""
        refusal = await self._probe(pr, items)
        if refusal is None:
            return []
        if len(items) == 1:
            index, comment = items[0]
            return [(index, comment, refusal.reason)]
        middle = len(items) // 2
        return await self._bisect(pr, items[:middle]) + await self._bisect(pr, items[middle:])

    async def _probe(self, pr: PullRequest, items: Sequence[Numbered]) -> Refusal | None:
        """Would GitHub accept these comments? A pending review (no `event`) is visible to no
        one; it is deleted again at once."""
        payload = review_payload(pr.head_sha, [c for _, c in items])

        async def find() -> dict[str, Any] | None:
            # Ours are all deleted before probing: a pending one now is this probe.
            pending = [r for r in await self._our_reviews(pr) if r.get("state") == "PENDING"]
            return pending[0] if pending else None

        review = await self._post_review(f"check comments on #{pr.number}", pr, payload, find)
        if isinstance(review, Refusal):
            return review
        await self._delete_pending_review(pr, review["id"])
        return None

    async def upsert_comment(self, pr: PullRequest, key: str, body: str) -> CommentRef:
        marker = comment_marker(key)
        text = body if has_marker(body, marker) else f"{marker}\n{body}"
        me = await self._github.login(delivery_id=self.delivery_id)
        comments = f"{self._path}/issues/{pr.number}/comments"
        listed_before = comments in self._ours
        existing = await self._find_marked(comments, marker, me, number=pr.number)
        if existing is None:

            async def find() -> dict[str, Any] | None:
                return await self._find_marked(comments, marker, me, number=pr.number, fresh=True)

            self._ours.pop(comments, None)
            made = await self._write(
                f"comment on #{pr.number}", post(comments, {"body": text}), find
            )
            return _conversation_ref(made, pr.number)
        if existing.get("body") == text:
            return _conversation_ref(existing, pr.number)  # an unchanged body needs no edit
        url = f"{self._path}/issues/comments/{existing['id']}"
        self._ours.pop(comments, None)
        try:
            edited = await self._call(
                f"edit comment {existing['id']} on #{pr.number}", patch(url, {"body": text})
            )
        except PlatformError as exc:
            if exc.status != 404 or not listed_before:
                raise
            # Deleted since this job read the listing earlier: looked for again in a listing
            # read now (the one above is forgotten), and made anew if it is gone.
            return await self.upsert_comment(pr, key, body)
        return _conversation_ref(edited, pr.number)

    async def find_comment(self, pr: PullRequest, key: str) -> CommentRef | None:
        me = await self._github.login(delivery_id=self.delivery_id)
        comments = f"{self._path}/issues/{pr.number}/comments"
        found = await self._find_marked(comments, comment_marker(key), me, number=pr.number)
        return None if found is None else _conversation_ref(found, pr.number)

    async def _find_marked(
        self, url: str, marker: str, author: str, *, number: int, fresh: bool = False
    ) -> dict[str, Any] | None:
        """Our comment under `url` (a list of #`number`'s comments) carrying `marker`; a marker
        copied into someone else's comment is not. Answered from the listing this job read
        already, if it read it to the end and wrote nothing there since, unless `fresh`."""
        known = None if fresh else self._ours.get(url)
        if known is not None:
            return next((c for c in known if has_marker(c.get("body") or "", marker)), None)

        async def find(http: Transport, token: str) -> dict[str, Any] | None:
            ours: list[dict[str, Any]] = []
            async with aclosing(http.getiter(f"{url}?per_page=100", oauth_token=token)) as items:
                async for comment in items:
                    if (comment.get("user") or {}).get("login") != author:
                        continue
                    if has_marker(comment.get("body") or "", marker):
                        return cast(dict[str, Any], comment)
                    ours.append(comment)
            self._ours[url] = ours
            return None

        return await self._call(f"list the comments of #{number}", find)

    async def reply(self, comment: CommentRef, body: str) -> CommentRef:
        """A reply in the comment's thread, with a mark of its own so that a reply whose answer
        was lost is found instead of posted twice."""
        number = comment.number
        if number is None:
            raise PlatformError(f"cannot reply to comment {comment.id}: no pull request number")
        marker = reply_marker()
        text = f"{body.rstrip()}\n\n{marker}"
        if comment.kind == "inline":
            # GitHub threads replies on the thread's first comment; replies to replies fail.
            root = comment.thread or comment.id
            url = f"{self._path}/pulls/{number}/comments/{root}/replies"
            action = f"reply to review comment {root} on #{number}"
            listing = f"{self._path}/pulls/{number}/comments"
        else:
            url = listing = f"{self._path}/issues/{number}/comments"
            action = f"comment on #{number}"

        async def find() -> dict[str, Any] | None:
            me = await self._github.login(delivery_id=self.delivery_id)
            return await self._find_marked(listing, marker, me, number=number, fresh=True)

        self._ours.pop(listing, None)
        made = await self._write(action, post(url, {"body": text}), find)
        if comment.kind != "inline":
            return _conversation_ref(made, number)
        return CommentRef(
            id=int(made["id"]),
            kind="inline",
            number=number,
            thread=str(root),
            url=made.get("html_url"),
        )

    async def set_status(
        self, pr: PullRequest, state: StatusState, description: str, url: str | None = None
    ) -> None:
        payload: dict[str, Any] = {
            "state": state,
            "description": trim_description(description),
            "context": self._github.settings.status_check_context,
        }
        if url:
            payload["target_url"] = url
        endpoint = f"{self._path}/statuses/{quote(pr.head_sha, safe='')}"
        # Idempotent in effect: the newest status of a context is the commit's, so the same
        # status twice (its first answer lost) reads as once.
        await self._write(f"set the status of {pr.head_sha[:12]}", post(endpoint, payload), None)

    async def react(self, comment: CommentRef, reaction: Reaction) -> None:
        if comment.kind == "review":
            raise PlatformError("GitHub has no reactions on a review, only on its comments")
        kind = "pulls" if comment.kind == "inline" else "issues"
        url = f"{self._path}/{kind}/comments/{comment.id}/reactions"
        # Idempotent in effect: GitHub keeps one reaction of a kind per user (and answers the
        # existing one), so sending it again when its answer was lost adds nothing.
        await self._write(f"react to comment {comment.id}", post(url, {"content": reaction}), None)

    # --- Plumbing -----------------------------------------------------------------------------

    async def _write(self, action: str, request: Request[T], find: Find[T] | None) -> T:
        """A write that creates something: when its answer is lost, `find` looks on GitHub for
        what it made before it is sent again. Without `find` the write is idempotent in effect,
        and is simply sent again."""
        lost = LostAnswers(self._github.policy, action, self._log)

        async def send() -> T:
            return await self._call(action, request)

        return await once(lost, send, find, self._github.policy.sleep)

    async def _call(self, action: str, request: Request[T]) -> T:
        """One API call with this repo's credentials, GitHub's errors as PlatformError."""
        try:
            return await self._authorized(request)
        except HTTPException as exc:
            raise platform_error(action, exc) from exc

    async def _authorized(self, request: Request[T]) -> T:
        token, installation = await self._github.credential(
            self.repo, self.installation_id, delivery_id=self.delivery_id
        )
        try:
            return await request(self._http, token)
        except BadRequest as exc:
            if exc.status_code != 401 or installation is None:
                raise
            # An installation token GitHub no longer takes (revoked, clock drift): mint once more.
            self._github.forget_token(installation, token)
        token, _ = await self._github.credential(
            self.repo, installation, delivery_id=self.delivery_id
        )
        return await request(self._http, token)

    # --- Open pull requests (the reconcile sweep, bot/recovery/) ------------------------------

    async def open_pull_requests(
        self, updated_since: float | None, *, limit: int
    ) -> OpenPullRequests:
        """Open pull requests, most recently updated first, back to `updated_since`. The first
        page's URL never changes, so when nothing moved GitHub answers it 304 (its ETag)."""
        per_page = min(100, max(limit, 1))
        url = f"{self._path}/pulls?state=open&sort=updated&direction=desc&per_page={per_page}"

        async def listing(http: Transport, token: str) -> OpenPullRequests:
            found: list[OpenPullRequest] = []
            async with aclosing(http.getiter(url, oauth_token=token)) as pulls:
                async for raw in pulls:
                    pull = open_pull_request_from(raw)
                    if updated_since is not None and pull.updated_at < updated_since:
                        break
                    if len(found) >= limit:
                        return OpenPullRequests(tuple(found), complete=False)
                    found.append(pull)
            return OpenPullRequests(tuple(found), complete=True)

        return await self._call(f"list the open pull requests of {self.repo}", listing)


def _force_pushed(pr: PullRequest, since: str, status: int | None) -> SinceNotAncestor:
    return SinceNotAncestor(
        f"{since[:12]} is no longer in the history of #{pr.number} (force-pushed?); "
        "review the whole pull request instead",
        status=status,
    )


def _repo_path(repo: str) -> str:
    owner, sep, name = repo.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise ValueError(f"a GitHub repository is 'owner/name', not {repo!r}")
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


# --- GitHub's shapes to ours ---------------------------------------------------------------------

_PERMISSIONS: dict[str, Permission] = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}


def pull_request_from(repo: str, data: Mapping[str, Any]) -> PullRequest:
    user = data.get("user") or {}  # null for a deleted account ("ghost")
    base, head = data["base"], data["head"]
    state: Literal["open", "closed", "merged"] = "open"
    if data.get("merged") or data.get("merged_at"):
        state = "merged"
    elif data.get("state") == "closed":
        state = "closed"
    return PullRequest(
        repo=repo,
        number=int(data["number"]),
        title=data.get("title") or "",
        body=data.get("body"),
        author=user.get("login") or "ghost",
        author_is_bot=user.get("type") == "Bot",
        base_sha=base["sha"],
        head_sha=head["sha"],
        base_ref=base.get("ref") or "",
        head_ref=head.get("ref") or "",
        draft=bool(data.get("draft")),
        state=state,
        labels=tuple(label["name"] for label in data.get("labels") or ()),
        url=data.get("html_url") or "",
        default_branch=(base.get("repo") or {}).get("default_branch"),
        start_sha=base["sha"],
    )


def permission_from(data: Mapping[str, Any]) -> Permission:
    """`role_name` is the fine role (maintain, triage); custom roles fall back to `permission`."""
    role = data.get("role_name")
    if role in _PERMISSIONS:
        return _PERMISSIONS[role]
    return _PERMISSIONS.get(str(data.get("permission")), "none")


def trim_description(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= STATUS_DESCRIPTION_LIMIT:
        return text
    return text[: STATUS_DESCRIPTION_LIMIT - 1].rstrip() + "…"


def _nonce() -> str:
    """A mark of its own for a write no key names: a lost answer is recognised by it."""
    return secrets.token_hex(8)


def _conversation_ref(data: Mapping[str, Any], number: int) -> CommentRef:
    return CommentRef(
        id=int(data["id"]), kind="conversation", number=number, url=data.get("html_url")
    )
