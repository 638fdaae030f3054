"""Platform-neutral events: one vocabulary for GitHub and GitLab deliveries.

`from_github` and `from_gitlab` are pure functions from a delivery (event name, delivery id,
decoded JSON body) to an `Event`; `github_from_json` is `from_github` for the body's JSON text,
as intake has it (the Event's `payload`, a read-only mapping, is then decoded only if read).
Handlers register for the normalized names:

- `pull_request` × opened | synchronize | reopened | ready_for_review | closed | converted_to_draft
- `comment` × created | edited (a comment on a pull/merge request, inline or not)
- `installation` × created | deleted | suspend | unsuspend
- `ping`

Anything else keeps its raw name (GitHub's `X-GitHub-Event`, GitLab's `object_kind`) and action.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from platforms.base import CommentRef, PlatformName

Platform = PlatformName  # the older name, still imported

# GitLab service-account and bot users: project/group access tokens and `*-bot` accounts.
_GITLAB_BOT_NAME = re.compile(r"^(project|group)_\d+_bot(_[0-9a-f]+)?$|\[bot\]$|-bot$")


class PayloadError(ValueError):
    """A delivery whose body lacks what its event name promises."""


class NotJSON(PayloadError):
    """A delivery whose body is not a JSON object (the message says why)."""


def loads(text: str | bytes) -> Any:
    """JSON that intake accepted, as a worker reads it back: orjson, and the standard library
    where orjson refuses a number beyond a double's range (JSON allows it; intake's parser
    reads it as infinity, and so does this)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class JSONPayload(Mapping[str, Any]):
    """A delivery's body as a mapping, decoded the first time something reads it. Intake checks
    the fields it normalizes straight from the JSON text and queues that text as it came, so the
    web process never builds the body's objects for most deliveries (issue 20: decoding a 28 KB
    body into dicts was a quarter of its time)."""

    __slots__ = ("_decoded", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._decoded: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        if self._decoded is None:
            decoded = loads(self.text)
            self._decoded = decoded if isinstance(decoded, dict) else {}
        return self._decoded

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


@dataclass(frozen=True)
class Sender:
    login: str
    is_bot: bool = False
    id: int | None = None


@dataclass(frozen=True)
class Comment:
    """A comment on a pull/merge request.

    `kind` is "conversation" for the PR's main thread and "inline" for one on a diff line.
    `thread` groups replies: GitHub's root review-comment id, GitLab's discussion id.
    """

    id: int
    body: str
    author: Sender
    kind: Literal["conversation", "inline"]
    thread: str | None = None
    in_reply_to: int | None = None
    path: str | None = None
    line: int | None = None
    previous_body: str | None = None


@dataclass(frozen=True)
class Event:
    platform: PlatformName
    name: str
    action: str | None
    delivery_id: str
    repo: str | None
    number: int | None = None
    installation_id: int | None = None
    sender: Sender | None = None
    comment: Comment | None = None
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.name}.{self.action}" if self.action else self.name

    def to_json(self, payload_text: str | None = None) -> str:
        """The event as JSON for the queue. `payload_text`, the body exactly as received (valid
        JSON for `payload`), is spliced in as is: re-encoding a 25 MiB body costs real time."""
        head: dict[str, Any] = {
            "platform": self.platform,
            "name": self.name,
            "action": self.action,
            "delivery_id": self.delivery_id,
            "repo": self.repo,
            "number": self.number,
            "installation_id": self.installation_id,
            "sender": self.sender,  # orjson writes a dataclass as its fields
            "comment": self.comment,
        }
        if payload_text is None:
            if isinstance(self.payload, JSONPayload):
                payload_text = self.payload.text
            else:
                payload_text = orjson.dumps(self.payload).decode()
        return orjson.dumps(head).decode()[:-1] + ',"payload":' + payload_text + "}"

    @classmethod
    def from_json(cls, text: str) -> Event:
        data = loads(text)
        sender = Sender(**data["sender"]) if data.get("sender") else None
        comment = None
        if data.get("comment"):
            raw = dict(data["comment"])
            raw["author"] = Sender(**raw["author"])
            comment = Comment(**raw)
        return cls(
            platform=data["platform"],
            name=data["name"],
            action=data.get("action"),
            delivery_id=data["delivery_id"],
            repo=data.get("repo"),
            number=data.get("number"),
            installation_id=data.get("installation_id"),
            sender=sender,
            comment=comment,
            payload=data.get("payload") or {},
        )


def comment_ref(event: Event, comment: Comment | None = None) -> CommentRef:
    """Where the event's comment (or `comment`) lives, to reply to it or react to it."""
    comment = comment or event.comment
    if comment is None:
        raise ValueError(f"{event.label} carries no comment")
    return CommentRef(id=comment.id, kind=comment.kind, number=event.number, thread=comment.thread)


# --- The shapes a delivery must have ------------------------------------------------------------
# Only the fields normalization reads, each with its type: a delivery that breaks one is refused
# with a reason naming it (never a TypeError deep in a handler). Everything else is left alone.

_MAX_ID = 2**63 - 1  # ids and numbers fit the store's 64-bit integers
Positive = Annotated[int, Field(ge=1, le=_MAX_ID)]
# Event names and actions become labels, metrics and store keys: a plain word, never control
# characters.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]


class _Shape(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _GitHubUser(_Shape):
    login: str | None = None
    id: Positive | None = None
    type: str | None = None


class _Repository(_Shape):
    full_name: str | None = None


class _Installation(_Shape):
    id: Positive | None = None


class _InstalledAt(_Installation):
    id: Positive


class _PullRequest(_Shape):
    number: Positive | None = None


class _Issue(_Shape):
    number: Positive | None = None
    pull_request: Any = None  # present (an object of links) when the issue is a pull request


class _GitHubComment(_Shape):
    id: Positive
    body: str | None = None
    user: _GitHubUser | None = None
    in_reply_to_id: Positive | None = None
    path: str | None = None
    line: Positive | None = None
    original_line: Positive | None = None


class _BodyChange(_Shape):
    previous: str | None = Field(None, alias="from")


class _CommentChanges(_Shape):
    body: _BodyChange | None = None


class _GitHubDelivery(_Shape):
    """What any GitHub event may carry."""

    action: Name | None = None
    repository: _Repository | None = None
    installation: _Installation | None = None
    sender: _GitHubUser | None = None


class _PullRequestDelivery(_GitHubDelivery):
    number: Positive | None = None
    pull_request: _PullRequest


class _IssueCommentDelivery(_GitHubDelivery):
    issue: _Issue
    comment: _GitHubComment
    changes: _CommentChanges | None = None


class _ReviewCommentDelivery(_GitHubDelivery):
    pull_request: _PullRequest
    comment: _GitHubComment
    changes: _CommentChanges | None = None


class _InstallationDelivery(_GitHubDelivery):
    installation: _InstalledAt


_GITHUB_SHAPES: dict[str, type[_GitHubDelivery]] = {
    "pull_request": _PullRequestDelivery,
    "issue_comment": _IssueCommentDelivery,
    "pull_request_review_comment": _ReviewCommentDelivery,
    "installation": _InstallationDelivery,
    "installation_repositories": _InstallationDelivery,
}


class _GitLabUser(_Shape):
    username: str | None = None
    id: Positive | None = None
    bot: bool | None = None


class _Project(_Shape):
    path_with_namespace: str | None = None


class _Attributes(_Shape):
    action: Name | None = None


class _GitLabDelivery(_Shape):
    """What any GitLab event may carry."""

    object_kind: Name | None = None
    event_type: Name | None = None
    project: _Project | None = None
    user: _GitLabUser | None = None
    object_attributes: _Attributes | None = None


class _MergeRequestAttributes(_Attributes):
    iid: Positive
    oldrev: str | None = None


class _DraftChange(_Shape):
    current: bool | None = None


class _MergeRequestChanges(_Shape):
    draft: _DraftChange | None = None
    work_in_progress: _DraftChange | None = None


class _MergeRequestDelivery(_GitLabDelivery):
    object_attributes: _MergeRequestAttributes
    changes: _MergeRequestChanges | None = None


class _Position(_Shape):
    new_line: Positive | None = None
    old_line: Positive | None = None
    new_path: str | None = None
    old_path: str | None = None


class _NoteAttributes(_Attributes):
    id: Positive | None = None
    note: str | None = None
    noteable_type: str | None = None
    system: bool | None = None
    type: str | None = None
    position: _Position | None = None
    discussion_id: str | None = None


class _MergeRequestRef(_Shape):
    iid: Positive


class _NoteDelivery(_GitLabDelivery):
    object_attributes: _NoteAttributes
    merge_request: _MergeRequestRef | None = None


_GITLAB_SHAPES: dict[str, type[_GitLabDelivery]] = {
    "merge_request": _MergeRequestDelivery,
    "note": _NoteDelivery,
}

_PROBLEMS = {
    "missing": "is missing",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "int_type": "must be an integer",
    "greater_than_equal": "is out of range",
    "less_than_equal": "is out of range",
    "string_type": "must be a string",
    "string_pattern_mismatch": "must be a word of letters, digits, '_', '.', ':' or '-'",
    "bool_type": "must be true or false",
}

_T = TypeVar("_T", bound=_Shape)


def _shape(model: type[_T], payload: dict[str, Any], what: str) -> _T:
    """`payload` read as `model`, or a PayloadError naming the first field that breaks it."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise _payload_error(exc, what) from None


def _payload_error(exc: ValidationError, what: str) -> PayloadError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    problem = _PROBLEMS.get(first["type"], first["msg"])
    more = len(errors) - 1
    rest = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return PayloadError(f"{what} delivery: '{where}' {problem}{rest}")


# Intake reads the shape straight from the JSON text (pydantic's own parser, which builds no
# Python objects for the fields it skips). That parser also takes the non-JSON literals NaN and
# Infinity, which orjson refuses: a text that holds either word anywhere (in a string too) is
# decoded with orjson first instead.
_LITERALS = ("NaN", "Infinity")
# Looking for a word goes from one of its first letter to the next (memchr: a few µs on a 28 KB
# body, where str.find of "NaN" takes 20); past this many, str.find does the rest.
LITERAL_SCAN = 64


def _holds(text: str, word: str) -> bool:
    at = text.find(word[0])
    for _ in range(LITERAL_SCAN):
        if at == -1:
            return False
        if text.startswith(word, at):
            return True
        at = text.find(word[0], at + 1)
    return at != -1 and text.find(word, at) != -1


def _may_hold_literal(text: str) -> bool:
    return any(_holds(text, word) for word in _LITERALS)


def json_object(text: str) -> dict[str, Any]:
    """`text` decoded, when it is a JSON object; NotJSON, saying why, when it is not."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise NotJSON(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise NotJSON("body must be a JSON object")
    return data


def _shape_json(model: type[_T], text: str, what: str) -> _T:
    """`_shape` from the JSON text; NotJSON when it is not a JSON object."""
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            raise NotJSON(f"body is not valid JSON: {first['ctx']['error']}") from None
        if first["type"] == "model_type" and not first["loc"]:
            raise NotJSON("body must be a JSON object") from None
        raise _payload_error(exc, what) from None


# --- GitHub ------------------------------------------------------------------------------------


def _github_sender(user: _GitHubUser | None) -> Sender | None:
    if user is None or not user.login:
        return None
    return Sender(
        login=user.login,
        is_bot=user.type == "Bot" or user.login.endswith("[bot]"),
        id=user.id,
    )


def from_github(event_name: str, delivery_id: str, payload: dict[str, Any]) -> Event:
    """Normalize a GitHub webhook delivery (`X-GitHub-Event`, `X-GitHub-Delivery`, body).

    Raises PayloadError, naming the field, when a field it reads is missing or of the wrong type.
    """
    if not isinstance(payload, dict):
        raise PayloadError("the body is not a JSON object")
    delivery = _shape(_GITHUB_SHAPES.get(event_name, _GitHubDelivery), payload, event_name)
    return _github_event(event_name, delivery_id, delivery, payload)


def github_from_json(event_name: str, delivery_id: str, text: str) -> Event:
    """`from_github` for a body still in its JSON text, whose payload (a `JSONPayload`) is
    decoded only if read. Raises NotJSON when the text is not a JSON object."""
    if _may_hold_literal(text):
        return from_github(event_name, delivery_id, json_object(text))
    shape = _GITHUB_SHAPES.get(event_name, _GitHubDelivery)
    delivery = _shape_json(shape, text, event_name)
    return _github_event(event_name, delivery_id, delivery, JSONPayload(text))


def _github_event(
    event_name: str, delivery_id: str, delivery: _GitHubDelivery, payload: Mapping[str, Any]
) -> Event:
    name = event_name
    number: int | None = None
    comment: Comment | None = None

    if isinstance(delivery, _PullRequestDelivery):
        number = delivery.number or delivery.pull_request.number
        if number is None:
            raise PayloadError("pull_request delivery: 'number' is missing")
    elif isinstance(delivery, _IssueCommentDelivery):
        if delivery.issue.pull_request:
            # GitHub sends PR conversation comments as issue comments; only those concern us.
            if delivery.issue.number is None:
                raise PayloadError("issue_comment delivery: 'issue.number' is missing")
            name, number = "comment", delivery.issue.number
            comment = _github_comment(delivery.comment, "conversation", delivery.changes)
    elif isinstance(delivery, _ReviewCommentDelivery):
        if delivery.pull_request.number is None:
            raise PayloadError(
                "pull_request_review_comment delivery: 'pull_request.number' is missing"
            )
        name, number = "comment", delivery.pull_request.number
        comment = _github_comment(delivery.comment, "inline", delivery.changes)

    return Event(
        platform="github",
        name=name,
        action=delivery.action,
        delivery_id=delivery_id,
        repo=delivery.repository.full_name if delivery.repository else None,
        number=number,
        installation_id=delivery.installation.id if delivery.installation else None,
        sender=_github_sender(delivery.sender),
        comment=comment,
        payload=payload,
    )


def _github_comment(
    raw: _GitHubComment, kind: Literal["conversation", "inline"], changes: _CommentChanges | None
) -> Comment:
    reply_to = raw.in_reply_to_id
    return Comment(
        id=raw.id,
        body=raw.body or "",
        author=_github_sender(raw.user) or Sender(login=""),
        kind=kind,
        thread=str(reply_to or raw.id) if kind == "inline" else None,
        in_reply_to=reply_to,
        path=raw.path,
        line=raw.line if raw.line is not None else raw.original_line,
        previous_body=changes.body.previous if changes and changes.body else None,
    )


# --- GitLab ------------------------------------------------------------------------------------

_GITLAB_MR_ACTIONS = {
    "open": "opened",
    "reopen": "reopened",
    "close": "closed",
    "merge": "closed",
}


def is_gitlab_bot(username: str) -> bool:
    """Whether a GitLab username is a service account's: hook payloads carry no bot flag."""
    return bool(_GITLAB_BOT_NAME.search(username))


def _gitlab_sender(user: _GitLabUser | None, bot_names: frozenset[str]) -> Sender | None:
    if user is None or not user.username:
        return None
    login = user.username
    is_bot = bool(user.bot) or is_gitlab_bot(login) or login.lower() in bot_names
    return Sender(login=login, is_bot=is_bot, id=user.id)


def from_gitlab(
    delivery_id: str, payload: dict[str, Any], *, bot_names: frozenset[str] = frozenset()
) -> Event:
    """Normalize a GitLab webhook delivery. GitLab names the kind in the body (`object_kind`).

    `bot_names` are usernames to treat as bots (GitLab's hook payloads carry no bot flag).
    Raises PayloadError, naming the field, when a field it reads is missing or of the wrong type.
    """
    if not isinstance(payload, dict):
        raise PayloadError("the body is not a JSON object")
    kind = payload.get("object_kind") or payload.get("event_type")
    if kind is None or kind == "":
        raise PayloadError("a GitLab delivery must carry an 'object_kind'")
    shape = _GITLAB_SHAPES.get(kind, _GitLabDelivery) if isinstance(kind, str) else _GitLabDelivery
    delivery = _shape(shape, payload, kind if shape is not _GitLabDelivery else "GitLab")
    kind = str(delivery.object_kind or delivery.event_type)
    attrs = delivery.object_attributes
    name, action = kind, attrs.action if attrs else None
    number: int | None = None
    comment: Comment | None = None

    if isinstance(delivery, _MergeRequestDelivery):
        name, number = "pull_request", delivery.object_attributes.iid
        action = _gitlab_mr_action(delivery.object_attributes, delivery.changes)
    elif (
        isinstance(delivery, _NoteDelivery)
        and delivery.object_attributes.noteable_type == "MergeRequest"
        and not delivery.object_attributes.system
    ):
        # System notes ("added 1 commit") are GitLab's own, not someone talking.
        note = delivery.object_attributes
        if delivery.merge_request is None:
            raise PayloadError("note delivery: 'merge_request' is missing")
        if note.id is None:
            raise PayloadError("note delivery: 'object_attributes.id' is missing")
        name, number = "comment", delivery.merge_request.iid
        # Older GitLab sends note hooks without an action, and for new notes only.
        action = {"create": "created", "update": "edited", None: "created"}.get(action, action)
        comment = _gitlab_comment(note, note.id, _gitlab_sender(delivery.user, bot_names))

    return Event(
        platform="gitlab",
        name=name,
        action=action,
        delivery_id=delivery_id,
        repo=delivery.project.path_with_namespace if delivery.project else None,
        number=number,
        installation_id=None,
        sender=_gitlab_sender(delivery.user, bot_names),
        comment=comment,
        payload=payload,
    )


def _gitlab_mr_action(
    attrs: _MergeRequestAttributes, changes: _MergeRequestChanges | None
) -> str | None:
    raw = attrs.action
    if raw in _GITLAB_MR_ACTIONS:
        return _GITLAB_MR_ACTIONS[raw]
    if raw != "update":
        return raw
    if attrs.oldrev:
        return "synchronize"
    draft = (changes.draft or changes.work_in_progress) if changes else None
    if draft is not None and "current" in draft.model_fields_set:
        return "converted_to_draft" if draft.current else "ready_for_review"
    return "update"


def _gitlab_comment(note: _NoteAttributes, note_id: int, author: Sender | None) -> Comment:
    position = note.position
    line = path = None
    if position:
        line = position.new_line or position.old_line
        path = position.new_path or position.old_path
    return Comment(
        id=note_id,
        body=note.note or "",
        author=author or Sender(login=""),
        kind="inline" if position or note.type == "DiffNote" else "conversation",
        thread=note.discussion_id or None,
        path=path,
        line=line,
    )
