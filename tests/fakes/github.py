"""A fake GitHub REST API: a real aiohttp server on 127.0.0.1 that speaks GitHub's shapes.

Arbiter runs against it unmodified, through ARBITER_GITHUB_BASE_URL (also from an `arbiter
serve` subprocess: the server lives in the test's event loop and listens on a real port).

    key = AppKey.generate()  # a fresh RSA key pair per test session; never commit one
    async with FakeGitHub(app_id="4242", public_key=key.public_pem, token="ghp_x") as github:
        github.add_repo("octo/demo", installation_id=7)
        github.add_pull("octo/demo", 1, files=[PullFile.added("app.py", "print('hi')\\n")])
        github.add_file("octo/demo", ".arbiter.yml", "review: {}\\n")
        env = {
            "ARBITER_GITHUB_BASE_URL": github.url,
            "ARBITER_GITHUB_APP_ID": "4242",
            "ARBITER_GITHUB_PRIVATE_KEY": key.private_pem,
        }
        ...  # run Arbiter
        assert github.reviews("octo/demo", 1)[0]["state"] == "COMMENTED"
        assert github.requests_to("POST", "/repos/octo/demo/statuses/*")

Seed: `add_repo`, `add_pull`, `update_pull`, `add_compare`, `add_file`, `set_permission`,
`add_issue_comment`, `add_review_comment`, `add_review`. `add_file` on a branch is a commit: it
moves the branch's head to a new sha that keeps a snapshot of the branch's files, so a file
read at an older sha is what it was then (`branch_head` reads the head back).
Read back: `requests` / `requests_to` (every answered request, with headers and body), `arrived`
(requests seen, answered or not), `reviews`,
`review_comments`, `issue_comments`, `statuses`, `reactions`, `minted` (installation tokens),
`branch_head`.
Script failures: `fail` (any status, e.g. 502), `disconnect`, `delay`, `secondary_rate_limit`,
`primary_rate_limit`, `revoke_tokens`. With `landed=True`, `fail`, `disconnect` and `delay` carry
the request out first and only then lose its answer (a 502, a dropped connection, an answer
later than the client waits), as a proxy in front of GitHub does when GitHub completed a write
but the answer never made it back.
Webhook deliveries (recovery): `set_app_webhook` (URL and secret), `add_repo_hook`,
`record_delivery` (an attempt GitHub made that nobody saw: a 502, or 0 for no connection),
`deliver` (send one now, signed); read back `deliveries`, `redelivery_requests`, and await
`sent()`. `GET /app/hook/deliveries` (JWT) and `/repos/{o}/{r}/hooks/{id}/deliveries` (token)
list them newest first, paged by `cursor` in the Link header; `POST …/{id}/attempts` answers
202 and sends the payload again, signed, with the same `X-GitHub-Delivery`, logged as a new
item with `redelivery: true`. `GET /repos/{o}/{r}/pulls` lists pull requests (`state`,
`sort=updated`, `direction`), each with the `updated_at` of its last `update_pull`.
App manifests: `add_manifest_code(manifest)` is the code GitHub hands the browser after someone
creates an App from `manifest`; `POST /app-manifests/{code}/conversions` (no authentication, as
on GitHub) converts it once, within an hour, into GitHub's answer (id, slug, pem, webhook_secret,
client_id, client_secret, html_url, owner, …), recorded in `created_apps`. From then on the fake
is that App: its JWTs, signed with the returned pem, are the ones accepted.

Endpoints: /app, /app/installations/{id}/access_tokens, /user, and under /repos/{o}/{r}: the
repository, /installation, pulls/{n}, pulls/{n}/files, compare/{base}...{head}, contents/{path}
(JSON, or the raw media type; content left empty over 1 MB as GitHub does),
git/ref/heads/{branch} (the branch's head commit, for branches with a head), pulls/{n}/reviews
(create, list, delete a pending one), pulls/{n}/comments and their /replies,
issues/{n}/comments, issues/comments/{id} (read, edit), statuses/{sha},
commits/{ref}/statuses, collaborators/{user}/permission, and reactions on both kinds of
comment. Lists are paged with GitHub's Link header; GETs carry an ETag and answer 304 to a
matching If-None-Match; anything unknown is GitHub's 404 body.

Authentication is checked as GitHub checks it. `/app/...` and `/repos/{o}/{r}/installation`
want the App's JWT: RS256 under `public_key`, `iat` in the past, `exp` in the future and at most
ten minutes ahead, `iss` the App id, all by the fake's `clock`. Every other call wants either
an installation token the fake issued, unexpired, for an installation covering the repository,
or the personal `token`. Pass a `ManualClock` as `clock` (and as the client's clock and sleep)
to move through token lifetimes and rate-limit windows without waiting.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import fnmatch
import hashlib
import hmac
import itertools
import json
import math
import re
import secrets
import string
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

WEB = "https://github.com"
DOCS = "https://docs.github.com/rest"
REVIEW_DOCS = "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request"
RATE_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
MAX_PR_FILES = 3000
MAX_COMPARE_FILES = 300
MAX_INLINE_CONTENT = 1024 * 1024  # above this, contents come only through the raw media type
JWT_MAX_LIFETIME = 600
MANIFEST_CODE_LIFETIME = 3600  # GitHub: the manifest flow's code works for an hour
APP_HOOK_ID = 0  # the App's webhook, in the fake's table of hooks
HOOKSHOT = "GitHub-Hookshot/fake"

# GitHub's own words (422 bodies) for review comments it cannot place.
LINE_NOT_IN_DIFF = (
    "Pull request review thread line must be part of the diff and "
    "Pull request review thread diff hunk can't be blank"
)
PATH_NOT_IN_DIFF = "Path could not be resolved"
START_NOT_BEFORE_LINE = "Pull request review thread start line must precede the end line."
START_NOT_IN_HUNK = (
    "Pull request review thread start line must be part of the same hunk as the line."
)
ONE_PENDING_REVIEW = "User can only have one pending review per pull request"
SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
REACTIONS = frozenset({"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"})
ROLES = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read"}


# --- Helpers the tests use ----------------------------------------------------------------------


@dataclass(frozen=True)
class AppKey:
    """A GitHub App key pair made for this test run: the private half for Arbiter, the public
    half for the fake."""

    private_pem: str = field(repr=False)
    public_pem: str

    @classmethod
    def generate(cls) -> AppKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # "BEGIN RSA PRIVATE KEY", as GitHub
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(private_pem=private.decode(), public_pem=public.decode())


class ManualClock:
    """A clock the test moves by hand; `sleep` moves it instead of waiting, and records how long
    each sleep was. Share one between the fake and the client."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass(frozen=True)
class PullFile:
    """One changed file of a pull request, as seeded. Without a patch and without counts it is
    a binary file; without a patch but with counts, a diff too large to show."""

    filename: str
    patch: str | None = None
    status: str = "modified"
    previous_filename: str | None = None
    additions: int | None = None
    deletions: int | None = None

    @classmethod
    def added(cls, filename: str, text: str) -> PullFile:
        lines = text.splitlines()
        patch = f"@@ -0,0 +1,{len(lines)} @@\n" + "\n".join(f"+{line}" for line in lines)
        return cls(filename, patch=patch, status="added")

    def counts(self) -> tuple[int, int]:
        lines = (self.patch or "").splitlines()
        added = sum(1 for line in lines if line.startswith("+"))
        removed = sum(1 for line in lines if line.startswith("-"))
        return (
            added if self.additions is None else self.additions,
            removed if self.deletions is None else self.deletions,
        )


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    status: int | None  # None when the fake dropped the connection
    actor: str  # "app", "installation:<id>", "token", "anonymous" or "refused"
    at: float  # the fake's clock

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class MintedToken:
    installation_id: int
    token: str = field(repr=False)
    expires_at: float


# --- State ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Actor:
    kind: Literal["app", "installation", "token"]
    login: str
    type: str
    installation_id: int | None = None

    @property
    def label(self) -> str:
        return f"installation:{self.installation_id}" if self.kind == "installation" else self.kind


@dataclass
class _Pull:
    number: int
    title: str
    body: str | None
    author: dict[str, Any]
    head_sha: str
    base_sha: str
    head_ref: str
    base_ref: str
    draft: bool
    state: str
    merged: bool
    labels: list[str]
    files: list[PullFile]
    created_at: str
    reviews: list[dict[str, Any]] = field(default_factory=list)
    review_comments: list[dict[str, Any]] = field(default_factory=list)
    issue_comments: list[dict[str, Any]] = field(default_factory=list)

    def file(self, path: str) -> PullFile | None:
        return next((f for f in self.files[:MAX_PR_FILES] if f.filename == path), None)

    def pending_review_ids(self) -> set[int]:
        return {r["id"] for r in self.reviews if r["state"] == "PENDING"}


@dataclass
class _Repo:
    full_name: str
    id: int
    installation_id: int | None
    default_branch: str
    private: bool
    pulls: dict[int, _Pull] = field(default_factory=dict)
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    refs: set[str] = field(default_factory=set)
    heads: dict[str, str] = field(default_factory=dict)  # branch -> its head commit's sha
    compares: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    statuses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class _Rule:
    method: str
    path: str
    times: int
    kind: Literal["status", "disconnect", "delay", "secondary"]
    status: int = 502
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float | None = None
    if_body: Callable[[Any], bool] | None = None
    landed: bool = False  # carried out before its answer is lost
    until: asyncio.Event | None = None  # the answer waits for it (at most `seconds`)

    async def wait(self) -> None:
        """Before the answer: `seconds` of real time, or until `until` is set (at most that)."""
        if self.until is None:
            await asyncio.sleep(self.seconds or 0)
            return
        try:
            async with asyncio.timeout(self.seconds or 10):
                await self.until.wait()
        except TimeoutError:
            pass

    def matches(self, request: web.Request, body: bytes) -> bool:
        method_ok = self.method == "*" or self.method.upper() == request.method
        if self.times <= 0 or not method_ok or not fnmatch.fnmatchcase(request.path, self.path):
            return False
        if self.if_body is None:
            return True
        try:
            return bool(self.if_body(json.loads(body or b"null")))
        except ValueError:
            return False


@dataclass
class _Exchange:
    """What the fake learnt about one request while answering it, for the request log."""

    actor: _Actor | None = None
    label: str = "anonymous"
    dropped: bool = False


@dataclass
class _Hook:
    """A webhook: the App's (`repo` None) or a repository's, and what GitHub delivered."""

    hook_id: int
    repo: str | None
    url: str | None
    secret: str | None
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # newest last
    payloads: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # guid ->


class _GitHubError(Exception):
    """Raised by a handler; rendered as GitHub renders errors."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Any = None,
        docs: str = DOCS,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.docs = docs
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body: dict[str, Any] = {"message": self.message, "documentation_url": self.docs}
        if self.errors is not None:
            body["errors"] = self.errors
        body["status"] = str(self.status)
        return web.json_response(body, status=self.status, headers=self.headers)


def _not_found() -> _GitHubError:
    return _GitHubError(404, "Not Found")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A manifest code's manifest, owner, key pair and when GitHub handed it out.
_ManifestCode = tuple[dict[str, Any], dict[str, Any], AppKey | None, float]


# --- The server -----------------------------------------------------------------------------------


class FakeGitHub:
    """GitHub's REST API for the calls Arbiter makes, with GitHub's shapes, auth and limits."""

    def __init__(
        self,
        *,
        app_id: str | None = None,
        public_key: str | None = None,
        app_slug: str = "arbiter",
        token: str | None = None,
        token_login: str = "arbiter-bot",  # noqa: S107 - a login, not a secret
        clock: Callable[[], float] = time.time,
        token_lifetime: float = 3600.0,
        rate_limit: int = 5000,
    ) -> None:
        self.app_id = app_id
        self.app_slug = app_slug
        self.token = token
        self.token_login = token_login
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.rate_limit = rate_limit
        self.minted: list[MintedToken] = []
        self._public_key = public_key
        self._repos: dict[str, _Repo] = {}
        self._tokens: dict[str, MintedToken] = {}
        self._requests: list[RecordedRequest] = []
        self._arrivals: list[tuple[str, str]] = []
        self._rules: list[_Rule] = []
        self._ids = itertools.count(1001)
        self._salt = secrets.token_hex(8)
        self._blocked_until = 0.0
        self._blocked_status = 403
        self._used = 0
        self._window_reset = 0.0
        self._issue_comments: dict[int, tuple[_Repo, _Pull, dict[str, Any]]] = {}
        self._review_comments: dict[int, tuple[_Repo, _Pull, dict[str, Any]]] = {}
        self._reactions: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._exchanges: dict[int, _Exchange] = {}  # by id(request), while it is answered
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._manifest_codes: dict[str, _ManifestCode] = {}
        self.created_apps: list[dict[str, Any]] = []  # conversion answers, secrets included
        # Webhook deliveries: the App's hook (id APP_HOOK_ID) and repository hooks.
        self._hooks: dict[int, _Hook] = {APP_HOOK_ID: _Hook(APP_HOOK_ID, None, None, None)}
        self._delivery_ids = itertools.count(12_000_000_001)
        self._sender: aiohttp.ClientSession | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.redelivery_requests: list[int] = []  # delivery ids whose attempts were POSTed
        self.pull_updates: dict[tuple[str, int], str] = {}  # (repo, number) -> updated_at

    # --- Lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give Arbiter (ARBITER_GITHUB_BASE_URL)."""
        if self._url is None:
            raise RuntimeError("the fake GitHub is not started")
        return self._url

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self._routes(app.router)
        # Cancelled handlers: a client that timed out does not keep a delayed answer alive.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]  # the port the system picked
        self._url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._stop_sending()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGitHub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- Seeding ----------------------------------------------------------------------------

    def add_repo(
        self,
        full_name: str,
        *,
        installation_id: int | None = 1,
        default_branch: str = "main",
        private: bool = True,
    ) -> dict[str, Any]:
        """A repository; `installation_id` is the App installation that covers it (None: none)."""
        repo = _Repo(full_name, next(self._ids), installation_id, default_branch, private)
        repo.refs.add(default_branch)
        self._commit(repo, default_branch)
        self._repos[full_name.lower()] = repo
        return self._repo_json(repo)

    def add_pull(
        self,
        repo: str,
        number: int,
        *,
        files: Iterable[PullFile] = (),
        head_sha: str | None = None,
        base_sha: str | None = None,
        title: str = "A change",
        body: str | None = None,
        author: str = "octocat",
        author_type: str = "User",
        draft: bool = False,
        state: str = "open",
        merged: bool = False,
        labels: Iterable[str] = (),
        head_ref: str = "feature",
        base_ref: str | None = None,
    ) -> dict[str, Any]:
        """A pull request and its changed files (GitHub lists at most 3,000 of them). Returns
        the pull request as GitHub's API shows it, handy for webhook payloads."""
        stored = self._repo(repo)
        pull = _Pull(
            number=number,
            title=title,
            body=body,
            author=_user(author, author_type),
            head_sha=head_sha or _sha(f"{repo}#{number}:head"),
            base_sha=base_sha or _sha(f"{repo}#{number}:base"),
            head_ref=head_ref,
            base_ref=base_ref or stored.default_branch,
            draft=draft,
            state=state,
            merged=merged,
            labels=list(labels),
            files=list(files),
            created_at=self._iso(),
        )
        stored.pulls[number] = pull
        stored.refs.update({pull.head_sha, pull.base_sha, pull.head_ref, pull.base_ref})
        return self._pull_json(stored, pull)

    def update_pull(self, repo: str, number: int, **changes: Any) -> dict[str, Any]:
        """Change a seeded pull request (e.g. `head_sha=` after a push, `files=`, `state=`)."""
        stored = self._repo(repo)
        pull = stored.pulls[number]
        for name, value in changes.items():
            if not hasattr(pull, name) or name.endswith("comments") or name == "reviews":
                raise TypeError(f"a pull request has no seedable field {name!r}")
            setattr(pull, name, list(value) if name in ("files", "labels") else value)
        stored.refs.update({pull.head_sha, pull.base_sha})
        self.pull_updates[(stored.full_name, pull.number)] = self._iso()
        return self._pull_json(stored, pull)

    def add_compare(
        self,
        repo: str,
        base: str,
        head: str,
        *,
        status: str = "ahead",
        files: Iterable[PullFile] = (),
    ) -> None:
        """What GET /compare/{base}...{head} answers: `status` is ahead, behind, diverged or
        identical. An unseeded comparison is a 404, as for a commit GitHub no longer has."""
        stored = self._repo(repo)
        stored.compares[(base, head)] = {"status": status, "files": list(files)}

    def add_file(
        self, repo: str, path: str, content: str | bytes, *, ref: str | None = None
    ) -> None:
        """A file at `ref` (a branch name or a commit sha; default: the default branch). On a
        branch it is a commit: the branch's head moves to a new sha (see `branch_head`)."""
        stored = self._repo(repo)
        ref = ref or stored.default_branch
        data = content.encode() if isinstance(content, str) else content
        stored.files[(ref, path.strip("/"))] = data
        stored.refs.add(ref)
        if not _is_sha(ref):
            self._commit(stored, ref)

    def set_default_branch(self, repo: str, branch: str, *, drop_old: bool = False) -> None:
        """The repository's default branch is now `branch` (another branch chosen; with
        `drop_old`, a rename: the old branch is gone); a branch that does not exist yet starts
        with a commit of its own."""
        stored = self._repo(repo)
        old, stored.default_branch = stored.default_branch, branch
        stored.refs.add(branch)
        if branch not in stored.heads:
            self._commit(stored, branch)
        if drop_old and old != branch:
            stored.heads.pop(old, None)

    def branch_head(self, repo: str, branch: str) -> str:
        """The sha of `branch`'s head commit (the default branch has one from the start)."""
        return self._repo(repo).heads[branch]

    def _commit(self, stored: _Repo, branch: str) -> None:
        """A new head for `branch`, holding a snapshot of the branch's files as they are now."""
        # Salted per fake: two tests' commits differ, as two real repositories' would.
        sha = _sha(f"{self._salt}:{stored.full_name}:{branch}:{next(self._ids)}")
        for (at, name), data in list(stored.files.items()):
            if at == branch:
                stored.files[(sha, name)] = data
        stored.heads[branch] = sha
        stored.refs.add(sha)

    def set_permission(self, repo: str, login: str, role: str) -> None:
        """A collaborator's role: admin, maintain, write, triage or read."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}")
        self._repo(repo).roles[login] = role

    def add_issue_comment(
        self,
        repo: str,
        number: int,
        body: str,
        *,
        author: str = "octocat",
        author_type: str = "User",
    ) -> dict[str, Any]:
        """A comment on the pull request's conversation, written by someone."""
        stored = self._repo(repo)
        return self._new_issue_comment(
            stored, stored.pulls[number], body, _user(author, author_type)
        )

    def add_review_comment(
        self,
        repo: str,
        number: int,
        *,
        path: str,
        line: int,
        body: str,
        author: str = "octocat",
        author_type: str = "User",
        side: str = "RIGHT",
        in_reply_to: int | None = None,
    ) -> dict[str, Any]:
        """An inline comment someone left on the diff (not checked against it)."""
        stored = self._repo(repo)
        pull = stored.pulls[number]
        comment = self._new_review_comment(
            stored,
            pull,
            {"path": path, "line": line, "side": side, "body": body},
            _user(author, author_type),
            review_id=None,
        )
        if in_reply_to is not None:
            comment["in_reply_to_id"] = in_reply_to
        return copy.deepcopy(comment)

    def add_review(
        self,
        repo: str,
        number: int,
        *,
        author: str,
        author_type: str = "User",
        state: str = "COMMENTED",
        body: str = "",
    ) -> dict[str, Any]:
        """A review someone left, without inline comments (state "PENDING": not yet submitted)."""
        stored = self._repo(repo)
        pull = stored.pulls[number]
        review_id = next(self._ids)
        review = {
            "id": review_id,
            "node_id": f"PRR_{review_id}",
            "user": _user(author, author_type),
            "body": body,
            "state": state,
            "html_url": f"{WEB}/{stored.full_name}/pull/{number}#pullrequestreview-{review_id}",
            "commit_id": pull.head_sha,
            "author_association": "NONE",
        }
        pull.reviews.append(review)
        return copy.deepcopy(review)

    def add_manifest_code(
        self,
        manifest: Mapping[str, Any],
        *,
        owner: str = "octocat",
        owner_type: str = "User",
        key: AppKey | None = None,
    ) -> str:
        """The code GitHub sends back after `owner` created an App from `manifest`; `key` is the
        App's key pair (default: a fresh one at conversion)."""
        code = secrets.token_hex(10)
        entry = (copy.deepcopy(dict(manifest)), _user(owner, owner_type), key, self.clock())
        self._manifest_codes[code] = entry
        return code

    # --- Scripted failures --------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        status: int = 502,
        *,
        times: int = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        if_body: Callable[[Any], bool] | None = None,
        landed: bool = False,
        after: float | None = None,
        until: asyncio.Event | None = None,
    ) -> None:
        """The next `times` requests matching `method` ("*": any), the glob `path` and, when
        given, `if_body` (called with the request's JSON body) get `status`, before any auth,
        with GitHub's JSON error body unless `body` is given. With `landed`, each is carried
        out first (a review is created, say) and only its answer is replaced. With `after`,
        the failure is answered that many seconds (real time) late; with `until`, once that
        event is set (at most `after`, 10 s by default)."""
        self._rules.append(
            _Rule(
                method,
                path,
                times,
                "status",
                status=status,
                body=body,
                headers=headers or {},
                if_body=if_body,
                landed=landed,
                seconds=after,
                until=until,
            )
        )

    def disconnect(
        self,
        method: str,
        path: str,
        *,
        times: int = 1,
        landed: bool = False,
        if_body: Callable[[Any], bool] | None = None,
    ) -> None:
        """Drop the connection without an answer (with `landed`, after carrying the request
        out). aiohttp's client itself resends an idempotent request (GET) once on a dropped
        connection: script two drops for one GET."""
        self._rules.append(_Rule(method, path, times, "disconnect", landed=landed, if_body=if_body))

    def delay(
        self,
        method: str,
        path: str,
        seconds: float,
        *,
        times: int = 1,
        landed: bool = False,
        if_body: Callable[[Any], bool] | None = None,
        until: asyncio.Event | None = None,
    ) -> None:
        """Answer normally, but only after `seconds` of real time (for client timeouts), or
        with `until`, once that event is set (at most `seconds`). With `landed` the request is
        carried out at once and only its answer waits: a client that gives up first finds the
        write done all the same."""
        self._rules.append(
            _Rule(
                method,
                path,
                times,
                "delay",
                seconds=seconds,
                landed=landed,
                if_body=if_body,
                until=until,
            )
        )

    def secondary_rate_limit(
        self,
        *,
        retry_after: float | None = 1,
        status: int = 403,
        method: str = "*",
        path: str = "*",
        times: int = 1,
    ) -> None:
        """The next matching request trips GitHub's secondary limit: `status` (403 or 429) with
        `Retry-After` (None: no header, GitHub then means "at least a minute"); every request
        before that time has passed by the fake's clock is refused the same way."""
        self._rules.append(
            _Rule(method, path, times, "secondary", status=status, seconds=retry_after)
        )

    def primary_rate_limit(self, reset_in: float) -> None:
        """The hourly budget is spent: 403 with `x-ratelimit-remaining: 0` for every call until
        `reset_in` seconds have passed by the fake's clock."""
        self._used = self.rate_limit
        self._window_reset = self.clock() + reset_in

    def revoke_tokens(self) -> None:
        """Every installation token issued so far stops working (401 Bad credentials)."""
        self._tokens.clear()

    # --- Reading back -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._requests)

    def arrived(self, method: str, path: str) -> int:
        """How many requests matching `method` ("*": any) and the glob `path` have arrived,
        answered or not: `requests` records a request only once it is answered, so this is how
        a test sees one that a `delay` is holding."""
        return sum(
            1
            for m, p in self._arrivals
            if (method == "*" or m == method.upper()) and fnmatch.fnmatchcase(p, path)
        )

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests whose method matches ("*": any) and whose path matches `path`
        (a glob: "/repos/o/r/pulls/1/files*")."""
        return [
            r
            for r in self._requests
            if (method == "*" or r.method == method.upper()) and fnmatch.fnmatchcase(r.path, path)
        ]

    def clear_requests(self) -> None:
        self._requests.clear()

    def reviews(self, repo: str, number: int) -> list[dict[str, Any]]:
        """Reviews as GitHub's API returns them, pending ones included (state "PENDING")."""
        return copy.deepcopy(self._repo(repo).pulls[number].reviews)

    def review_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        """Inline comments of submitted reviews, and replies, as GitHub's API returns them."""
        pull = self._repo(repo).pulls[number]
        return copy.deepcopy(self._visible_review_comments(pull))

    def delete_issue_comment(self, comment_id: int) -> None:
        """A conversation comment deleted by someone on GitHub (it 404s from then on)."""
        _, pull, comment = self._issue_comments.pop(comment_id)
        pull.issue_comments.remove(comment)

    def issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return copy.deepcopy(self._repo(repo).pulls[number].issue_comments)

    def statuses(self, repo: str, sha: str | None = None) -> list[dict[str, Any]]:
        """Commit statuses in the order they were set; each carries the fake's `sha` key too."""
        return [
            {**copy.deepcopy(status), "sha": at}
            for at, status in self._repo(repo).statuses
            if sha is None or at == sha
        ]

    def latest_states(self, repo: str) -> dict[str, str]:
        """Each commit's latest status state, by sha: what a poller looks at often, without
        copying every status (the fake shares its process with whoever polls it)."""
        return {at: status["state"] for at, status in self._repo(repo).statuses}

    def reactions(self, comment_id: int, *, inline: bool = False) -> list[str]:
        """The reactions' contents on a conversation comment (or an inline one)."""
        kind = "pulls" if inline else "issues"
        return [r["content"] for r in self._reactions.get((kind, comment_id), [])]

    # --- Routing ------------------------------------------------------------------------------

    def _routes(self, router: web.UrlDispatcher) -> None:
        repo = "/repos/{owner}/{name}"
        add = router.add_route
        add("POST", "/app/installations/{id}/access_tokens", self._access_token)
        add("POST", "/app-manifests/{code}/conversions", self._convert_manifest)
        add("GET", "/app", self._app)
        add("GET", f"{repo}/installation", self._installation)
        add("GET", "/user", self._user)
        add("GET", repo, self._get_repo)
        add("GET", f"{repo}/pulls/{{number}}", self._get_pull)
        add("GET", f"{repo}/pulls/{{number}}/files", self._pull_files)
        add("GET", f"{repo}/compare/{{basehead:.+}}", self._compare)
        add("GET", f"{repo}/contents/{{path:.*}}", self._contents)
        add("GET", f"{repo}/git/ref/heads/{{branch:.+}}", self._git_ref)
        add("GET", f"{repo}/pulls/{{number}}/reviews", self._list_reviews)
        add("POST", f"{repo}/pulls/{{number}}/reviews", self._create_review)
        add("DELETE", f"{repo}/pulls/{{number}}/reviews/{{review}}", self._delete_review)
        add("GET", f"{repo}/pulls/{{number}}/comments", self._list_review_comments)
        add("POST", f"{repo}/pulls/{{number}}/comments/{{comment}}/replies", self._reply)
        add("GET", f"{repo}/issues/{{number}}/comments", self._list_issue_comments)
        add("POST", f"{repo}/issues/{{number}}/comments", self._create_issue_comment)
        add("GET", f"{repo}/issues/comments/{{comment}}", self._get_issue_comment)
        add("PATCH", f"{repo}/issues/comments/{{comment}}", self._edit_issue_comment)
        add("POST", f"{repo}/statuses/{{sha}}", self._create_status)
        add("GET", f"{repo}/commits/{{ref}}/statuses", self._list_statuses)
        add("GET", f"{repo}/collaborators/{{user}}/permission", self._permission)
        add("POST", f"{repo}/issues/comments/{{comment}}/reactions", self._react_issue)
        add("POST", f"{repo}/pulls/comments/{{comment}}/reactions", self._react_pull)
        self._delivery_routes(router)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._arrivals.append((request.method, request.path))
        body = await request.read()
        exchange = self._exchanges[id(request)] = _Exchange()
        status: int | None = None
        try:
            response = await self._handle(request, handler, body)
            status = None if exchange.dropped else response.status
            return response
        finally:
            del self._exchanges[id(request)]
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query=dict(request.query),
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    status=status,
                    actor=exchange.label,
                    at=self.clock(),
                )
            )

    async def _handle(
        self, request: web.Request, handler: Handler, body: bytes
    ) -> web.StreamResponse:
        blocked = self._blocked()
        if blocked is not None:
            return blocked
        rule = next((r for r in self._rules if r.matches(request, body)), None)
        if rule is not None:
            rule.times -= 1
            if rule.landed:
                return await self._lose_answer(request, rule, await self._serve(request, handler))
            scripted = await self._scripted(request, rule)
            if scripted is not None:
                return scripted
        return await self._serve(request, handler)

    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The request as GitHub answers it: authenticated, counted, handled."""
        try:
            exchange = self._exchanges[id(request)]
            if _anonymous(request.path):  # GitHub wants no credentials for these
                return self._finish(request, await handler(request))
            exchange.label = "refused"
            actor = self._authenticate(request)
            exchange.actor, exchange.label = actor, actor.label
            self._check_rate_limits(actor)
            response = await handler(request)
        except _GitHubError as error:
            response = error.response()
        except web.HTTPNotFound:
            response = _not_found().response()
        except web.HTTPMethodNotAllowed:
            response = _not_found().response()
        return self._finish(request, response)

    def _finish(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """ETags and conditional GETs, and the headers every GitHub answer carries."""
        if (
            request.method == "GET"
            and response.status == 200
            and isinstance(response, web.Response)
            and isinstance(response.body, bytes)
        ):
            etag = f'W/"{hashlib.sha256(response.body).hexdigest()[:40]}"'
            if request.headers.get("If-None-Match") == etag:
                response = web.Response(status=304)
            response.headers["ETag"] = etag
        remaining = max(self.rate_limit - self._used, 0)
        response.headers.update(
            {
                "X-RateLimit-Limit": str(self.rate_limit),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Used": str(min(self._used, self.rate_limit)),
                "X-RateLimit-Reset": str(math.ceil(self._window_reset or self.clock() + 3600)),
                "X-RateLimit-Resource": "core",
                "X-GitHub-Request-Id": secrets.token_hex(8).upper(),
            }
        )
        return response

    def _blocked(self) -> web.Response | None:
        """While a secondary rate limit lasts, every request is refused the same way."""
        now = self.clock()
        if now < self._blocked_until:
            return self._secondary_response(self._blocked_status, self._blocked_until - now)
        return None

    async def _scripted(self, request: web.Request, rule: _Rule) -> web.StreamResponse | None:
        """A scripted failure instead of the request (None: a delay, then the real answer)."""
        if rule.kind == "disconnect":
            return self._drop(request)
        if rule.kind == "delay":
            await rule.wait()
            return None
        if rule.kind == "secondary":
            wait = rule.seconds if rule.seconds is not None else 60.0
            self._blocked_until = self.clock() + wait
            self._blocked_status = rule.status
            return self._secondary_response(rule.status, rule.seconds)
        await rule.wait()
        return self._failure(rule)

    async def _lose_answer(
        self, request: web.Request, rule: _Rule, answer: web.StreamResponse
    ) -> web.StreamResponse:
        """The request was carried out; what the client gets instead of `answer`."""
        if rule.kind == "disconnect":
            return self._drop(request)
        if rule.kind == "delay":
            await rule.wait()  # cancelled when the client gives up
            return answer
        await rule.wait()
        return self._failure(rule)

    def _drop(self, request: web.Request) -> web.Response:
        self._exchanges[id(request)].dropped = True
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)

    def _failure(self, rule: _Rule) -> web.Response:
        if rule.body is not None:
            return web.json_response(rule.body, status=rule.status, headers=rule.headers)
        phrase = "Server Error" if rule.status >= 500 else "Scripted failure"
        error = _GitHubError(rule.status, phrase, headers=rule.headers)
        return error.response()

    def _secondary_response(self, status: int, retry_after: float | None) -> web.Response:
        headers = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
        return _GitHubError(
            status,
            SECONDARY_LIMIT_MESSAGE,
            docs=f"{RATE_DOCS}#about-secondary-rate-limits",
            headers=headers,
        ).response()

    def _check_rate_limits(self, actor: _Actor) -> None:
        now = self.clock()
        if now >= self._window_reset:
            self._used, self._window_reset = 0, now + 3600
        if self._used < self.rate_limit:
            self._used += 1
            return
        who = f"installation ID {actor.installation_id}" if actor.installation_id else "user"
        raise _GitHubError(
            403,
            f"API rate limit exceeded for {who}.",
            docs=f"{RATE_DOCS}#about-the-primary-rate-limits",
        )

    # --- Authentication -----------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> _Actor:
        _, _, credential = request.headers.get("Authorization", "").partition(" ")
        if not credential:
            raise _GitHubError(401, "Requires authentication")
        if _wants_jwt(request.path):
            return self._check_jwt(credential.strip())
        credential = credential.strip()
        if self.token is not None and secrets.compare_digest(credential, self.token):
            return _Actor("token", self.token_login, "User")
        minted = self._tokens.get(credential)
        if minted is None or minted.expires_at <= self.clock():
            raise _GitHubError(401, "Bad credentials")
        return _Actor("installation", f"{self.app_slug}[bot]", "Bot", minted.installation_id)

    def _check_jwt(self, token: str) -> _Actor:
        if self._public_key is None or self.app_id is None:
            raise _GitHubError(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise _GitHubError(401, "A JSON web token could not be decoded") from None
        now = self.clock()
        issued, expires = claims.get("iat"), claims.get("exp")
        if not isinstance(issued, int) or issued > now:
            raise _GitHubError(
                401,
                "'Issued at' claim ('iat') must be an Integer representing the time that the "
                "assertion was issued",
            )
        if not isinstance(expires, int | float) or expires <= now:
            raise _GitHubError(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the future "
                "time at which the assertion expires",
            )
        if expires - now > JWT_MAX_LIFETIME:
            raise _GitHubError(401, "'Expiration time' claim ('exp') is too far in the future")
        if str(claims.get("iss")) != self.app_id:
            raise _GitHubError(401, "A JSON web token could not be decoded")
        return _Actor("app", f"{self.app_slug}[bot]", "Bot")

    def _actor(self, request: web.Request) -> _Actor:
        actor = self._exchanges[id(request)].actor
        assert actor is not None, "handlers run after authentication"
        return actor

    def _access(self, request: web.Request) -> _Repo:
        """The repository of the URL, if this caller may see it (GitHub says 404 otherwise)."""
        stored = self._repos.get(
            f"{request.match_info['owner']}/{request.match_info['name']}".lower()
        )
        actor = self._actor(request)
        if stored is None:
            raise _not_found()
        if actor.kind == "installation" and stored.installation_id != actor.installation_id:
            raise _not_found()
        if actor.kind == "app":
            raise _GitHubError(401, "A JSON web token cannot be used for this endpoint")
        return stored

    def _pull_of(self, request: web.Request) -> tuple[_Repo, _Pull]:
        stored = self._access(request)
        pull = stored.pulls.get(_int(request.match_info["number"]))
        if pull is None:
            raise _not_found()
        return stored, pull

    # --- App endpoints ------------------------------------------------------------------------

    async def _access_token(self, request: web.Request) -> web.Response:
        installation_id = _int(request.match_info["id"])
        if installation_id not in {r.installation_id for r in self._repos.values()}:
            raise _not_found()
        alphabet = string.ascii_letters + string.digits
        token = "ghs_" + "".join(secrets.choice(alphabet) for _ in range(36))
        minted = MintedToken(installation_id, token, self.clock() + self.token_lifetime)
        self._tokens[token] = minted
        self.minted.append(minted)
        body = {
            "token": token,
            "expires_at": _iso(minted.expires_at),
            "permissions": {
                "contents": "read",
                "issues": "write",
                "metadata": "read",
                "pull_requests": "write",
                "statuses": "write",
            },
            "repository_selection": "selected",
        }
        return web.json_response(body, status=201)

    async def _app(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": int(self.app_id or 0),
                "slug": self.app_slug,
                "name": self.app_slug.title(),
                "owner": {"login": "arbiter-review", "type": "Organization"},
                "html_url": f"{WEB}/apps/{self.app_slug}",
            }
        )

    async def _installation(self, request: web.Request) -> web.Response:
        name = f"{request.match_info['owner']}/{request.match_info['name']}".lower()
        stored = self._repos.get(name)
        if stored is None or stored.installation_id is None:
            raise _not_found()
        return web.json_response(
            {
                "id": stored.installation_id,
                "app_id": int(self.app_id or 0),
                "app_slug": self.app_slug,
                "account": {"login": stored.full_name.split("/")[0]},
                "repository_selection": "selected",
            }
        )

    async def _user(self, request: web.Request) -> web.Response:
        actor = self._actor(request)
        if actor.kind != "token":
            raise _GitHubError(403, "Resource not accessible by integration")
        return web.json_response(_user(actor.login, actor.type))

    async def _convert_manifest(self, request: web.Request) -> web.Response:
        entry = self._manifest_codes.pop(request.match_info["code"], None)
        if entry is None or self.clock() - entry[3] > MANIFEST_CODE_LIFETIME:
            raise _not_found()
        manifest, owner, key, _ = entry
        key = key or AppKey.generate()
        app_id = next(self._ids)
        name = str(manifest.get("name") or f"app-{app_id}")
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or f"app-{app_id}"
        hook = manifest.get("hook_attributes")
        body = {
            "id": app_id,
            "slug": slug,
            "node_id": f"A_kwD{app_id:08d}",
            "owner": owner,
            "name": name,
            "description": manifest.get("description") or "",
            "external_url": manifest.get("url"),
            "html_url": f"{WEB}/apps/{slug}",
            "created_at": self._iso(),
            "updated_at": self._iso(),
            "permissions": {"metadata": "read", **(manifest.get("default_permissions") or {})},
            "events": list(manifest.get("default_events") or []),
            "installations_count": 0,
            "client_id": f"Iv23li{secrets.token_hex(7)}",
            "client_secret": secrets.token_hex(20),
            # GitHub makes a webhook secret only for an App with a webhook.
            "webhook_secret": secrets.token_hex(20) if isinstance(hook, dict) else None,
            "pem": key.private_pem,
        }
        self.created_apps.append(copy.deepcopy(body))
        self.app_id, self.app_slug, self._public_key = str(app_id), slug, key.public_pem
        return web.json_response(body, status=201)

    # --- Repository and pull request ----------------------------------------------------------

    async def _get_repo(self, request: web.Request) -> web.Response:
        return web.json_response(self._repo_json(self._access(request)))

    async def _get_pull(self, request: web.Request) -> web.Response:
        stored, pull = self._pull_of(request)
        return web.json_response(self._pull_json(stored, pull))

    async def _pull_files(self, request: web.Request) -> web.Response:
        stored, pull = self._pull_of(request)
        files = [self._file_json(stored, pull.head_sha, f) for f in pull.files[:MAX_PR_FILES]]
        return self._page(request, files)

    async def _compare(self, request: web.Request) -> web.Response:
        stored = self._access(request)
        base, sep, head = request.match_info["basehead"].partition("...")
        seeded = stored.compares.get((base, head)) if sep else None
        if seeded is None:
            raise _not_found()
        files = [self._file_json(stored, head, f) for f in seeded["files"][:MAX_COMPARE_FILES]]
        status = seeded["status"]
        return web.json_response(
            {
                "url": f"{self.url}/repos/{stored.full_name}/compare/{base}...{head}",
                "html_url": f"{WEB}/{stored.full_name}/compare/{base}...{head}",
                "status": status,
                "ahead_by": 0 if status in ("behind", "identical") else 1,
                "behind_by": 1 if status in ("behind", "diverged") else 0,
                "total_commits": 0 if status == "identical" else 1,
                "base_commit": {"sha": base},
                "merge_base_commit": {"sha": base},
                "commits": [],
                "files": files,
            }
        )

    async def _contents(self, request: web.Request) -> web.Response:
        stored = self._access(request)
        path = request.match_info["path"].strip("/")
        ref = request.query.get("ref") or stored.default_branch
        if ref not in stored.refs:
            raise _GitHubError(404, f"No commit found for the ref {ref}")
        data = stored.files.get((ref, path))
        if data is None:
            listing = self._listing(stored, ref, path)
            if not listing:
                raise _not_found()
            return web.json_response(listing)
        accept = request.headers.get("Accept", "")
        if re.search(r"vnd\.github(\.v3)?\.raw", accept):
            return web.Response(body=data, content_type="text/plain", charset="utf-8")
        return web.json_response(self._content_json(stored, ref, path, data))

    async def _git_ref(self, request: web.Request) -> web.Response:
        stored = self._access(request)
        branch = request.match_info["branch"]
        sha = stored.heads.get(branch)
        if sha is None:
            raise _not_found()
        api = f"{self.url}/repos/{stored.full_name}/git"
        return web.json_response(
            {
                "ref": f"refs/heads/{branch}",
                "node_id": f"REF_{_sha(branch)[:12]}",
                "url": f"{api}/refs/heads/{branch}",
                "object": {"sha": sha, "type": "commit", "url": f"{api}/commits/{sha}"},
            }
        )

    def _listing(self, stored: _Repo, ref: str, path: str) -> list[dict[str, Any]]:
        prefix = f"{path}/" if path else ""
        entries: dict[str, dict[str, Any]] = {}
        for (at, name), data in stored.files.items():
            if at != ref or not name.startswith(prefix):
                continue
            child, _, deeper = name[len(prefix) :].partition("/")
            kind = "dir" if deeper else "file"
            entries.setdefault(
                child,
                {
                    "type": kind,
                    "name": child,
                    "path": prefix + child,
                    "size": 0 if deeper else len(data),
                },
            )
        return [entries[name] for name in sorted(entries)]

    def _content_json(self, stored: _Repo, ref: str, path: str, data: bytes) -> dict[str, Any]:
        inline = len(data) <= MAX_INLINE_CONTENT
        encoded = base64.b64encode(data).decode() if inline else ""
        api = f"{self.url}/repos/{stored.full_name}/contents/{path}?ref={ref}"
        return {
            "type": "file",
            "encoding": "base64" if inline else "none",
            "size": len(data),
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "content": "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)),
            "sha": _blob_sha(data),
            "url": api,
            "html_url": f"{WEB}/{stored.full_name}/blob/{ref}/{path}",
            "download_url": f"https://raw.githubusercontent.com/{stored.full_name}/{ref}/{path}",
            "_links": {"self": api},
        }

    # --- Reviews -----------------------------------------------------------------------------

    async def _list_reviews(self, request: web.Request) -> web.Response:
        _, pull = self._pull_of(request)
        actor = self._actor(request)
        visible = [
            r for r in pull.reviews if r["state"] != "PENDING" or r["user"]["login"] == actor.login
        ]
        return self._page(request, visible)

    async def _create_review(self, request: web.Request) -> web.Response:
        stored, pull = self._pull_of(request)
        actor = self._actor(request)
        data = await _json_body(request)
        event = data.get("event")
        states = {
            "COMMENT": "COMMENTED",
            "APPROVE": "APPROVED",
            "REQUEST_CHANGES": "CHANGES_REQUESTED",
        }
        if event is not None and event not in states:
            raise _GitHubError(
                422,
                "Validation Failed",
                errors=[{"resource": "PullRequestReview", "field": "event", "code": "invalid"}],
                docs=REVIEW_DOCS,
            )
        mine = [
            r for r in pull.reviews if r["state"] == "PENDING" and r["user"]["login"] == actor.login
        ]
        if event is None and mine:
            raise _GitHubError(
                422, "Unprocessable Entity", errors=[ONE_PENDING_REVIEW], docs=REVIEW_DOCS
            )
        comments = data.get("comments") or []
        for comment in comments:
            problem = _placement_problem(pull, comment)
            if problem is not None:
                raise _GitHubError(422, "Unprocessable Entity", errors=[problem], docs=REVIEW_DOCS)
        review_id = next(self._ids)
        user = _user(actor.login, actor.type)
        web_url = f"{WEB}/{stored.full_name}/pull/{pull.number}"
        review: dict[str, Any] = {
            "id": review_id,
            "node_id": f"PRR_{review_id}",
            "user": user,
            "body": data.get("body") or "",
            "state": "PENDING" if event is None else states[event],
            "html_url": f"{web_url}#pullrequestreview-{review_id}",
            "pull_request_url": f"{self.url}/repos/{stored.full_name}/pulls/{pull.number}",
            "commit_id": data.get("commit_id") or pull.head_sha,
            "author_association": "NONE",
        }
        if event is not None:
            review["submitted_at"] = self._iso()
        pull.reviews.append(review)
        for comment in comments:
            self._new_review_comment(stored, pull, comment, user, review_id=review_id)
        return web.json_response(review)

    async def _delete_review(self, request: web.Request) -> web.Response:
        _, pull = self._pull_of(request)
        review_id = _int(request.match_info["review"])
        review = next((r for r in pull.reviews if r["id"] == review_id), None)
        if review is None:
            raise _not_found()
        if review["state"] != "PENDING":
            raise _GitHubError(
                422, "Unprocessable Entity", errors=["Can not delete a non-pending review"]
            )
        pull.reviews.remove(review)
        pull.review_comments = [
            c for c in pull.review_comments if c.get("pull_request_review_id") != review_id
        ]
        return web.json_response(review)

    async def _list_review_comments(self, request: web.Request) -> web.Response:
        _, pull = self._pull_of(request)
        return self._page(request, self._visible_review_comments(pull))

    async def _reply(self, request: web.Request) -> web.Response:
        stored, pull = self._pull_of(request)
        actor = self._actor(request)
        target = self._review_comments.get(_int(request.match_info["comment"]))
        if target is None or target[1] is not pull:
            raise _not_found()
        parent = target[2]
        if parent.get("in_reply_to_id"):  # GitHub documents replies to replies as unsupported
            raise _GitHubError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "PullRequestReviewComment",
                        "code": "invalid",
                        "field": "in_reply_to_id",
                    }
                ],
            )
        data = await _json_body(request)
        fields = {k: parent.get(k) for k in ("path", "line", "side", "start_line", "start_side")}
        comment = self._new_review_comment(
            stored,
            pull,
            {**fields, "body": data.get("body") or ""},
            _user(actor.login, actor.type),
            review_id=next(self._ids),
        )
        comment["in_reply_to_id"] = parent["id"]
        return web.json_response(comment, status=201)

    # --- Conversation comments ----------------------------------------------------------------

    async def _list_issue_comments(self, request: web.Request) -> web.Response:
        _, pull = self._pull_of(request)
        return self._page(request, pull.issue_comments)

    async def _create_issue_comment(self, request: web.Request) -> web.Response:
        stored, pull = self._pull_of(request)
        actor = self._actor(request)
        body = (await _json_body(request)).get("body")
        if not body:
            raise _GitHubError(
                422,
                "Validation Failed",
                errors=[{"resource": "IssueComment", "code": "missing_field", "field": "body"}],
            )
        comment = self._new_issue_comment(stored, pull, body, _user(actor.login, actor.type))
        return web.json_response(comment, status=201)

    async def _get_issue_comment(self, request: web.Request) -> web.Response:
        return web.json_response(self._issue_comment_of(request))

    async def _edit_issue_comment(self, request: web.Request) -> web.Response:
        comment = self._issue_comment_of(request)
        body = (await _json_body(request)).get("body")
        if not body:
            raise _GitHubError(
                422,
                "Validation Failed",
                errors=[{"resource": "IssueComment", "code": "missing_field", "field": "body"}],
            )
        comment["body"] = body
        comment["updated_at"] = self._iso()
        return web.json_response(comment)

    def _issue_comment_of(self, request: web.Request) -> dict[str, Any]:
        stored = self._access(request)
        found = self._issue_comments.get(_int(request.match_info["comment"]))
        if found is None or found[0] is not stored:
            raise _not_found()
        return found[2]

    # --- Statuses, permissions, reactions -----------------------------------------------------

    async def _create_status(self, request: web.Request) -> web.Response:
        stored = self._access(request)
        actor = self._actor(request)
        data = await _json_body(request)
        state, description = data.get("state"), data.get("description")
        if state not in ("error", "failure", "pending", "success"):
            raise _status_invalid("state", "state is not included in the list")
        if description is not None and len(description) > 140:
            raise _status_invalid(
                "description", "description is too long (maximum is 140 characters)"
            )
        status_id = next(self._ids)
        sha = request.match_info["sha"]
        status = {
            "id": status_id,
            "url": f"{self.url}/repos/{stored.full_name}/statuses/{sha}",
            "state": state,
            "description": description,
            "target_url": data.get("target_url"),
            "context": data.get("context") or "default",
            "created_at": self._iso(),
            "updated_at": self._iso(),
            "creator": _user(actor.login, actor.type),
        }
        stored.statuses.append((sha, status))
        return web.json_response(status, status=201)

    async def _list_statuses(self, request: web.Request) -> web.Response:
        stored = self._access(request)
        sha = request.match_info["ref"]
        found = [status for at, status in reversed(stored.statuses) if at == sha]
        return self._page(request, found)

    async def _permission(self, request: web.Request) -> web.Response:
        stored = self._access(request)
        login = request.match_info["user"]
        role = stored.roles.get(login)
        if role is None:  # not a collaborator: what anyone may do
            role = "none" if stored.private else "read"
        return web.json_response(
            {"permission": ROLES.get(role, "none"), "role_name": role, "user": _user(login, "User")}
        )

    async def _react_issue(self, request: web.Request) -> web.Response:
        comment = self._issue_comment_of(request)
        return await self._react(request, ("issues", comment["id"]))

    async def _react_pull(self, request: web.Request) -> web.Response:
        stored = self._access(request)
        found = self._review_comments.get(_int(request.match_info["comment"]))
        if found is None or found[0] is not stored:
            raise _not_found()
        return await self._react(request, ("pulls", found[2]["id"]))

    async def _react(self, request: web.Request, key: tuple[str, int]) -> web.Response:
        actor = self._actor(request)
        content = (await _json_body(request)).get("content")
        if content not in REACTIONS:
            raise _GitHubError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "Reaction",
                        "code": "custom",
                        "field": "content",
                        "message": "content is not included in the list",
                    }
                ],
            )
        existing = self._reactions.setdefault(key, [])
        for reaction in existing:
            if reaction["content"] == content and reaction["user"]["login"] == actor.login:
                return web.json_response(reaction)  # GitHub: 200 for a reaction already there
        reaction = {
            "id": next(self._ids),
            "content": content,
            "user": _user(actor.login, actor.type),
            "created_at": self._iso(),
        }
        existing.append(reaction)
        return web.json_response(reaction, status=201)

    # --- Webhook deliveries: the App's hook and repository hooks -------------------------------
    # GitHub keeps every delivery attempt (newest first in its listings) and never retries a
    # failed one by itself. Asked to, it sends the same payload again with the same
    # X-GitHub-Delivery (the item's `guid`), and lists that as a new item with `redelivery`.

    def set_app_webhook(self, url: str | None, secret: str | None) -> None:
        """Where the App's webhook sends (its URL and secret, as set in the App's settings)."""
        hook = self._hooks[APP_HOOK_ID]
        hook.url, hook.secret = url, secret

    def add_repo_hook(self, repo: str, hook_id: int, url: str, secret: str | None) -> None:
        """A repository webhook (token mode)."""
        self._repo(repo)
        self._hooks[hook_id] = _Hook(hook_id, repo, url, secret)

    def record_delivery(
        self,
        event: str,
        payload: Mapping[str, Any],
        *,
        status_code: int = 502,
        hook_id: int = APP_HOOK_ID,
        guid: str | None = None,
        at: float | None = None,
    ) -> dict[str, Any]:
        """A delivery GitHub made without the test's receiver seeing it (Arbiter was down,
        a proxy answered `status_code`; 0: no connection), recorded as GitHub records it."""
        hook = self._hooks[hook_id]
        guid = guid or str(uuid.uuid4())
        hook.payloads[guid] = (event, copy.deepcopy(dict(payload)))
        return self._record_attempt(hook, guid, status_code, at=at, redelivery=False)

    async def deliver(
        self, event: str, payload: Mapping[str, Any], *, hook_id: int = APP_HOOK_ID
    ) -> dict[str, Any]:
        """Send a webhook now, signed, to the hook's URL, and record the attempt."""
        hook = self._hooks[hook_id]
        guid = str(uuid.uuid4())
        hook.payloads[guid] = (event, copy.deepcopy(dict(payload)))
        return await self._send(hook, guid, redelivery=False)

    def deliveries(self, hook_id: int = APP_HOOK_ID) -> list[dict[str, Any]]:
        """The hook's delivery items, newest first, as GitHub lists them."""
        return copy.deepcopy(list(reversed(self._hooks[hook_id].deliveries)))

    async def sent(self) -> None:
        """Wait until every redelivery asked for so far has been sent."""
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    def _record_attempt(
        self, hook: _Hook, guid: str, status_code: int, *, at: float | None, redelivery: bool
    ) -> dict[str, Any]:
        event, payload = hook.payloads[guid]
        installation = payload.get("installation") or {}
        repository = payload.get("repository") or {}
        ok = 200 <= status_code < 300
        status = "OK" if ok else f"Invalid HTTP Response: {status_code}"
        if status_code == 0:
            status = "failed to connect to host"
        item = {
            "id": next(self._delivery_ids),
            "guid": guid,
            "delivered_at": _iso(self.clock() if at is None else at),
            "redelivery": redelivery,
            "duration": 0.05,
            "status": status,
            "status_code": status_code,
            "event": event,
            "action": payload.get("action"),
            "installation_id": installation.get("id") if hook.repo is None else None,
            "repository_id": repository.get("id"),
            "throttled_at": None,
        }
        hook.deliveries.append(item)
        return copy.deepcopy(item)

    async def _send(self, hook: _Hook, guid: str, *, redelivery: bool) -> dict[str, Any]:
        event, payload = hook.payloads[guid]
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": HOOKSHOT,
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": guid,
            "X-GitHub-Hook-ID": str(hook.hook_id),
        }
        if hook.repo is None:
            headers["X-GitHub-Hook-Installation-Target-Type"] = "integration"
            headers["X-GitHub-Hook-Installation-Target-ID"] = str(self.app_id or "")
        if hook.secret:
            key = hook.secret.encode()
            headers["X-Hub-Signature-256"] = (
                "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            )
            headers["X-Hub-Signature"] = "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest()
        status = 0
        if hook.url is not None:
            if self._sender is None:
                self._sender = aiohttp.ClientSession()
            try:
                async with self._sender.post(
                    hook.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                ) as answer:
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
        return self._record_attempt(hook, guid, status, at=None, redelivery=redelivery)

    async def _stop_sending(self) -> None:
        await self.sent()
        if self._sender is not None:
            await self._sender.close()
            self._sender = None

    def _delivery_routes(self, router: web.UrlDispatcher) -> None:
        repo_hook = "/repos/{owner}/{name}/hooks/{hook}/deliveries"
        add = router.add_route
        add("GET", "/app/hook/deliveries", self._list_app_deliveries)
        add("GET", "/app/hook/deliveries/{delivery}", self._get_app_delivery)
        add("POST", "/app/hook/deliveries/{delivery}/attempts", self._redeliver_app)
        add("GET", repo_hook, self._list_repo_deliveries)
        add("POST", f"{repo_hook}/{{delivery}}/attempts", self._redeliver_repo)
        add("GET", "/repos/{owner}/{name}/pulls", self._list_pulls)

    def _repo_hook(self, request: web.Request) -> _Hook:
        stored = self._access(request)
        if self._actor(request).kind != "token":  # an installation may not manage webhooks
            raise _GitHubError(403, "Resource not accessible by integration")
        hook = self._hooks.get(_int(request.match_info["hook"]))
        if hook is None or hook.repo is None or hook.repo.lower() != stored.full_name.lower():
            raise _not_found()
        return hook

    async def _list_app_deliveries(self, request: web.Request) -> web.Response:
        return self._delivery_page(request, self._hooks[APP_HOOK_ID])

    async def _list_repo_deliveries(self, request: web.Request) -> web.Response:
        return self._delivery_page(request, self._repo_hook(request))

    def _delivery_page(self, request: web.Request, hook: _Hook) -> web.Response:
        """One page, newest first; the next page's `cursor` is in the Link header."""
        per_page = min(max(_int(request.query.get("per_page", "30")), 1), 100)
        items = list(reversed(hook.deliveries))
        redelivery = request.query.get("redelivery")
        if redelivery is not None:
            items = [i for i in items if i["redelivery"] == (redelivery.lower() == "true")]
        cursor = request.query.get("cursor")
        if cursor is not None:
            match = re.fullmatch(r"v1_(\d+)", cursor)
            if match is None:
                raise _GitHubError(400, "Invalid cursor")
            items = [i for i in items if i["id"] < int(match[1])]
        page, rest = items[:per_page], items[per_page:]
        headers = {}
        if rest and page:
            query = {**request.query, "per_page": str(per_page), "cursor": f"v1_{page[-1]['id']}"}
            headers["Link"] = f'<{self.url}{request.path}?{urlencode(query)}>; rel="next"'
        return web.json_response(page, headers=headers)

    async def _get_app_delivery(self, request: web.Request) -> web.Response:
        hook = self._hooks[APP_HOOK_ID]
        item = self._delivery_of(hook, request)
        event, payload = hook.payloads[item["guid"]]
        return web.json_response(
            {
                **item,
                "url": hook.url,
                "request": {"headers": {"X-GitHub-Event": event}, "payload": payload},
                "response": {"headers": {}, "payload": None},
            }
        )

    async def _redeliver_app(self, request: web.Request) -> web.Response:
        return self._redeliver(request, self._hooks[APP_HOOK_ID])

    async def _redeliver_repo(self, request: web.Request) -> web.Response:
        return self._redeliver(request, self._repo_hook(request))

    def _delivery_of(self, hook: _Hook, request: web.Request) -> dict[str, Any]:
        wanted = _int(request.match_info["delivery"])
        item = next((i for i in hook.deliveries if i["id"] == wanted), None)
        if item is None:
            raise _not_found()
        return item

    def _redeliver(self, request: web.Request, hook: _Hook) -> web.Response:
        """202 at once; the payload goes out again right after, as on GitHub."""
        item = self._delivery_of(hook, request)
        self.redelivery_requests.append(item["id"])
        task = asyncio.get_running_loop().create_task(
            self._resend(hook, item["guid"]), name=f"redeliver-{item['id']}"
        )
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return web.json_response({}, status=202)

    async def _resend(self, hook: _Hook, guid: str) -> None:
        await self._send(hook, guid, redelivery=True)

    async def _list_pulls(self, request: web.Request) -> web.Response:
        """GET /repos/{o}/{r}/pulls: `state` (open, closed, all), `sort` (created, updated),
        `direction` (desc by default for created, else asc), paged."""
        stored = self._access(request)
        state = request.query.get("state", "open")
        pulls = [self._pull_json(stored, p) for p in stored.pulls.values()]
        if state != "all":
            pulls = [p for p in pulls if p["state"] == state]
        sort = request.query.get("sort", "created")
        if sort not in ("created", "updated", "popularity", "long-running"):
            raise _GitHubError(422, "Validation Failed", errors=[{"field": "sort"}])
        key = "updated_at" if sort == "updated" else "created_at"
        default = "desc" if sort == "created" else "asc"
        descending = request.query.get("direction", default) == "desc"
        pulls.sort(key=lambda p: (p[key], p["number"]), reverse=descending)
        return self._page(request, pulls)

    # --- Shapes -------------------------------------------------------------------------------

    def _repo(self, full_name: str) -> _Repo:
        try:
            return self._repos[full_name.lower()]
        except KeyError:
            raise KeyError(f"seed the repository first: add_repo({full_name!r})") from None

    def _repo_json(self, stored: _Repo) -> dict[str, Any]:
        owner, name = stored.full_name.split("/", 1)
        return {
            "id": stored.id,
            "node_id": f"R_{stored.id}",
            "name": name,
            "full_name": stored.full_name,
            "private": stored.private,
            "owner": _user(owner, "Organization"),
            "html_url": f"{WEB}/{stored.full_name}",
            "url": f"{self._url or ''}/repos/{stored.full_name}",
            "default_branch": stored.default_branch,
        }

    def _pull_json(self, stored: _Repo, pull: _Pull) -> dict[str, Any]:
        repo = self._repo_json(stored)
        counts = [f.counts() for f in pull.files]
        return {
            "url": f"{self._url or ''}/repos/{stored.full_name}/pulls/{pull.number}",
            "id": stored.id * 100000 + pull.number,
            "node_id": f"PR_{stored.id}_{pull.number}",
            "html_url": f"{WEB}/{stored.full_name}/pull/{pull.number}",
            "number": pull.number,
            "state": "closed" if pull.merged else pull.state,
            "locked": False,
            "title": pull.title,
            "user": pull.author,
            "body": pull.body,
            "labels": [
                {"id": i + 1, "name": label, "color": "ededed"}
                for i, label in enumerate(pull.labels)
            ],
            "draft": pull.draft,
            "merged": pull.merged,
            "merged_at": pull.created_at if pull.merged else None,
            "created_at": pull.created_at,
            "updated_at": self.pull_updates.get((stored.full_name, pull.number), pull.created_at),
            "head": {
                "label": f"{repo['owner']['login']}:{pull.head_ref}",
                "ref": pull.head_ref,
                "sha": pull.head_sha,
                "user": repo["owner"],
                "repo": repo,
            },
            "base": {
                "label": f"{repo['owner']['login']}:{pull.base_ref}",
                "ref": pull.base_ref,
                "sha": pull.base_sha,
                "user": repo["owner"],
                "repo": repo,
            },
            "author_association": "CONTRIBUTOR",
            "commits": 1,
            "additions": sum(a for a, _ in counts),
            "deletions": sum(d for _, d in counts),
            "changed_files": len(pull.files),
        }

    def _file_json(self, stored: _Repo, ref: str, seeded: PullFile) -> dict[str, Any]:
        additions, deletions = seeded.counts()
        blob = f"{WEB}/{stored.full_name}/blob/{ref}/{seeded.filename}"
        api = f"{self.url}/repos/{stored.full_name}"
        data: dict[str, Any] = {
            "sha": _sha(f"{ref}:{seeded.filename}"),
            "filename": seeded.filename,
            "status": seeded.status,
            "additions": additions,
            "deletions": deletions,
            "changes": additions + deletions,
            "blob_url": blob,
            "raw_url": blob.replace("/blob/", "/raw/", 1),
            "contents_url": f"{api}/contents/{seeded.filename}?ref={ref}",
        }
        if seeded.patch is not None:
            data["patch"] = seeded.patch
        if seeded.previous_filename is not None:
            data["previous_filename"] = seeded.previous_filename
        return data

    def _new_issue_comment(
        self, stored: _Repo, pull: _Pull, body: str, user: dict[str, Any]
    ) -> dict[str, Any]:
        comment_id = next(self._ids)
        comment = {
            "id": comment_id,
            "node_id": f"IC_{comment_id}",
            "url": f"{self._url or ''}/repos/{stored.full_name}/issues/comments/{comment_id}",
            "html_url": f"{WEB}/{stored.full_name}/pull/{pull.number}#issuecomment-{comment_id}",
            "issue_url": f"{self._url or ''}/repos/{stored.full_name}/issues/{pull.number}",
            "body": body,
            "user": user,
            "created_at": self._iso(),
            "updated_at": self._iso(),
            "author_association": "NONE",
        }
        pull.issue_comments.append(comment)
        self._issue_comments[comment_id] = (stored, pull, comment)
        return comment

    def _new_review_comment(
        self,
        stored: _Repo,
        pull: _Pull,
        fields: Mapping[str, Any],
        user: dict[str, Any],
        *,
        review_id: int | None,
    ) -> dict[str, Any]:
        comment_id = next(self._ids)
        side = fields.get("side") or "RIGHT"
        start = fields.get("start_line")
        comment = {
            "id": comment_id,
            "node_id": f"PRRC_{comment_id}",
            "pull_request_review_id": review_id,
            "diff_hunk": "",
            "path": fields.get("path"),
            "commit_id": pull.head_sha,
            "original_commit_id": pull.head_sha,
            "user": user,
            "body": fields.get("body") or "",
            "created_at": self._iso(),
            "updated_at": self._iso(),
            "html_url": f"{WEB}/{stored.full_name}/pull/{pull.number}#discussion_r{comment_id}",
            "pull_request_url": f"{self._url or ''}/repos/{stored.full_name}/pulls/{pull.number}",
            "author_association": "NONE",
            "line": fields.get("line"),
            "original_line": fields.get("line"),
            "side": side,
            "start_line": start,
            "original_start_line": start,
            "start_side": (fields.get("start_side") or side) if start is not None else None,
            "subject_type": "line",
        }
        pull.review_comments.append(comment)
        self._review_comments[comment_id] = (stored, pull, comment)
        return comment

    def _visible_review_comments(self, pull: _Pull) -> list[dict[str, Any]]:
        pending = pull.pending_review_ids()
        return [c for c in pull.review_comments if c.get("pull_request_review_id") not in pending]

    def _page(self, request: web.Request, items: list[Any]) -> web.Response:
        """One page of `items`, with GitHub's Link header (per_page at most 100, default 30)."""
        per_page = min(max(_int(request.query.get("per_page", "30")), 1), 100)
        page = max(_int(request.query.get("page", "1")), 1)
        last = max(math.ceil(len(items) / per_page), 1)
        chunk = items[(page - 1) * per_page : page * per_page]

        def link(number: int, rel: str) -> str:
            query = {**request.query, "per_page": str(per_page), "page": str(number)}
            return f'<{self.url}{request.path}?{urlencode(query)}>; rel="{rel}"'

        links = []
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        headers = {"Link": ", ".join(links)} if links else {}
        return web.json_response(chunk, headers=headers)

    def _iso(self) -> str:
        return _iso(self.clock())


# --- Small pure helpers ---------------------------------------------------------------------------


def _anonymous(path: str) -> bool:
    return re.fullmatch(r"/app-manifests/[^/]+/conversions", path) is not None


def _wants_jwt(path: str) -> bool:
    return (
        path == "/app"
        or path.startswith("/app/")
        or bool(re.fullmatch(r"/repos/[^/]+/[^/]+/installation", path))
    )


def _user(login: str, kind: str) -> dict[str, Any]:
    return {
        "login": login,
        "id": int(hashlib.sha1(login.encode()).hexdigest()[:8], 16),  # noqa: S324 - an id, not a secret
        "type": kind,
        "site_admin": False,
        "html_url": f"{WEB}/{login}",
    }


def _sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()  # noqa: S324 - a commit id, not a secret


def _is_sha(ref: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{40}", ref) is not None


def _blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _not_found() from None


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.read() or b"{}")
    except ValueError:
        raise _GitHubError(400, "Problems parsing JSON") from None
    if not isinstance(data, dict):
        raise _GitHubError(400, "Problems parsing JSON")
    return data


def _status_invalid(field_name: str, message: str) -> _GitHubError:
    return _GitHubError(
        422,
        "Validation Failed",
        errors=[{"resource": "Status", "code": "custom", "field": field_name, "message": message}],
    )


_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def _hunks(patch: str) -> list[dict[str, set[int]]]:
    """Per hunk, the lines a comment may sit on: LEFT (old numbers) and RIGHT (new numbers)."""
    hunks: list[dict[str, set[int]]] = []
    old = new = 0
    for text in patch.splitlines():
        header = _HUNK.match(text)
        if header:
            hunks.append({"LEFT": set(), "RIGHT": set()})
            old, new = int(header[1]), int(header[2])
            continue
        if not hunks or text.startswith("\\"):
            continue
        if text.startswith("+"):
            hunks[-1]["RIGHT"].add(new)
            new += 1
        elif text.startswith("-"):
            hunks[-1]["LEFT"].add(old)
            old += 1
        else:
            hunks[-1]["LEFT"].add(old)
            hunks[-1]["RIGHT"].add(new)
            old, new = old + 1, new + 1
    return hunks


def _placement_problem(pull: _Pull, comment: Mapping[str, Any]) -> str | None:
    """GitHub's reason for refusing an inline review comment, or None when it fits the diff."""
    seeded = pull.file(str(comment.get("path")))
    if seeded is None:
        return PATH_NOT_IN_DIFF
    line, side = comment.get("line"), comment.get("side") or "RIGHT"
    hunk = next(
        (
            h
            for h in _hunks(seeded.patch or "")
            if isinstance(line, int) and line in h.get(side, ())
        ),
        None,
    )
    if hunk is None:
        return LINE_NOT_IN_DIFF
    start = comment.get("start_line")
    if start is None:
        return None
    start_side = comment.get("start_side") or side
    if start_side == side and start >= line:
        return START_NOT_BEFORE_LINE
    if start not in hunk.get(start_side, ()):
        return START_NOT_IN_HUNK
    return None
