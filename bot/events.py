"""Platform-neutral events: one vocabulary for GitHub and GitLab deliveries.

`from_github` and `from_gitlab` are pure functions from a delivery (event name, delivery id,
decoded JSON body) to an `Event`. Handlers register for the normalized names:

- `pull_request` × opened | synchronize | reopened | ready_for_review | closed | converted_to_draft
- `comment` × created | edited (a comment on a pull/merge request, inline or not)
- `installation` × created | deleted | suspend | unsuspend
- `ping`

Anything else keeps its raw name (GitHub's `X-GitHub-Event`, GitLab's `object_kind`) and action.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from platforms.base import CommentRef, PlatformName

Platform = PlatformName  # the older name, still imported

# GitLab service-account and bot users: project/group access tokens and `*-bot` accounts.
_GITLAB_BOT_NAME = re.compile(r"^(project|group)_\d+_bot(_[0-9a-f]+)?$|\[bot\]$|-bot$")


class PayloadError(ValueError):
    """A delivery whose body lacks what its event name promises."""


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
    payload: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

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
            "sender": asdict(self.sender) if self.sender else None,
            "comment": asdict(self.comment) if self.comment else None,
        }
        payload = payload_text if payload_text is not None else json.dumps(self.payload)
        return json.dumps(head, separators=(",", ":"))[:-1] + ',"payload":' + payload + "}"

    @classmethod
    def from_json(cls, text: str) -> Event:
        data = orjson.loads(text)
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


# --- GitHub ------------------------------------------------------------------------------------


def _github_sender(user: Any) -> Sender | None:
    if not isinstance(user, dict) or not user.get("login"):
        return None
    login = str(user["login"])
    return Sender(
        login=login,
        is_bot=user.get("type") == "Bot" or login.endswith("[bot]"),
        id=user.get("id"),
    )


def from_github(event_name: str, delivery_id: str, payload: dict[str, Any]) -> Event:
    """Normalize a GitHub webhook delivery (`X-GitHub-Event`, `X-GitHub-Delivery`, body)."""
    if not isinstance(payload, dict):
        raise PayloadError("the body is not a JSON object")
    action = payload.get("action")
    repository = payload.get("repository")
    repo = repository.get("full_name") if isinstance(repository, dict) else None
    installation = payload.get("installation")
    installation_id = installation.get("id") if isinstance(installation, dict) else None
    sender = _github_sender(payload.get("sender"))
    name = event_name
    number: int | None = None
    comment: Comment | None = None

    if event_name == "pull_request":
        pr = _require(payload, "pull_request", event_name)
        number = payload.get("number") or pr.get("number")
    elif event_name == "issue_comment":
        issue = _require(payload, "issue", event_name)
        raw = _require(payload, "comment", event_name)
        if issue.get("pull_request"):
            # GitHub sends PR conversation comments as issue comments; only those concern us.
            name, number = "comment", issue.get("number")
            comment = _github_comment(raw, "conversation", payload)
    elif event_name == "pull_request_review_comment":
        pr = _require(payload, "pull_request", event_name)
        raw = _require(payload, "comment", event_name)
        name, number = "comment", pr.get("number")
        comment = _github_comment(raw, "inline", payload)

    return Event(
        platform="github",
        name=name,
        action=action,
        delivery_id=delivery_id,
        repo=repo,
        number=int(number) if number is not None else None,
        installation_id=int(installation_id) if installation_id is not None else None,
        sender=sender,
        comment=comment,
        payload=payload,
    )


def _github_comment(raw: dict[str, Any], kind: str, payload: dict[str, Any]) -> Comment:
    author = _github_sender(raw.get("user")) or Sender(login="")
    reply_to = raw.get("in_reply_to_id")
    thread = None
    if kind == "inline":
        thread = str(reply_to or raw["id"])
    changes = payload.get("changes")
    previous = None
    if isinstance(changes, dict) and isinstance(changes.get("body"), dict):
        previous = changes["body"].get("from")
    return Comment(
        id=int(raw["id"]),
        body=raw.get("body") or "",
        author=author,
        kind="inline" if kind == "inline" else "conversation",
        thread=thread,
        in_reply_to=int(reply_to) if reply_to else None,
        path=raw.get("path"),
        line=raw.get("line") if raw.get("line") is not None else raw.get("original_line"),
        previous_body=previous,
    )


def _require(payload: dict[str, Any], key: str, event_name: str) -> dict[str, Any]:
    value = payload.get(key)
    if not isinstance(value, dict):
        raise PayloadError(f"a {event_name} delivery must carry a {key!r} object")
    return value


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


def _gitlab_sender(user: Any, bot_names: frozenset[str] = frozenset()) -> Sender | None:
    if not isinstance(user, dict) or not user.get("username"):
        return None
    login = str(user["username"])
    is_bot = bool(user.get("bot")) or is_gitlab_bot(login)
    return Sender(login=login, is_bot=is_bot or login.lower() in bot_names, id=user.get("id"))


def from_gitlab(
    delivery_id: str, payload: dict[str, Any], *, bot_names: frozenset[str] = frozenset()
) -> Event:
    """Normalize a GitLab webhook delivery. GitLab names the kind in the body (`object_kind`).

    `bot_names` are usernames to treat as bots (GitLab's hook payloads carry no bot flag).
    """
    if not isinstance(payload, dict):
        raise PayloadError("the body is not a JSON object")
    kind = payload.get("object_kind") or payload.get("event_type")
    if not isinstance(kind, str) or not kind:
        raise PayloadError("a GitLab delivery must carry an 'object_kind'")
    project = payload.get("project")
    repo = project.get("path_with_namespace") if isinstance(project, dict) else None
    sender = _gitlab_sender(payload.get("user"), bot_names)
    attrs = payload.get("object_attributes")
    attrs = attrs if isinstance(attrs, dict) else {}
    name, action = kind, attrs.get("action")
    number: int | None = None
    comment: Comment | None = None

    if kind == "merge_request":
        if not attrs:
            raise PayloadError("a merge_request delivery must carry 'object_attributes'")
        name, number = "pull_request", attrs.get("iid")
        action = _gitlab_mr_action(attrs, payload.get("changes"))
    elif (
        kind == "note" and attrs.get("noteable_type") == "MergeRequest" and not attrs.get("system")
    ):
        # System notes ("added 1 commit") are GitLab's own, not someone talking.
        mr = payload.get("merge_request")
        if not isinstance(mr, dict):
            raise PayloadError("a note on a merge request must carry 'merge_request'")
        name, number = "comment", mr.get("iid")
        # Older GitLab sends note hooks without an action, and for new notes only.
        action = {"create": "created", "update": "edited", "None": "created"}.get(
            str(action), action
        )
        comment = _gitlab_comment(attrs, payload.get("user"), bot_names)

    return Event(
        platform="gitlab",
        name=name,
        action=action,
        delivery_id=delivery_id,
        repo=repo,
        number=int(number) if number is not None else None,
        installation_id=None,
        sender=sender,
        comment=comment,
        payload=payload,
    )


def _gitlab_mr_action(attrs: dict[str, Any], changes: Any) -> str | None:
    raw = attrs.get("action")
    if raw in _GITLAB_MR_ACTIONS:
        return _GITLAB_MR_ACTIONS[raw]
    if raw != "update":
        return raw if isinstance(raw, str) else None
    if attrs.get("oldrev"):
        return "synchronize"
    changes = changes if isinstance(changes, dict) else {}
    draft = changes.get("draft") or changes.get("work_in_progress")
    if isinstance(draft, dict) and "current" in draft:
        return "converted_to_draft" if draft["current"] else "ready_for_review"
    return "update"


def _gitlab_comment(attrs: dict[str, Any], user: Any, bot_names: frozenset[str]) -> Comment:
    position = attrs.get("position") if isinstance(attrs.get("position"), dict) else None
    line = None
    path = None
    if position:
        line = position.get("new_line") or position.get("old_line")
        path = position.get("new_path") or position.get("old_path")
    author = _gitlab_sender(user, bot_names) or Sender(login="")
    discussion = attrs.get("discussion_id")
    return Comment(
        id=int(attrs["id"]),
        body=attrs.get("note") or "",
        author=author,
        kind="inline" if position or attrs.get("type") == "DiffNote" else "conversation",
        thread=str(discussion) if discussion else None,
        path=path,
        line=int(line) if line is not None else None,
    )
