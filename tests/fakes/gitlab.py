"""A fake GitLab REST API v4: a real aiohttp server on 127.0.0.1 that speaks GitLab's shapes.

Arbiter (python-gitlab underneath) runs against it unmodified, through ARBITER_GITLAB_BASE_URL;
the API lives under `/api/v4`, as on gitlab.com. It also serves an `arbiter serve` subprocess:
the server lives in the test's event loop and listens on a real port.

    async with FakeGitLab(token="glpat-x") as gitlab:
        gitlab.add_project("acme/shop")
        gitlab.add_merge_request(
            "acme/shop", 1, files=[MRFile.added("app.py", "print('hi')\\n")], head_sha=H1
        )
        gitlab.add_user("dev", access="developer", project="acme/shop")
        env = {"ARBITER_GITLAB_BASE_URL": gitlab.url, "ARBITER_GITLAB_TOKEN": "glpat-x"}
        ...  # run Arbiter
        (discussion,) = gitlab.discussions("acme/shop", 1)
        assert discussion["notes"][0]["position"]["new_line"] == 1

Seed: `add_project`, `add_user` (with `access=` on a project, or `set_access`),
`add_merge_request` (its first version: `files`, `base_sha`, `start_sha`, `head_sha`),
`push` (a new version: the head moves on, or is force-pushed), `update_merge_request` (title,
state, draft, …), `add_compare`, `add_file` (on a branch it is a commit: the branch's head
moves, `branch_head` reads it back), `add_note` (someone's note, in a new discussion or as a
reply, on the diff or not). Switches: `draft_notes_supported`, `bulk_publish_supported`
(older GitLab: those routes are 404).
Read back: `requests` / `requests_to` (every answered request, with headers and body),
`arrived` (requests seen, answered or not), `discussions`, `notes`, `draft_notes`,
`statuses` (the status records) and `status_changes` (every status accepted, in order),
`award_emoji`, `merge_request`, `project`, `user`.
Script failures: `fail` (any status, e.g. 502), `rate_limit` (429 with `Retry-After`),
`disconnect`, `delay`, `hold` (requests wait until the test releases them). With `landed=True`,
`fail`, `disconnect` and `delay` carry the request out first and only then lose its answer (a
502, a dropped connection, an answer later than the client waits), as a proxy in front of GitLab
does when GitLab completed a write but the answer never made it back.
Webhooks (recovery): `add_hook` (a project webhook, its URL and token), `record_hook_event` (an
event GitLab sent that nobody saw: "internal error" or a proxy's 502), `deliver_hook` (send one
now); read back `hook_events` and `resent`; `hook_events_supported = False` is a GitLab before
17.3. Routes: `hooks/:hook_id/events` (newest first, `status[]` filters) and
`…/events/:id/resend` (sends at once, same Idempotency-Key; five a minute), and the project's
`merge_requests` list (`state`, `updated_after`, `order_by`, `sort`).

Endpoints (all under /api/v4): /user, /users?username=, /projects/:id (numeric, or the
URL-encoded path), and under it merge_requests/:iid with /diffs, /changes, /versions, /notes
(list, create, read, edit), /notes/:id/award_emoji, /discussions (list, create, read, reply),
/draft_notes (list, create, delete, publish, bulk_publish); statuses/:sha,
repository/commits/:sha/statuses, members/all/:user_id, repository/files/:path/raw,
repository/branches/:branch, repository/compare, repository/merge_base.

As GitLab does: every call wants the token (`PRIVATE-TOKEN`, or `Authorization: Bearer`),
else 401; a project the token's user is not a member of is a 404; lists are paged (`page`,
`per_page` up to 100) with X-Page, X-Per-Page, X-Next-Page, X-Prev-Page, X-Total,
X-Total-Pages and a Link header; a diff position must name one of the merge request's versions
(its base, start and head SHAs) and a line of its diff (`new_line` alone for an added line,
`old_line` alone for a removed one, both for a context line), else 400 ("line_code can't be
blank"); a commit status follows GitLab's state machine (setting the state a status already
has is a 400 "Cannot transition status"); the same award emoji twice is a 404.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import hashlib
import itertools
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode

import aiohttp
from aiohttp import web

API = "/api/v4"
ACCESS = {
    "guest": 10,
    "planner": 15,
    "reporter": 20,
    "developer": 30,
    "maintainer": 40,
    "owner": 50,
}
LINE_CODE_ERROR = 'Note {:line_code=>["can\'t be blank", "must be a valid line code"]}'
STATUS_STATES = ("pending", "running", "success", "failed", "canceled", "skipped")
EMOJI = frozenset(
    {"thumbsup", "thumbsdown", "laughing", "confused", "heart", "tada", "rocket", "eyes", "smile"}
)
MAX_PER_PAGE = 100
RESENDS_PER_MINUTE = 5  # GitLab: per webhook and user
HOOK_TRIGGERS = {
    "merge_request": ("merge_request_hooks", "Merge Request Hook"),
    "note": ("note_hooks", "Note Hook"),
}


def project_path(project: str | int) -> str:
    """The API path of a project as python-gitlab writes it: "/api/v4/projects/acme%2Fshop"."""
    return f"{API}/projects/{quote(str(project), safe='')}"


# --- Helpers the tests use ----------------------------------------------------------------------


@dataclass(frozen=True)
class MRFile:
    """One changed file of a merge request version, as GitLab lists it. `diff` is the hunks
    ("@@ -1,2 +1,3 @@" onwards). An empty diff is a binary file, or with `too_large`, a diff
    GitLab collapsed; a rename may have none."""

    new_path: str
    diff: str = ""
    old_path: str | None = None
    new_file: bool = False
    renamed_file: bool = False
    deleted_file: bool = False
    too_large: bool = False

    @classmethod
    def added(cls, path: str, text: str) -> MRFile:
        lines = text.splitlines()
        diff = f"@@ -0,0 +1,{len(lines)} @@\n" + "".join(f"+{line}\n" for line in lines)
        return cls(path, diff, new_file=True)

    @classmethod
    def removed(cls, path: str, text: str) -> MRFile:
        lines = text.splitlines()
        diff = f"@@ -1,{len(lines)} +0,0 @@\n" + "".join(f"-{line}\n" for line in lines)
        return cls(path, diff, deleted_file=True)

    @classmethod
    def renamed(cls, old_path: str, new_path: str, diff: str = "") -> MRFile:
        return cls(new_path, diff, old_path=old_path, renamed_file=True)

    @classmethod
    def modified(cls, path: str, diff: str) -> MRFile:
        return cls(path, diff)

    def api(self) -> dict[str, Any]:
        old = self.old_path or self.new_path
        data: dict[str, Any] = {
            "old_path": old,
            "new_path": self.new_path,
            "a_mode": "0" if self.new_file else "100644",
            "b_mode": "0" if self.deleted_file else "100644",
            "diff": "" if self.too_large else self.diff,
            "new_file": self.new_file,
            "renamed_file": self.renamed_file,
            "deleted_file": self.deleted_file,
            "generated_file": False,
        }
        if self.too_large:
            data["too_large"] = True
            data["collapsed"] = True
        return data


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # the raw path, as sent: /api/v4/projects/acme%2Fshop/...
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    status: int | None  # None when the fake dropped the connection
    actor: str  # the token's username, "anonymous" or "refused"
    at: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


# --- State ----------------------------------------------------------------------------------------


@dataclass
class _User:
    id: int
    username: str
    name: str
    bot: bool = False
    state: str = "active"


@dataclass
class _Version:
    id: int
    base_sha: str
    start_sha: str
    head_sha: str
    files: list[MRFile]
    created_at: str

    def refs(self) -> dict[str, str]:
        return {"base_sha": self.base_sha, "head_sha": self.head_sha, "start_sha": self.start_sha}


@dataclass
class _MR:
    iid: int
    id: int
    title: str
    description: str | None
    author: _User
    source_branch: str
    target_branch: str
    draft: bool
    state: str
    labels: list[str]
    versions: list[_Version]
    created_at: str
    preparing: bool = False
    discussions: list[dict[str, Any]] = field(default_factory=list)
    drafts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def latest(self) -> _Version:
        return self.versions[-1]

    def notes(self) -> list[dict[str, Any]]:
        return [note for d in self.discussions for note in d["notes"]]


@dataclass
class _Project:
    id: int
    path: str
    default_branch: str
    visibility: str
    members: dict[int, int] = field(default_factory=dict)  # user id -> access level
    mrs: dict[int, _MR] = field(default_factory=dict)
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    parents: dict[str, list[str]] = field(default_factory=dict)  # commit -> its parents
    compares: dict[tuple[str, str], list[MRFile]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    status_changes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Hook:
    """A project webhook and its events (GitLab's web hook logs), oldest first."""

    hook_id: int
    project_id: int
    url: str
    token: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    resends: list[float] = field(default_factory=list)  # when each resend was asked (limit)


@dataclass
class _Rule:
    method: str
    path: str
    times: int
    kind: Literal["status", "rate_limit", "disconnect", "delay", "hold"]
    status: int = 502
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    gate: asyncio.Event | None = None
    landed: bool = False  # carried out before the failure is answered

    def matches(self, method: str, path: str) -> bool:
        method_ok = self.method == "*" or self.method.upper() == method
        return self.times > 0 and method_ok and fnmatch.fnmatchcase(path, self.path)


class _GitLabError(Exception):
    """Raised by a handler; rendered as GitLab renders errors ({"message": …} or {"error": …})."""

    def __init__(self, status: int, message: Any, *, key: str = "message") -> None:
        super().__init__(str(message))
        self.status = status
        self.message = message
        self.key = key

    def response(self) -> web.Response:
        return web.json_response({self.key: self.message}, status=self.status)


def _not_found(what: str = "") -> _GitLabError:
    return _GitLabError(404, f"404 {what} Not Found" if what else "404 Not found")


Handler = Callable[["_Call"], Awaitable[web.StreamResponse]]


@dataclass
class _Call:
    """One request as a handler sees it: the route's parameters, the query and the body."""

    request: web.Request
    params: dict[str, str]
    query: dict[str, str]
    query_all: list[tuple[str, str]]
    data: dict[str, Any]
    user: _User


# --- The server -----------------------------------------------------------------------------------


class FakeGitLab:
    """GitLab's REST API v4 for the calls Arbiter makes, with GitLab's shapes and rules."""

    def __init__(
        self,
        *,
        token: str,
        username: str = "arbiter-bot",
        bot: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.clock = clock
        self.draft_notes_supported = True
        self.bulk_publish_supported = True
        self._ids = itertools.count(101)
        self._salt = secrets.token_hex(6)
        self._users: dict[int, _User] = {}
        self._projects: dict[int, _Project] = {}
        self.bot = self._new_user(username, bot=bot)
        self._requests: list[RecordedRequest] = []
        self._arrivals: list[tuple[str, str]] = []
        self._rules: list[_Rule] = []
        self._awards: dict[int, list[dict[str, Any]]] = {}  # note id -> award emoji
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._routes = self._route_table()
        # Project webhooks and their events (GitLab 17.3 lists them, 17.4 resends them).
        self.hook_events_supported = True
        self._hooks: dict[int, _Hook] = {}
        self._sender: aiohttp.ClientSession | None = None
        self.resent: list[int] = []  # hook event ids whose resend was asked

    # --- Lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The instance URL to give Arbiter (ARBITER_GITLAB_BASE_URL); the API is under /api/v4."""
        if self._url is None:
            raise RuntimeError("the fake GitLab is not started")
        return self._url

    @property
    def web_url(self) -> str:
        return self._url or "http://gitlab.example"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._sender is not None:
            await self._sender.close()
            self._sender = None
        for rule in self._rules:
            if rule.gate is not None:
                rule.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGitLab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- Seeding ----------------------------------------------------------------------------

    def add_project(
        self,
        path: str,
        *,
        id: int | None = None,
        default_branch: str = "main",
        visibility: str = "private",
        bot_access: str | int | None = "developer",
    ) -> dict[str, Any]:
        """A project, with the token's user a member at `bot_access` (None: not a member)."""
        project = _Project(id or next(self._ids), path, default_branch, visibility)
        self._projects[project.id] = project
        self._commit(project, default_branch)
        if bot_access is not None:
            project.members[self.bot.id] = _level(bot_access)
        return self._project_json(project)

    def add_user(
        self,
        username: str,
        *,
        bot: bool = False,
        project: str | int | None = None,
        access: str | int | None = None,
        state: str = "active",
    ) -> dict[str, Any]:
        """A user (or one already known, e.g. as a merge request's author, updated); with
        `project` and `access` (guest … owner, or 10 … 50) a member of it."""
        user = self._user_named(username, create=True)
        user.bot, user.state = bot, state
        if project is not None and access is not None:
            self.set_access(project, username, access)
        return _user_json(user, self.web_url)

    def set_access(self, project: str | int, username: str, access: str | int | None) -> None:
        """A member's access level (None: no longer a member)."""
        stored = self._project(project)
        user = self._user_named(username)
        if access is None:
            stored.members.pop(user.id, None)
        else:
            stored.members[user.id] = _level(access)

    def add_merge_request(
        self,
        project: str | int,
        iid: int,
        *,
        files: Iterable[MRFile] = (),
        head_sha: str | None = None,
        base_sha: str | None = None,
        start_sha: str | None = None,
        title: str = "A change",
        description: str | None = None,
        author: str = "dev",
        draft: bool = False,
        state: str = "opened",
        labels: Iterable[str] = (),
        source_branch: str = "feature",
        target_branch: str | None = None,
        preparing: bool = False,
    ) -> dict[str, Any]:
        """A merge request and its first version. `start_sha` (the target branch's head) is the
        merge base `base_sha` unless given: they differ once the target branch moved on.
        `preparing`: GitLab is still computing the diff (no `diff_refs` yet). Returns the merge
        request as the API shows it, handy for webhook payloads."""
        stored = self._project(project)
        base = base_sha or _sha(f"{self._salt}:{stored.path}!{iid}:base")
        head = head_sha or _sha(f"{self._salt}:{stored.path}!{iid}:head")
        start = start_sha or base
        stored.parents.setdefault(base, [])
        stored.parents.setdefault(start, [base] if start != base else [])
        stored.parents[head] = [base]
        author_user = self._user_named(author, create=True)
        mr = _MR(
            iid=iid,
            id=next(self._ids),
            title=title,
            description=description,
            author=author_user,
            source_branch=source_branch,
            target_branch=target_branch or stored.default_branch,
            draft=draft,
            state=state,
            labels=list(labels),
            versions=[_Version(next(self._ids), base, start, head, list(files), self._iso())],
            created_at=self._iso(),
            preparing=preparing,
        )
        stored.mrs[iid] = mr
        stored.heads[mr.source_branch] = head
        return self._mr_json(stored, mr)

    def push(
        self,
        project: str | int,
        iid: int,
        *,
        head_sha: str,
        files: Iterable[MRFile],
        start_sha: str | None = None,
        base_sha: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """A new version of the merge request: `head_sha` on top of the last head (or, with
        `force`, replacing it: the old head is then no longer an ancestor)."""
        stored = self._project(project)
        mr = stored.mrs[iid]
        last = mr.latest
        base = base_sha or last.base_sha
        stored.parents[head_sha] = [base] if force else [last.head_sha]
        version = _Version(
            next(self._ids), base, start_sha or last.start_sha, head_sha, list(files), self._iso()
        )
        mr.versions.append(version)
        mr.preparing = False
        stored.heads[mr.source_branch] = head_sha
        return self._mr_json(stored, mr)

    def update_merge_request(self, project: str | int, iid: int, **changes: Any) -> dict[str, Any]:
        """Change a seeded merge request's title, description, state, draft, labels, preparing."""
        stored = self._project(project)
        mr = stored.mrs[iid]
        allowed = {"title", "description", "state", "draft", "labels", "preparing"}
        for name, value in changes.items():
            if name not in allowed:
                raise TypeError(f"a merge request has no seedable field {name!r}")
            setattr(mr, name, list(value) if name == "labels" else value)
        return self._mr_json(stored, mr)

    def project(self, project: str | int) -> dict[str, Any]:
        """The project as GET /projects/:id shows it."""
        return self._project_json(self._project(project))

    def user(self, username: str) -> dict[str, Any]:
        """A user as GitLab shows one (in a note's `author`, a hook's `user`)."""
        return _user_json(self._user_named(username), self.web_url)

    def merge_request(self, project: str | int, iid: int) -> dict[str, Any]:
        """The merge request as GET /projects/:id/merge_requests/:iid shows it."""
        stored = self._project(project)
        return self._mr_json(stored, stored.mrs[iid])

    def add_compare(
        self, project: str | int, from_sha: str, to_sha: str, *, files: Iterable[MRFile] = ()
    ) -> None:
        """What GET /repository/compare?from=…&to=… answers. A merge request version's own
        comparison (its base to its head) needs no seeding; another unseeded one is a 404."""
        self._project(project).compares[(from_sha, to_sha)] = list(files)

    def add_file(
        self, project: str | int, path: str, content: str | bytes, *, ref: str | None = None
    ) -> None:
        """A file at `ref` (a branch or a commit sha; default: the default branch). On a branch
        it is a commit: the branch's head moves to a new sha (see `branch_head`)."""
        stored = self._project(project)
        ref = ref or stored.default_branch
        data = content.encode() if isinstance(content, str) else content
        stored.files[(ref, path.strip("/"))] = data
        if not _is_sha(ref):
            self._commit(stored, ref)

    def branch_head(self, project: str | int, branch: str) -> str:
        return self._project(project).heads[branch]

    def add_note(
        self,
        project: str | int,
        iid: int,
        body: str,
        *,
        author: str = "dev",
        position: Mapping[str, Any] | None = None,
        discussion_id: str | None = None,
    ) -> dict[str, Any]:
        """Someone's note: in a new discussion (on the diff, with a `position`, which is not
        checked), or a reply in `discussion_id`. Returns the note with its `discussion_id`."""
        stored = self._project(project)
        mr = stored.mrs[iid]
        user = self._user_named(author, create=True)
        if discussion_id is not None:
            discussion = _discussion(mr, discussion_id)
            note = self._reply_note(stored, mr, discussion, body, user)
        else:
            kind = "DiffNote" if position else None
            discussion = self._new_discussion(
                stored, mr, body, user, kind=kind, position=position, individual=position is None
            )
            note = discussion["notes"][0]
        return {**copy.deepcopy(note), "discussion_id": discussion["id"]}

    # --- Scripted failures ------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        status: int = 502,
        *,
        times: int = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        landed: bool = False,
    ) -> None:
        """The next `times` requests matching `method` ("*": any) and the glob `path` (the raw
        path, e.g. project_path("acme/shop") + "/statuses/*") get `status`, before any auth,
        with GitLab's {"message": …} body unless `body` is given. With `landed`, each is carried
        out first (a note is created, say) and only the answer fails, as when a proxy times
        out on a request GitLab did complete."""
        self._rules.append(
            _Rule(method, path, times, "status", status, body, headers or {}, landed=landed)
        )

    def rate_limit(
        self,
        *,
        retry_after: float | None = 1,
        method: str = "*",
        path: str = "*",
        times: int = 1,
    ) -> None:
        """The next `times` matching requests get GitLab's 429: "Retry later", with
        `Retry-After` (None: only the RateLimit-* headers, RateLimit-Reset a minute ahead)."""
        self._rules.append(
            _Rule(
                method,
                path,
                times,
                "rate_limit",
                429,
                seconds=-1 if retry_after is None else retry_after,
            )
        )

    def disconnect(self, method: str, path: str, *, times: int = 1, landed: bool = False) -> None:
        """Drop the connection without an answer (with `landed`, after carrying it out)."""
        self._rules.append(_Rule(method, path, times, "disconnect", landed=landed))

    def delay(
        self, method: str, path: str, seconds: float, *, times: int = 1, landed: bool = False
    ) -> None:
        """Answer normally, but only after `seconds` of real time (for client timeouts). With
        `landed` the request is carried out at once and only its answer waits: a client that
        gives up first finds the write done all the same."""
        self._rules.append(_Rule(method, path, times, "delay", seconds=seconds, landed=landed))

    def hold(self, method: str, path: str) -> asyncio.Event:
        """Every matching request waits until the returned event is set."""
        gate = asyncio.Event()
        self._rules.append(_Rule(method, path, 1 << 30, "hold", gate=gate))
        return gate

    # --- Reading back -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._requests)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The answered requests whose method matches ("*": any) and whose raw path matches the
        glob `path`."""
        return [
            r
            for r in self._requests
            if (method == "*" or r.method == method.upper()) and fnmatch.fnmatchcase(r.path, path)
        ]

    def arrived(self, method: str, path: str) -> int:
        """How many matching requests have arrived, answered or not (a held one included)."""
        return sum(
            1
            for m, p in self._arrivals
            if (method == "*" or m == method.upper()) and fnmatch.fnmatchcase(p, path)
        )

    def clear_requests(self) -> None:
        self._requests.clear()

    def discussions(self, project: str | int, iid: int) -> list[dict[str, Any]]:
        """The merge request's discussions as GitLab's API returns them, oldest first."""
        return copy.deepcopy(self._project(project).mrs[iid].discussions)

    def notes(self, project: str | int, iid: int) -> list[dict[str, Any]]:
        """Every published note, oldest first, each with its `discussion_id`."""
        mr = self._project(project).mrs[iid]
        return [
            {**copy.deepcopy(note), "discussion_id": d["id"]}
            for d in mr.discussions
            for note in d["notes"]
        ]

    def draft_notes(self, project: str | int, iid: int) -> list[dict[str, Any]]:
        """Unpublished draft notes of every user."""
        return copy.deepcopy(self._project(project).mrs[iid].drafts)

    def statuses(self, project: str | int, sha: str | None = None) -> list[dict[str, Any]]:
        """The commit status records, oldest first (a record moves running → success)."""
        return [
            copy.deepcopy(s)
            for s in self._project(project).statuses
            if sha is None or s["sha"] == sha
        ]

    def status_changes(self, project: str | int, sha: str | None = None) -> list[dict[str, Any]]:
        """Every status POST GitLab accepted, in order: its record as answered then."""
        return [
            copy.deepcopy(s)
            for s in self._project(project).status_changes
            if sha is None or s["sha"] == sha
        ]

    def award_emoji(self, note_id: int) -> list[str]:
        return [a["name"] for a in self._awards.get(note_id, [])]

    # --- Serving ------------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0]
        self._arrivals.append((request.method, raw_path))
        body = await request.read()
        actor = "anonymous"
        status: int | None = None
        try:
            response, actor = await self._answer(request, raw_path, body)
            status = None if response is None else response.status
            if response is None:  # dropped
                return web.Response(status=500)
            return response
        finally:
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=raw_path,
                    query=dict(request.query),
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    status=status,
                    actor=actor,
                    at=self.clock(),
                )
            )

    async def _answer(
        self, request: web.Request, raw_path: str, body: bytes
    ) -> tuple[web.StreamResponse | None, str]:
        rule = next((r for r in self._rules if r.matches(request.method, raw_path)), None)
        if rule is not None:
            rule.times -= 1
            if rule.landed and rule.kind in ("disconnect", "delay"):
                answer = await self._carry_out(request, raw_path, body)
                if rule.kind == "delay":
                    await asyncio.sleep(rule.seconds)  # cancelled when the client gives up
                    return answer
            if rule.kind == "disconnect":
                if request.transport is not None:
                    request.transport.close()
                return None, "anonymous"
            if rule.kind == "delay":
                await asyncio.sleep(rule.seconds)
            elif rule.kind == "hold":
                assert rule.gate is not None
                await rule.gate.wait()
            elif rule.kind == "rate_limit":
                return self._rate_limited(rule.seconds), "anonymous"
            else:
                if rule.landed:
                    await self._carry_out(request, raw_path, body)
                if rule.body is not None:
                    return web.json_response(
                        rule.body, status=rule.status, headers=rule.headers
                    ), "anonymous"
                words = "Internal Server Error" if rule.status >= 500 else "Scripted failure"
                phrase = f"{rule.status} {words}"
                return web.json_response(
                    {"message": phrase}, status=rule.status, headers=rule.headers
                ), "anonymous"
        return await self._carry_out(request, raw_path, body)

    async def _carry_out(
        self, request: web.Request, raw_path: str, body: bytes
    ) -> tuple[web.StreamResponse, str]:
        """The request done as GitLab does it, whatever answer the client then gets."""
        try:
            user = self._authenticate(request)
        except _GitLabError as error:
            return error.response(), "refused"
        try:
            return await self._route(request, raw_path, body, user), user.username
        except _GitLabError as error:
            return error.response(), user.username

    def _rate_limited(self, retry_after: float) -> web.Response:
        now = self.clock()
        wait = 60.0 if retry_after < 0 else retry_after
        headers = {
            "RateLimit-Name": "throttle_authenticated_api",
            "RateLimit-Limit": "60",
            "RateLimit-Observed": "61",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(math.ceil(now + wait)),
            "RateLimit-ResetTime": datetime.fromtimestamp(now + wait, UTC).strftime(
                "%a, %d %b %Y %H:%M:%S GMT"
            ),
        }
        if retry_after >= 0:
            headers["Retry-After"] = str(math.ceil(retry_after))
        return web.Response(status=429, text="Retry later\n", headers=headers)

    def _authenticate(self, request: web.Request) -> _User:
        given = request.headers.get("PRIVATE-TOKEN")
        if given is None:
            scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
            given = credential.strip() if scheme.lower() == "bearer" else None
        if not given or not secrets.compare_digest(given, self.token):
            raise _GitLabError(401, "401 Unauthorized")
        return self.bot

    async def _route(
        self, request: web.Request, raw_path: str, body: bytes, user: _User
    ) -> web.StreamResponse:
        if not raw_path.startswith(API + "/"):
            raise _not_found()
        segments = [unquote(s) for s in raw_path[len(API) + 1 :].split("/")]
        for method, pattern, handler in self._routes:
            params = _match(pattern, segments)
            if params is None:
                continue
            if method != request.method:
                continue
            query_all = parse_qsl(request.query_string, keep_blank_values=True)
            call = _Call(
                request, params, dict(query_all), query_all, _parse_body(request, body), user
            )
            return await handler(call)
        raise _GitLabError(404, "404 Not Found", key="error")

    def _route_table(self) -> list[tuple[str, tuple[str, ...], Handler]]:
        mr = ("projects", ":id", "merge_requests", ":iid")
        table: list[tuple[str, tuple[str, ...], Handler]] = [
            ("GET", ("user",), self._get_me),
            ("GET", ("users",), self._list_users),
            ("GET", ("projects", ":id"), self._get_project),
            ("GET", mr, self._get_mr),
            ("GET", (*mr, "diffs"), self._mr_diffs),
            ("GET", (*mr, "changes"), self._mr_changes),
            ("GET", (*mr, "versions"), self._mr_versions),
            ("GET", (*mr, "notes"), self._list_notes),
            ("POST", (*mr, "notes"), self._create_note),
            ("GET", (*mr, "notes", ":note"), self._get_note),
            ("PUT", (*mr, "notes", ":note"), self._edit_note),
            ("GET", (*mr, "notes", ":note", "award_emoji"), self._list_awards),
            ("POST", (*mr, "notes", ":note", "award_emoji"), self._award),
            ("GET", (*mr, "discussions"), self._list_discussions),
            ("POST", (*mr, "discussions"), self._create_discussion),
            ("GET", (*mr, "discussions", ":discussion"), self._get_discussion),
            ("POST", (*mr, "discussions", ":discussion", "notes"), self._reply),
            ("GET", (*mr, "draft_notes"), self._list_drafts),
            ("POST", (*mr, "draft_notes"), self._create_draft),
            ("POST", (*mr, "draft_notes", "bulk_publish"), self._bulk_publish),
            ("DELETE", (*mr, "draft_notes", ":draft"), self._delete_draft),
            ("PUT", (*mr, "draft_notes", ":draft", "publish"), self._publish_draft),
            ("POST", ("projects", ":id", "statuses", ":sha"), self._create_status),
            (
                "GET",
                ("projects", ":id", "repository", "commits", ":sha", "statuses"),
                self._list_statuses,
            ),
            ("GET", ("projects", ":id", "members", "all", ":user"), self._member),
            ("GET", ("projects", ":id", "repository", "files", ":path", "raw"), self._raw_file),
            ("GET", ("projects", ":id", "repository", "branches", ":branch"), self._branch),
            ("GET", ("projects", ":id", "repository", "compare"), self._compare),
            ("GET", ("projects", ":id", "repository", "merge_base"), self._merge_base),
        ]
        table += self._recovery_routes()
        return table

    # --- Lookups ------------------------------------------------------------------------------

    def _project(self, key: str | int) -> _Project:
        found = self._find_project(str(key))
        if found is None:
            raise KeyError(f"no project {key!r} seeded")
        return found

    def _find_project(self, key: str) -> _Project | None:
        if key.isdigit():
            return self._projects.get(int(key))
        return next((p for p in self._projects.values() if p.path.lower() == key.lower()), None)

    def _access(self, call: _Call) -> _Project:
        """The URL's project, if the token's user may see it (GitLab says 404 otherwise)."""
        project = self._find_project(call.params["id"])
        if project is None:
            raise _not_found("Project")
        if call.user.id not in project.members and project.visibility != "public":
            raise _not_found("Project")
        return project

    def _mr_of(self, call: _Call) -> tuple[_Project, _MR]:
        project = self._access(call)
        mr = project.mrs.get(_int(call.params["iid"]))
        if mr is None:
            raise _not_found()
        return project, mr

    def _new_user(self, username: str, *, bot: bool = False, state: str = "active") -> _User:
        if any(u.username.lower() == username.lower() for u in self._users.values()):
            raise ValueError(f"user {username!r} exists")
        user = _User(next(self._ids), username, username.replace("-", " ").title(), bot, state)
        self._users[user.id] = user
        return user

    def _user_named(self, username: str, *, create: bool = False) -> _User:
        found = next(
            (u for u in self._users.values() if u.username.lower() == username.lower()), None
        )
        if found is None:
            if not create:
                raise KeyError(f"no user {username!r} seeded")
            found = self._new_user(username)
        return found

    def _commit(self, project: _Project, branch: str) -> None:
        """A new head for `branch`, holding a snapshot of the branch's files as they are now."""
        sha = _sha(f"{self._salt}:{project.path}:{branch}:{next(self._ids)}")
        for (at, name), data in list(project.files.items()):
            if at == branch:
                project.files[(sha, name)] = data
        previous = project.heads.get(branch)
        project.parents[sha] = [previous] if previous else []
        project.heads[branch] = sha

    def _iso(self) -> str:
        return _iso(self.clock())

    # --- Users and projects ---------------------------------------------------------------------

    async def _get_me(self, call: _Call) -> web.Response:
        data = _user_json(call.user, self.web_url)
        data |= {"bot": call.user.bot, "created_at": self._iso(), "is_admin": False}
        return web.json_response(data)

    async def _list_users(self, call: _Call) -> web.Response:
        wanted = call.query.get("username")
        users = [
            _user_json(u, self.web_url)
            for u in self._users.values()
            if wanted is None or u.username.lower() == wanted.lower()
        ]
        return self._paged(call, users)

    async def _get_project(self, call: _Call) -> web.Response:
        return web.json_response(self._project_json(self._access(call)))

    async def _member(self, call: _Call) -> web.Response:
        project = self._access(call)
        user = self._users.get(_int(call.params["user"]))
        level = project.members.get(user.id) if user is not None else None
        if user is None or level is None:
            raise _not_found()
        data = _user_json(user, self.web_url) | {
            "access_level": level,
            "created_at": self._iso(),
            "expires_at": None,
            "membership_state": "active",
        }
        return web.json_response(data)

    # --- Merge requests -------------------------------------------------------------------------

    async def _get_mr(self, call: _Call) -> web.Response:
        project, mr = self._mr_of(call)
        return web.json_response(self._mr_json(project, mr))

    async def _mr_diffs(self, call: _Call) -> web.Response:
        _, mr = self._mr_of(call)
        return self._paged(call, [f.api() for f in mr.latest.files])

    async def _mr_changes(self, call: _Call) -> web.Response:
        project, mr = self._mr_of(call)
        data = self._mr_json(project, mr)
        data["changes"] = [f.api() for f in mr.latest.files]
        data["overflow"] = False
        return web.json_response(data)

    async def _mr_versions(self, call: _Call) -> web.Response:
        _, mr = self._mr_of(call)
        versions = [
            {
                "id": v.id,
                "head_commit_sha": v.head_sha,
                "base_commit_sha": v.base_sha,
                "start_commit_sha": v.start_sha,
                "created_at": v.created_at,
                "merge_request_id": mr.id,
                "state": "collected",
                "real_size": str(len(v.files)),
            }
            for v in reversed(mr.versions)
        ]
        return self._paged(call, versions)

    # --- Notes and discussions ------------------------------------------------------------------

    async def _list_notes(self, call: _Call) -> web.Response:
        _, mr = self._mr_of(call)
        order_by = call.query.get("order_by", "created_at")
        if order_by not in ("created_at", "updated_at"):
            raise _GitLabError(400, "order_by does not have a valid value", key="error")
        notes = sorted(mr.notes(), key=lambda n: (n[order_by], n["id"]))
        if call.query.get("sort", "desc") == "desc":
            notes.reverse()
        return self._paged(call, notes)

    async def _get_note(self, call: _Call) -> web.Response:
        _, mr = self._mr_of(call)
        return web.json_response(_note(mr, _int(call.params["note"])))

    async def _create_note(self, call: _Call) -> web.Response:
        project, mr = self._mr_of(call)
        body = _required(call.data, "body")
        discussion = self._new_discussion(project, mr, body, call.user, kind=None, individual=True)
        return web.json_response(discussion["notes"][0], status=201)

    async def _edit_note(self, call: _Call) -> web.Response:
        _, mr = self._mr_of(call)
        note = _note(mr, _int(call.params["note"]))
        if note["author"]["id"] != call.user.id:
            raise _GitLabError(403, "403 Forbidden")
        note["body"] = _required(call.data, "body")
        note["updated_at"] = self._iso()
        return web.json_response(note)

    async def _list_discussions(self, call: _Call) -> web.Response:
        _, mr = self._mr_of(call)
        return self._paged(call, mr.discussions)

    async def _get_discussion(self, call: _Call) -> web.Response:
        _, mr = self._mr_of(call)
        return web.json_response(_discussion(mr, call.params["discussion"]))

    async def _create_discussion(self, call: _Call) -> web.Response:
        project, mr = self._mr_of(call)
        body = _required(call.data, "body")
        position = call.data.get("position")
        if position is not None:
            self._check_position(mr, position)
        discussion = self._new_discussion(
            project,
            mr,
            body,
            call.user,
            kind="DiffNote" if position is not None else "DiscussionNote",
            position=position,
            individual=False,
        )
        return web.json_response(discussion, status=201)

    async def _reply(self, call: _Call) -> web.Response:
        project, mr = self._mr_of(call)
        discussion = _discussion(mr, call.params["discussion"])
        note = self._reply_note(project, mr, discussion, _required(call.data, "body"), call.user)
        return web.json_response(note, status=201)

    def _new_discussion(
        self,
        project: _Project,
        mr: _MR,
        body: str,
        user: _User,
        *,
        kind: str | None,
        position: Mapping[str, Any] | None = None,
        individual: bool,
    ) -> dict[str, Any]:
        note = self._note_json(project, mr, body, user, kind, position)
        discussion = {
            "id": _sha(f"{self._salt}:discussion:{note['id']}"),
            "individual_note": individual,
            "notes": [note],
        }
        mr.discussions.append(discussion)
        return discussion

    def _reply_note(
        self, project: _Project, mr: _MR, discussion: dict[str, Any], body: str, user: _User
    ) -> dict[str, Any]:
        first = discussion["notes"][0]
        if discussion["individual_note"]:
            # Replying to a lone note makes it a thread, as GitLab does.
            discussion["individual_note"] = False
            first["type"] = "DiscussionNote"
        kind = "DiffNote" if first.get("type") == "DiffNote" else "DiscussionNote"
        note = self._note_json(project, mr, body, user, kind, first.get("position"))
        discussion["notes"].append(note)
        return note

    def _note_json(
        self,
        project: _Project,
        mr: _MR,
        body: str,
        user: _User,
        kind: str | None,
        position: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        now = self._iso()
        note: dict[str, Any] = {
            "id": next(self._ids),
            "type": kind,
            "body": body,
            "attachment": None,
            "author": _user_json(user, self.web_url),
            "created_at": now,
            "updated_at": now,
            "system": False,
            "noteable_id": mr.id,
            "noteable_type": "MergeRequest",
            "project_id": project.id,
            "resolvable": kind is not None,
            "confidential": False,
            "internal": False,
            "noteable_iid": mr.iid,
            "commands_changes": {},
        }
        if kind is not None:
            note["resolved"] = False
            note["resolved_by"] = None
            note["resolved_at"] = None
        if position is not None:
            note["position"] = {
                "base_sha": None,
                "start_sha": None,
                "head_sha": None,
                "old_path": None,
                "new_path": None,
                "position_type": "text",
                "old_line": None,
                "new_line": None,
                "line_range": None,
                **dict(position),
            }
        return note

    def _check_position(self, mr: _MR, position: Any) -> None:
        """400 unless `position` names a version of `mr` and a line of that version's diff."""
        refused = _GitLabError(400, f"400 Bad request - {LINE_CODE_ERROR}")
        if not isinstance(position, dict) or position.get("position_type", "text") != "text":
            raise refused
        shas = (position.get("base_sha"), position.get("start_sha"), position.get("head_sha"))
        version = next(
            (v for v in mr.versions if (v.base_sha, v.start_sha, v.head_sha) == shas), None
        )
        if version is None:
            raise refused
        new_path, old_path = position.get("new_path"), position.get("old_path")
        file = next((f for f in version.files if f.new_path == new_path), None)
        if file is None or (old_path or new_path) != (file.old_path or file.new_path):
            raise refused
        new_line, old_line = _line(position.get("new_line")), _line(position.get("old_line"))
        for kind, old, new in _diff_lines(file.diff):
            if kind == "+" and (old_line, new_line) == (None, new):
                return
            if kind == "-" and (old_line, new_line) == (old, None):
                return
            if kind == " " and (old_line, new_line) == (old, new):
                return
        raise refused

    # --- Award emoji ------------------------------------------------------------------------------

    async def _list_awards(self, call: _Call) -> web.Response:
        _, mr = self._mr_of(call)
        note = _note(mr, _int(call.params["note"]))
        return self._paged(call, self._awards.get(note["id"], []))

    async def _award(self, call: _Call) -> web.Response:
        _, mr = self._mr_of(call)
        note = _note(mr, _int(call.params["note"]))
        name = _required(call.data, "name")
        if name not in EMOJI:
            raise _GitLabError(404, "404 Award Emoji Name is not a valid emoji name Not Found")
        awards = self._awards.setdefault(note["id"], [])
        if any(a["name"] == name and a["user"]["id"] == call.user.id for a in awards):
            raise _GitLabError(404, "404 Award Emoji Name has already been taken Not Found")
        award = {
            "id": next(self._ids),
            "name": name,
            "user": _user_json(call.user, self.web_url),
            "created_at": self._iso(),
            "updated_at": self._iso(),
            "awardable_id": note["id"],
            "awardable_type": "Note",
        }
        awards.append(award)
        return web.json_response(award, status=201)

    # --- Draft notes ------------------------------------------------------------------------------

    def _drafts_of(self, call: _Call) -> tuple[_Project, _MR]:
        if not self.draft_notes_supported:
            raise _GitLabError(404, "404 Not Found", key="error")
        return self._mr_of(call)

    async def _list_drafts(self, call: _Call) -> web.Response:
        _, mr = self._drafts_of(call)
        mine = [d for d in mr.drafts if d["author_id"] == call.user.id]  # drafts are private
        return self._paged(call, mine)

    async def _create_draft(self, call: _Call) -> web.Response:
        _, mr = self._drafts_of(call)
        note = _required(call.data, "note")
        position = call.data.get("position")
        if position is not None:
            self._check_position(mr, position)
        reply_to = call.data.get("in_reply_to_discussion_id")
        if reply_to is not None:
            _discussion(mr, str(reply_to))
        draft = {
            "id": next(self._ids),
            "author_id": call.user.id,
            "merge_request_id": mr.id,
            "resolve_discussion": False,
            "discussion_id": reply_to,
            "note": note,
            "commit_id": None,
            "line_code": None,
            "position": {
                "base_sha": None,
                "start_sha": None,
                "head_sha": None,
                "old_path": None,
                "new_path": None,
                "position_type": "text",
                "old_line": None,
                "new_line": None,
                "line_range": None,
                **(position or {}),
            },
            "_has_position": position is not None,
        }
        mr.drafts.append(draft)
        return web.json_response(_public_draft(draft), status=201)

    async def _delete_draft(self, call: _Call) -> web.Response:
        _, mr = self._drafts_of(call)
        draft = self._draft(mr, call)
        mr.drafts.remove(draft)
        return web.Response(status=204)

    async def _publish_draft(self, call: _Call) -> web.Response:
        project, mr = self._drafts_of(call)
        self._publish(project, mr, self._draft(mr, call), call.user)
        return web.Response(status=204)

    async def _bulk_publish(self, call: _Call) -> web.Response:
        project, mr = self._drafts_of(call)
        if not self.bulk_publish_supported:
            raise _GitLabError(404, "404 Not Found", key="error")
        for draft in [d for d in mr.drafts if d["author_id"] == call.user.id]:
            self._publish(project, mr, draft, call.user)
        return web.Response(status=204)

    def _draft(self, mr: _MR, call: _Call) -> dict[str, Any]:
        wanted = _int(call.params["draft"])
        for draft in mr.drafts:
            if draft["id"] == wanted and draft["author_id"] == call.user.id:
                return draft
        raise _not_found()

    def _publish(self, project: _Project, mr: _MR, draft: dict[str, Any], user: _User) -> None:
        mr.drafts.remove(draft)
        if draft["discussion_id"] is not None:
            discussion = _discussion(mr, draft["discussion_id"])
            self._reply_note(project, mr, discussion, draft["note"], user)
        elif draft["_has_position"]:
            self._new_discussion(
                project,
                mr,
                draft["note"],
                user,
                kind="DiffNote",
                position=draft["position"],
                individual=False,
            )
        else:
            self._new_discussion(project, mr, draft["note"], user, kind=None, individual=True)

    # --- Commit statuses --------------------------------------------------------------------------

    async def _create_status(self, call: _Call) -> web.Response:
        project = self._access(call)
        if project.members.get(call.user.id, 0) < ACCESS["developer"]:
            raise _GitLabError(403, "403 Forbidden")
        sha = call.params["sha"]
        if sha not in project.parents:
            raise _not_found("Commit")
        state = _required(call.data, "state")
        if state not in STATUS_STATES:
            raise _GitLabError(400, "state does not have a valid value", key="error")
        name = call.data.get("name") or call.data.get("context") or "default"
        ref = call.data.get("ref")
        record = next(
            (
                s
                for s in reversed(project.statuses)
                if s["sha"] == sha
                and s["name"] == name
                and (ref is None or s["ref"] == ref)
                and s["status"] in ("pending", "running")
            ),
            None,
        )
        if record is None:
            record = {
                "id": next(self._ids),
                "sha": sha,
                "ref": ref or self._branch_with(project, sha),
                "status": "created",
                "name": name,
                "target_url": None,
                "description": None,
                "created_at": self._iso(),
                "started_at": None,
                "finished_at": None,
                "allow_failure": False,
                "coverage": None,
                "author": _user_json(call.user, self.web_url),
            }
            fresh = True
        else:
            fresh = False
        _transition(record, state)
        record["description"] = call.data.get("description", record["description"])
        record["target_url"] = call.data.get("target_url", record["target_url"])
        if state == "running":
            record["started_at"] = self._iso()
        elif state in ("success", "failed", "canceled"):
            record["finished_at"] = self._iso()
        if fresh:
            project.statuses.append(record)
        project.status_changes.append(copy.deepcopy(record))
        return web.json_response(record, status=201)

    async def _list_statuses(self, call: _Call) -> web.Response:
        project = self._access(call)
        sha = call.params["sha"]
        return self._paged(call, [s for s in reversed(project.statuses) if s["sha"] == sha])

    def _branch_with(self, project: _Project, sha: str) -> str | None:
        return next((b for b, head in project.heads.items() if head == sha), None)

    # --- Repository -------------------------------------------------------------------------------

    async def _raw_file(self, call: _Call) -> web.Response:
        project = self._access(call)
        ref = call.query.get("ref") or project.default_branch
        data = project.files.get((ref, call.params["path"].strip("/")))
        if data is None:
            raise _not_found("File")
        return web.Response(body=data, content_type="text/plain", charset="utf-8")

    async def _branch(self, call: _Call) -> web.Response:
        project = self._access(call)
        name = call.params["branch"]
        head = project.heads.get(name)
        if head is None:
            raise _not_found("Branch")
        return web.json_response(
            {
                "name": name,
                "merged": False,
                "protected": name == project.default_branch,
                "default": name == project.default_branch,
                "developers_can_push": False,
                "developers_can_merge": False,
                "can_push": True,
                "web_url": f"{self.web_url}/{project.path}/-/tree/{quote(name)}",
                "commit": _commit_json(head, self.web_url, project),
            }
        )

    async def _compare(self, call: _Call) -> web.Response:
        project = self._access(call)
        source, target = call.query.get("from"), call.query.get("to")
        if not source or not target:
            raise _GitLabError(400, "from is missing, to is missing", key="error")
        files = project.compares.get((source, target))
        if files is None:
            version = next(
                (
                    v
                    for mr in project.mrs.values()
                    for v in mr.versions
                    if (v.base_sha, v.head_sha) == (source, target)
                ),
                None,
            )
            if version is None:
                raise _GitLabError(
                    404, f"404 Ref Not Found (the fake has no comparison {source}...{target})"
                )
            files = version.files
        return web.json_response(
            {
                "commit": _commit_json(target, self.web_url, project),
                "commits": [_commit_json(target, self.web_url, project)],
                "diffs": [f.api() for f in files],
                "compare_timeout": False,
                "compare_same_ref": source == target,
                "web_url": f"{self.web_url}/{project.path}/-/compare/{source}...{target}",
            }
        )

    async def _merge_base(self, call: _Call) -> web.Response:
        project = self._access(call)
        refs = [value for key, value in call.query_all if key in ("refs[]", "refs")]
        if len(refs) < 2:
            raise _GitLabError(400, "Provide at least 2 refs", key="message")
        shas = [project.heads.get(ref, ref) for ref in refs]
        unknown = [ref for ref, sha in zip(refs, shas, strict=True) if sha not in project.parents]
        if unknown:
            raise _GitLabError(400, f"Could not find ref: {', '.join(unknown)}")
        common = set(_ancestors(project, shas[0]))
        for sha in shas[1:]:
            common &= set(_ancestors(project, sha))
        base = next((sha for sha in _ancestors(project, shas[0]) if sha in common), None)
        if base is None:
            raise _not_found("Merge Base")
        return web.json_response(_commit_json(base, self.web_url, project))

    # --- Project webhooks and their events (GitLab 17.3+), open merge requests listed ----------
    # GitLab keeps a webhook's events (request, response) for seven days and lists them newest
    # first. A resend (17.4) sends the same body with the same Idempotency-Key at once, and
    # logs it as a new event; a GitLab before 17.3 has none of these routes (404).

    def add_hook(
        self, project: str | int, hook_id: int, url: str, *, token: str | None = None
    ) -> None:
        """A project webhook sending to `url` with `token` as its X-Gitlab-Token."""
        stored = self._project(project)
        self._hooks[hook_id] = _Hook(hook_id, stored.id, url, token)

    def record_hook_event(
        self,
        hook_id: int,
        payload: Mapping[str, Any],
        *,
        response_status: int | str = 502,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """An event GitLab sent without the test's receiver seeing it: the receiver was down
        (`response_status` "internal error") or a proxy answered, e.g. 502."""
        hook = self._hooks[hook_id]
        headers = self._hook_headers(hook, payload, idempotency_key or str(uuid.uuid4()))
        return self._log_event(hook, headers, payload, str(response_status), "")

    async def deliver_hook(self, hook_id: int, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send a webhook now to the hook's URL and log the event."""
        hook = self._hooks[hook_id]
        headers = self._hook_headers(hook, payload, str(uuid.uuid4()))
        return await self._execute(hook, headers, dict(payload))

    def hook_events(self, hook_id: int) -> list[dict[str, Any]]:
        """The webhook's events, newest first, as the API lists them."""
        return copy.deepcopy(list(reversed(self._hooks[hook_id].events)))

    def _hook_headers(
        self, hook: _Hook, payload: Mapping[str, Any], idempotency_key: str
    ) -> dict[str, str]:
        kind = str(payload.get("object_kind") or "")
        header = HOOK_TRIGGERS.get(kind, (f"{kind}_hooks", f"{kind.title()} Hook"))[1]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitLab/17.6.0",
            "Idempotency-Key": idempotency_key,
            "X-Gitlab-Event": header,
            "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
            "X-Gitlab-Instance": self.web_url,
            "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        }
        if hook.token is not None:
            headers["X-Gitlab-Token"] = hook.token
        return headers

    def _log_event(
        self,
        hook: _Hook,
        headers: Mapping[str, str],
        payload: Mapping[str, Any],
        status: str,
        body: str,
    ) -> dict[str, Any]:
        kind = str(payload.get("object_kind") or "")
        shown = {k: ("[REDACTED]" if k == "X-Gitlab-Token" else v) for k, v in headers.items()}
        event = {
            "id": next(self._ids),
            "url": hook.url,
            "trigger": HOOK_TRIGGERS.get(kind, (f"{kind}_hooks", ""))[0],
            "request_headers": shown,
            "request_data": copy.deepcopy(dict(payload)),
            "response_headers": {},
            "response_body": body,
            "execution_duration": 0.05,
            "response_status": status,
            "_created": self.clock(),  # not shown: GitLab's API gives no time
            "_headers": dict(headers),  # what was really sent, token included
        }
        hook.events.append(event)
        return _public_event(event)

    async def _execute(
        self, hook: _Hook, headers: dict[str, str], payload: dict[str, Any]
    ) -> dict[str, Any]:
        if self._sender is None:
            self._sender = aiohttp.ClientSession()
        try:
            async with self._sender.post(
                hook.url,
                data=json.dumps(payload).encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as answer:
                status, body = str(answer.status), await answer.text()
        except (aiohttp.ClientError, TimeoutError):
            status, body = "internal error", ""
        return self._log_event(hook, headers, payload, status, body)

    def _recovery_routes(self) -> list[tuple[str, tuple[str, ...], Handler]]:
        events = ("projects", ":id", "hooks", ":hook", "events")
        return [
            ("GET", events, self._list_hook_events),
            ("POST", (*events, ":event", "resend"), self._resend_hook_event),
            ("GET", ("projects", ":id", "merge_requests"), self._list_mrs),
        ]

    def _hook_of(self, call: _Call) -> _Hook:
        project = self._access(call)
        if project.members.get(call.user.id, 0) < ACCESS["maintainer"]:
            raise _GitLabError(403, "403 Forbidden")
        hook = self._hooks.get(_int(call.params["hook"]))
        if not self.hook_events_supported or hook is None or hook.project_id != project.id:
            raise _not_found()
        return hook

    async def _list_hook_events(self, call: _Call) -> web.Response:
        """Newest first; `status` / `status[]`: codes, or successful, client_failure,
        server_failure (which takes "internal error" too)."""
        hook = self._hook_of(call)
        wanted = [v for k, v in call.query_all if k in ("status", "status[]")]
        found = [e for e in reversed(hook.events) if not wanted or _status_in(e, wanted)]
        return self._paged(call, [_public_event(e) for e in found])

    async def _resend_hook_event(self, call: _Call) -> web.Response:
        hook = self._hook_of(call)
        now = self.clock()
        hook.resends = [at for at in hook.resends if at > now - 60]
        if len(hook.resends) >= RESENDS_PER_MINUTE:
            return self._rate_limited(60 - (now - hook.resends[0]))
        wanted = _int(call.params["event"])
        logged = next((e for e in hook.events if e["id"] == wanted), None)
        if logged is None:
            raise _not_found()
        hook.resends.append(now)
        self.resent.append(wanted)
        headers = dict(logged["_headers"])
        headers["X-Gitlab-Webhook-UUID"] = str(uuid.uuid4())
        headers["X-Gitlab-Event-UUID"] = str(uuid.uuid4())
        event = await self._execute(hook, headers, copy.deepcopy(logged["request_data"]))
        code = event["response_status"]
        return web.json_response(
            {"response_status": int(code) if code.isdigit() else code}, status=201
        )

    async def _list_mrs(self, call: _Call) -> web.Response:
        """GET /projects/:id/merge_requests: `state`, `updated_after`, `order_by`
        (created_at, updated_at), `sort` (desc by default), paged."""
        project = self._access(call)
        state = call.query.get("state", "all")
        mrs = [self._mr_json(project, mr) for mr in project.mrs.values()]
        if state != "all":
            mrs = [m for m in mrs if m["state"] == state]
        after = call.query.get("updated_after")
        if after:
            try:
                since = datetime.fromisoformat(after.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise _GitLabError(400, "updated_after is invalid", key="error") from None
            mrs = [m for m in mrs if _epoch(m["updated_at"]) >= since]
        order = call.query.get("order_by", "created_at")
        if order not in ("created_at", "updated_at"):
            raise _GitLabError(400, "order_by does not have a valid value", key="error")
        mrs.sort(key=lambda m: (m[order], m["iid"]), reverse=call.query.get("sort") != "asc")
        return self._paged(call, mrs)

    # --- Shapes -----------------------------------------------------------------------------------

    def _paged(self, call: _Call, items: Sequence[Any]) -> web.Response:
        try:
            page = max(int(call.query.get("page") or 1), 1)
            per_page = min(max(int(call.query.get("per_page") or 20), 1), MAX_PER_PAGE)
        except ValueError:
            raise _GitLabError(400, "page is invalid", key="error") from None
        total_pages = max(math.ceil(len(items) / per_page), 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        url = call.request.url

        def link(number: int) -> str:
            query = dict(call.query) | {"page": str(number), "per_page": str(per_page)}
            return str(url.with_query(None)) + "?" + urlencode(query)

        links = [f'<{link(page + 1)}>; rel="next"'] if page < total_pages else []
        if page > 1:
            links.append(f'<{link(page - 1)}>; rel="prev"')
        links += [f'<{link(1)}>; rel="first"', f'<{link(total_pages)}>; rel="last"']
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Next-Page": str(page + 1) if page < total_pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
            "X-Total": str(len(items)),
            "X-Total-Pages": str(total_pages),
            "Link": ", ".join(links),
        }
        return web.json_response(copy.deepcopy(list(chunk)), headers=headers)

    def _project_json(self, project: _Project) -> dict[str, Any]:
        namespace, _, name = project.path.rpartition("/")
        return {
            "id": project.id,
            "name": name,
            "path": name,
            "name_with_namespace": project.path.replace("/", " / "),
            "path_with_namespace": project.path,
            "default_branch": project.default_branch,
            "visibility": project.visibility,
            "web_url": f"{self.web_url}/{project.path}",
            "namespace": {"full_path": namespace, "path": namespace.rpartition("/")[2]},
            "archived": False,
            "merge_requests_enabled": True,
        }

    def _mr_json(self, project: _Project, mr: _MR) -> dict[str, Any]:
        version = mr.latest
        web_url = f"{self.web_url}/{project.path}/-/merge_requests/{mr.iid}"
        return {
            "id": mr.id,
            "iid": mr.iid,
            "project_id": project.id,
            "title": mr.title,
            "description": mr.description,
            "state": mr.state,
            "created_at": mr.created_at,
            "updated_at": version.created_at,
            "merged_at": None,
            "closed_at": None,
            "target_branch": mr.target_branch,
            "source_branch": mr.source_branch,
            "user_notes_count": len(mr.notes()),
            "upvotes": 0,
            "downvotes": 0,
            "author": _user_json(mr.author, self.web_url),
            "assignees": [],
            "assignee": None,
            "reviewers": [],
            "source_project_id": project.id,
            "target_project_id": project.id,
            "labels": list(mr.labels),
            "draft": mr.draft,
            "work_in_progress": mr.draft,
            "milestone": None,
            "merge_when_pipeline_succeeds": False,
            "merge_status": "preparing" if mr.preparing else "can_be_merged",
            "detailed_merge_status": "preparing" if mr.preparing else "mergeable",
            "sha": version.head_sha,
            "merge_commit_sha": None,
            "squash_commit_sha": None,
            "discussion_locked": None,
            "should_remove_source_branch": None,
            "force_remove_source_branch": False,
            "reference": f"!{mr.iid}",
            "references": {
                "short": f"!{mr.iid}",
                "relative": f"!{mr.iid}",
                "full": f"{project.path}!{mr.iid}",
            },
            "web_url": web_url,
            "time_stats": {"time_estimate": 0, "total_time_spent": 0},
            "squash": False,
            "task_completion_status": {"count": 0, "completed_count": 0},
            "has_conflicts": False,
            "blocking_discussions_resolved": True,
            "changes_count": None if mr.preparing else str(len(version.files)),
            "diff_refs": None if mr.preparing else version.refs(),
            "merge_error": None,
            "first_contribution": False,
            "user": {"can_merge": True},
        }


# --- Pure helpers ---------------------------------------------------------------------------


def _level(access: str | int) -> int:
    if isinstance(access, int):
        return access
    try:
        return ACCESS[access.lower()]
    except KeyError:
        raise ValueError(f"access must be one of {sorted(ACCESS)} or a level") from None


def _user_json(user: _User, web: str) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "name": user.name,
        "state": user.state,
        "locked": False,
        "avatar_url": f"{web}/uploads/-/system/user/avatar/{user.id}/avatar.png",
        "web_url": f"{web}/{user.username}",
    }


def _commit_json(sha: str, web: str, project: _Project) -> dict[str, Any]:
    return {
        "id": sha,
        "short_id": sha[:8],
        "title": f"Commit {sha[:8]}",
        "message": f"Commit {sha[:8]}\n",
        "parent_ids": list(project.parents.get(sha, [])),
        "author_name": "Dev",
        "author_email": "dev@example.com",
        "created_at": "2024-01-01T00:00:00.000Z",
        "web_url": f"{web}/{project.path}/-/commit/{sha}",
    }


def _public_draft(draft: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in draft.items() if not k.startswith("_")}


def _discussion(mr: _MR, discussion_id: str) -> dict[str, Any]:
    found = next((d for d in mr.discussions if d["id"] == discussion_id), None)
    if found is None:
        raise _not_found("Discussion")
    return found


def _note(mr: _MR, note_id: int) -> dict[str, Any]:
    found = next((n for n in mr.notes() if n["id"] == note_id), None)
    if found is None:
        raise _not_found("Note")
    return found


def _transition(record: dict[str, Any], state: str) -> None:
    """GitLab's commit status state machine, as POST /statuses drives it."""
    current = record["status"]

    def refuse(event: str) -> _GitLabError:
        return _GitLabError(
            400,
            f"Cannot transition status via :{event} from :{current} "
            f'(Reason(s): Status cannot transition via "{event}")',
        )

    if state == "pending":
        if current in ("pending", "running"):
            raise refuse("enqueue")
        record["status"] = "pending"
    elif state == "running":
        if current == "running":
            raise refuse("run")
        record["status"] = "running"  # enqueue, then run
    elif state == "success":
        record["status"] = "success"
    elif state == "failed":
        record["status"] = "failed"
    elif state == "canceled":
        record["status"] = "canceled"
    else:
        if current in ("pending", "running"):
            raise refuse("skip")
        record["status"] = "skipped"


def _ancestors(project: _Project, sha: str) -> list[str]:
    """`sha` and its ancestors, nearest first."""
    order: list[str] = []
    queue = [sha]
    while queue:
        current = queue.pop(0)
        if current in order:
            continue
        order.append(current)
        queue.extend(project.parents.get(current, []))
    return order


def _diff_lines(diff: str) -> list[tuple[str, int | None, int | None]]:
    lines: list[tuple[str, int | None, int | None]] = []
    old = new = 0
    for text in diff.splitlines():
        header = re.match(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@", text)
        if header:
            old, new = int(header[1]), int(header[2])
        elif text.startswith("\\") or not (old or new):
            continue
        elif text.startswith("+"):
            lines.append(("+", None, new))
            new += 1
        elif text.startswith("-"):
            lines.append(("-", old, None))
            old += 1
        else:
            lines.append((" ", old, new))
            old, new = old + 1, new + 1
    return lines


def _line(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, segment in zip(pattern, segments, strict=True):
        if part.startswith(":"):
            params[part[1:]] = segment
        elif part != segment:
            return None
    return params


def _parse_body(request: web.Request, body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    if request.content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode()))
    try:
        data = json.loads(body)
    except ValueError:
        raise _GitLabError(400, "400 Bad request - body is not JSON") from None
    return data if isinstance(data, dict) else {}


def _required(data: Mapping[str, Any], key: str) -> Any:
    value = data.get(key)
    if value is None or value == "":
        raise _GitLabError(400, f"{key} is missing", key="error")
    return value


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _not_found() from None


def _sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()  # noqa: S324 - a fake commit id


def _is_sha(ref: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{40}", ref))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _public_event(event: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in event.items() if not k.startswith("_")})


def _status_in(event: Mapping[str, Any], wanted: list[str]) -> bool:
    status = str(event["response_status"])
    code = int(status) if status.isdigit() else None
    for filter_ in wanted:
        if filter_ == "successful" and code is not None and 200 <= code < 300:
            return True
        if filter_ == "client_failure" and code is not None and 400 <= code < 500:
            return True
        if filter_ == "server_failure" and (code is None or 500 <= code < 600):
            return True
        if filter_ == status:
            return True
    return False


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
