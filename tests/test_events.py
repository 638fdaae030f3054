"""Normalization: every shared fixture maps to the one vocabulary of DESIGN.md."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from bot.events import (
    LITERAL_SCAN,
    Event,
    JSONPayload,
    NotJSON,
    PayloadError,
    Sender,
    from_github,
    from_gitlab,
    github_from_json,
    is_gitlab_bot,
)
from tests.bad_input import WRONG_TYPES, WrongType
from tests.conftest import fixture_json, fixtures_dir

HELLO = "Codertocat/Hello-World"
CODERTOCAT = Sender("Codertocat", False, 21031067)

# (fixture, X-GitHub-Event) → name, action, repo, number, installation, sender login, comment
GITHUB_CASES: list[tuple[str, str, str, str | None, str | None, int | None, int | None, str]] = [
    ("pull_request/opened.payload.json", "pull_request", "pull_request", "opened", HELLO, 2, 1, "Codertocat"),
    ("pull_request/opened.with-null-body.json", "pull_request", "pull_request", "opened", HELLO, 2, 1, "Codertocat"),
    ("pull_request/synchronize.payload.json", "pull_request", "pull_request", "synchronize", HELLO, 2, 1, "Codertocat"),
    ("pull_request/reopened.payload.json", "pull_request", "pull_request", "reopened", HELLO, 2, 1, "Codertocat"),
    ("pull_request/closed.payload.json", "pull_request", "pull_request", "closed", HELLO, 2, 1, "Codertocat"),
    ("pull_request/ready_for_review.with-installation.payload.json", "pull_request", "pull_request", "ready_for_review", HELLO, 2, 1, "Codertocat"),
    ("pull_request/converted_to_draft.with-installation.payload.json", "pull_request", "pull_request", "converted_to_draft", HELLO, 2, 1, "Codertocat"),
    ("pull_request_review_comment/created.payload.json", "pull_request_review_comment", "comment", "created", HELLO, 2, 1, "Codertocat"),
    # Comments on plain issues keep their raw name: nothing handles them.
    ("issue_comment/created.payload.json", "issue_comment", "issue_comment", "created", HELLO, None, None, "Codertocat"),
    ("issue_comment/edited.payload.json", "issue_comment", "issue_comment", "edited", HELLO, None, None, "Codertocat"),
    ("issue_comment/created.with-installation.payload.json", "issue_comment", "issue_comment", "created", HELLO, None, 1, "Codertocat"),
    ("installation/created.payload.json", "installation", "installation", "created", None, None, 957387, "Codertocat"),
    ("installation/deleted.payload.json", "installation", "installation", "deleted", None, None, 2, "octocat"),
    ("installation/suspend.payload.json", "installation", "installation", "suspend", None, None, 16598467, "Codertocat"),
    ("installation_repositories/added.payload.json", "installation_repositories", "installation_repositories", "added", None, None, 957387, "Codertocat"),
    ("ping/with-app_id.payload.json", "ping", "ping", None, "Octocoders/Hello-World", None, None, "Codertocat"),
    ("check_run/rerequested.payload.json", "check_run", "check_run", "rerequested", "github/hello-world", None, 1, "octocat"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fixture", "header", "name", "action", "repo", "number", "installation", "sender"),
    GITHUB_CASES,
    ids=[case[0] for case in GITHUB_CASES],
)
def test_github_fixture_normalizes(
    fixture: str,
    header: str,
    name: str,
    action: str | None,
    repo: str | None,
    number: int | None,
    installation: int | None,
    sender: str,
) -> None:
    event = from_github(header, "delivery-1", fixture_json(f"github/webhooks/{fixture}"))
    assert (event.platform, event.name, event.action) == ("github", name, action)
    assert event.repo == repo
    assert event.number == number
    assert event.installation_id == installation
    assert event.sender is not None and event.sender.login == sender
    assert event.sender.is_bot is False
    assert event.delivery_id == "delivery-1"


def test_every_github_fixture_is_covered() -> None:
    root = fixtures_dir() / "github" / "webhooks"
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*.json")}
    assert on_disk == {case[0] for case in GITHUB_CASES}


def test_inline_review_comment_carries_path_line_and_thread() -> None:
    event = from_github(
        "pull_request_review_comment",
        "d",
        fixture_json("github/webhooks/pull_request_review_comment/created.payload.json"),
    )
    comment = event.comment
    assert comment is not None
    assert comment.kind == "inline"
    assert (comment.id, comment.path, comment.line) == (284312630, "README.md", 265)
    assert comment.thread == "284312630"  # a root comment starts its own thread
    assert comment.body == "Maybe you should use more emoji on this line."
    assert comment.author == CODERTOCAT


def test_a_reply_in_a_review_thread_points_at_its_root() -> None:
    payload = fixture_json("github/webhooks/pull_request_review_comment/created.payload.json")
    payload["comment"]["in_reply_to_id"] = 111
    comment = from_github("pull_request_review_comment", "d", payload).comment
    assert comment is not None
    assert (comment.thread, comment.in_reply_to) == ("111", 111)


def _on_a_pull_request(payload: dict[str, Any]) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    payload["issue"]["pull_request"] = {"url": "https://api.github.com/repos/x/y/pulls/1"}
    return payload


def test_issue_comment_on_a_pull_request_is_a_conversation_comment() -> None:
    payload = _on_a_pull_request(fixture_json("github/webhooks/issue_comment/created.payload.json"))
    event = from_github("issue_comment", "d", payload)
    assert (event.name, event.action, event.number) == ("comment", "created", 1)
    assert event.comment is not None
    assert event.comment.kind == "conversation"
    assert event.comment.id == 492700400
    assert event.comment.thread is None


def test_edited_comment_keeps_the_previous_body() -> None:
    payload = _on_a_pull_request(fixture_json("github/webhooks/issue_comment/edited.payload.json"))
    payload["changes"] = {"body": {"from": "old text"}}
    event = from_github("issue_comment", "d", payload)
    assert event.action == "edited"
    assert event.comment is not None and event.comment.previous_body == "old text"


def test_github_bots_are_recognized() -> None:
    payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
    payload["sender"] = {"login": "dependabot[bot]", "type": "Bot", "id": 49699333}
    event = from_github("pull_request", "d", payload)
    assert event.sender == Sender("dependabot[bot]", True, 49699333)


def test_null_pull_request_body_is_kept_as_none() -> None:
    event = from_github(
        "pull_request", "d", fixture_json("github/webhooks/pull_request/opened.with-null-body.json")
    )
    assert event.payload["pull_request"]["body"] is None


@pytest.mark.parametrize(
    ("header", "payload", "message"),
    [
        ("pull_request", {"action": "opened"}, "'pull_request' is missing"),
        ("issue_comment", {"action": "created", "issue": {}}, "'comment' is missing"),
    ],
)
def test_github_payload_missing_its_object_is_an_error(
    header: str, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        from_github(header, "d", payload)


def _normalize(platform: str, event: str, payload: dict[str, Any]) -> Event:
    if platform == "github":
        return from_github(event, "d", payload)
    return from_gitlab("d", payload)


@pytest.mark.parametrize(
    "wrong", WRONG_TYPES, ids=[f"{w.platform}: {w.label}" for w in WRONG_TYPES]
)
def test_a_field_of_the_wrong_type_is_a_payload_error_naming_it(wrong: WrongType) -> None:
    """Each field normalization reads is checked: a clear reason, never a TypeError or KeyError."""
    payload = wrong.payload()
    with pytest.raises(PayloadError) as caught:
        _normalize(wrong.platform, wrong.event, payload)
    assert wrong.named_in(str(caught.value)), str(caught.value)


def test_the_reason_names_the_field_and_what_it_must_be() -> None:
    payload = fixture_json("github/webhooks/pull_request_review_comment/created.payload.json")
    payload["comment"]["line"] = "12"
    with pytest.raises(PayloadError) as caught:
        from_github("pull_request_review_comment", "d", payload)
    assert str(caught.value) == (
        "pull_request_review_comment delivery: 'comment.line' must be an integer"
    )
    del payload["comment"]["id"]
    with pytest.raises(PayloadError, match=r"'comment.id' is missing \(and 1 more problem\)"):
        from_github("pull_request_review_comment", "d", payload)


def test_nulls_where_github_sends_them_are_accepted() -> None:
    payload = fixture_json("github/webhooks/pull_request_review_comment/created.payload.json")
    payload["comment"].update(line=None, in_reply_to_id=None, body=None)
    payload["installation"] = None
    event = from_github("pull_request_review_comment", "d", payload)
    assert event.comment is not None
    assert (event.comment.line, event.comment.body) == (payload["comment"]["original_line"], "")
    assert event.installation_id is None


# --- From the JSON text (intake) ----------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "header"), [case[:2] for case in GITHUB_CASES])
def test_from_the_json_text_is_the_same_event(fixture: str, header: str) -> None:
    path = f"github/webhooks/{fixture}"
    text = (fixtures_dir() / path).read_text()
    event = github_from_json(header, "delivery-1", text)
    assert event == from_github(header, "delivery-1", fixture_json(path))
    # The body is decoded only when something reads it, and then it is all there.
    assert isinstance(event.payload, JSONPayload)
    assert event.payload._decoded is None
    assert dict(event.payload) == fixture_json(path)
    assert Event.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    "wrong",
    [w for w in WRONG_TYPES if w.platform == "github"],
    ids=[w.label for w in WRONG_TYPES if w.platform == "github"],
)
def test_from_the_json_text_a_wrong_type_gives_the_same_reason(wrong: WrongType) -> None:
    with pytest.raises(PayloadError) as from_dict:
        from_github(wrong.event, "d", wrong.payload())
    with pytest.raises(PayloadError) as from_text:
        github_from_json(wrong.event, "d", wrong.body().decode())
    assert not isinstance(from_text.value, NotJSON)
    assert str(from_text.value) == str(from_dict.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "body is not valid JSON"),
        ('{"action": "opened",}', "body is not valid JSON: trailing comma"),
        ("[1, 2]", "body must be a JSON object"),
        ('"opened"', "body must be a JSON object"),
        ('{"action": NaN, "pull_request": {"number": 1}}', "body is not valid JSON"),
        ('{"x": -Infinity, "pull_request": {"number": 1}}', "body is not valid JSON"),
        ('{"x": [Infinity], "pull_request": {"number": 1}}', "body is not valid JSON"),
        ('{"x": "\\ud800", "pull_request": {"number": 1}}', "body is not valid JSON"),
    ],
)
def test_from_the_json_text_what_is_not_json_is_refused(text: str, reason: str) -> None:
    with pytest.raises(NotJSON, match=reason):
        github_from_json("pull_request", "d", text)


def test_the_words_nan_and_infinity_inside_strings_are_text() -> None:
    payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
    payload["pull_request"]["title"] = "NaN and Infinity handled"
    payload["pull_request"]["body"] = "N I " * (LITERAL_SCAN * 2)  # past the scan's bound
    event = github_from_json("pull_request", "d", json.dumps(payload))
    assert event == from_github("pull_request", "d", payload)
    assert event.payload["pull_request"]["title"] == "NaN and Infinity handled"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("letters", [0, LITERAL_SCAN - 1, LITERAL_SCAN, LITERAL_SCAN * 3])
def test_a_literal_after_many_of_its_first_letters_is_still_found(
    literal: str, letters: int
) -> None:
    payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
    payload["pull_request"]["body"] = "N I " * letters
    text = json.dumps(payload)[:-1] + f', "score": {literal}}}'
    with pytest.raises(NotJSON, match="body is not valid JSON"):
        github_from_json("pull_request", "d", text)


def test_a_number_past_a_doubles_range_is_read_back_by_the_worker() -> None:
    """JSON allows 1e999; intake takes it and the queued event must read back (as infinity)."""
    payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
    text = json.dumps(payload)[:-1] + ', "score": 1e999}'
    event = github_from_json("pull_request", "d", text)
    queued = Event.from_json(event.to_json())
    assert queued == event
    assert math.isinf(queued.payload["score"])
    assert queued.payload["pull_request"] == payload["pull_request"]


# --- GitLab ------------------------------------------------------------------------------------


def test_gitlab_merge_request_open() -> None:
    event = from_gitlab("uuid-1", fixture_json("gitlab/webhooks/merge_request.json"))
    assert (event.platform, event.name, event.action) == ("gitlab", "pull_request", "opened")
    assert (event.repo, event.number) == ("gitlabhq/gitlab-test", 1)
    assert event.sender == Sender("user1", False, 1)
    assert event.installation_id is None


def test_gitlab_update_with_oldrev_is_synchronize() -> None:
    event = from_gitlab("uuid-2", fixture_json("gitlab/webhooks/service_merge_request.json"))
    assert (event.name, event.action, event.repo, event.number) == (
        "pull_request",
        "synchronize",
        "test/woodpecker",
        2,
    )


@pytest.mark.parametrize(
    ("raw", "changes", "expected"),
    [
        ("reopen", {}, "reopened"),
        ("close", {}, "closed"),
        ("merge", {}, "closed"),
        ("update", {"draft": {"previous": True, "current": False}}, "ready_for_review"),
        ("update", {"draft": {"previous": False, "current": True}}, "converted_to_draft"),
        ("update", {"title": {"previous": "a", "current": "b"}}, "update"),
        ("approved", {}, "approved"),
    ],
)
def test_gitlab_merge_request_actions(raw: str, changes: dict[str, Any], expected: str) -> None:
    payload = fixture_json("gitlab/webhooks/merge_request.json")
    payload["object_attributes"]["action"] = raw
    payload["changes"] = changes
    assert from_gitlab("u", payload).action == expected


def test_gitlab_note_on_a_merge_request_is_a_comment() -> None:
    event = from_gitlab("uuid-3", fixture_json("gitlab/webhooks/note_merge_request.json"))
    assert (event.name, event.action, event.repo, event.number) == (
        "comment",
        "created",
        "gitlab-org/gitlab-test",
        1,
    )
    assert event.comment is not None
    assert (event.comment.id, event.comment.body, event.comment.kind) == (
        1244,
        "This MR needs work.",
        "conversation",
    )
    assert event.comment.author.login == "root"


def test_gitlab_diff_note_carries_position_and_discussion() -> None:
    payload = fixture_json("gitlab/webhooks/note_merge_request.json")
    payload["object_attributes"].update(
        type="DiffNote",
        discussion_id="6a9c1750b37d513a43987b574953fceb50b03ce7",
        position={"new_path": "app/x.py", "old_path": "app/x.py", "new_line": 12, "old_line": None},
    )
    comment = from_gitlab("u", payload).comment
    assert comment is not None
    assert (comment.kind, comment.path, comment.line, comment.thread) == (
        "inline",
        "app/x.py",
        12,
        "6a9c1750b37d513a43987b574953fceb50b03ce7",
    )


def test_gitlab_note_on_an_issue_and_push_keep_raw_names() -> None:
    note = from_gitlab("u1", fixture_json("gitlab/webhooks/note_issue.json"))
    assert (note.name, note.comment) == ("note", None)
    push = from_gitlab("u2", fixture_json("gitlab/webhooks/push.json"))
    assert (push.name, push.repo) == ("push", "mike/diaspora")


def test_gitlab_bot_users_are_recognized() -> None:
    payload = fixture_json("gitlab/webhooks/note_merge_request.json")
    payload["user"]["username"] = "project_5_bot_3f2a"
    assert from_gitlab("u", payload).comment.author.is_bot  # type: ignore[union-attr]
    payload["user"]["username"] = "arbiter"
    event = from_gitlab("u", payload, bot_names=frozenset({"arbiter"}))
    assert event.sender is not None and event.sender.is_bot


def test_every_gitlab_fixture_normalizes() -> None:
    for path in sorted((fixtures_dir() / "gitlab" / "webhooks").glob("*.json")):
        event = from_gitlab(path.stem, fixture_json(f"gitlab/webhooks/{path.name}"))
        assert event.platform == "gitlab" and event.repo, path.name


def test_gitlab_without_object_kind_is_an_error() -> None:
    with pytest.raises(PayloadError, match="object_kind"):
        from_gitlab("u", {"project": {}})


def test_events_survive_the_queue_round_trip() -> None:
    payload = fixture_json("github/webhooks/pull_request_review_comment/created.payload.json")
    event = from_github("pull_request_review_comment", "d-9", payload)
    again = Event.from_json(event.to_json())
    assert again == event
    assert again.payload == payload


def test_gitlab_note_without_an_action_is_a_new_comment() -> None:
    payload = fixture_json("gitlab/webhooks/note_merge_request.json")
    del payload["object_attributes"]["action"]  # older GitLab sends none
    event = from_gitlab("u", payload)
    assert (event.name, event.action) == ("comment", "created")


def test_gitlab_system_notes_are_not_comments() -> None:
    payload = fixture_json("gitlab/webhooks/note_merge_request.json")
    payload["object_attributes"].update(system=True, note="added 1 commit")
    event = from_gitlab("u", payload)
    assert (event.name, event.comment) == ("note", None)


def test_gitlab_reply_on_a_removed_line_carries_its_old_line_and_thread() -> None:
    payload = fixture_json("gitlab/webhooks/note_merge_request.json")
    payload["object_attributes"].update(
        type="DiffNote",
        discussion_id="d" * 40,
        position={"old_path": "a.py", "new_path": "a.py", "old_line": 7, "new_line": None},
        action="create",
    )
    comment = from_gitlab("u", payload).comment
    assert comment is not None
    assert (comment.kind, comment.path, comment.line, comment.thread) == (
        "inline",
        "a.py",
        7,
        "d" * 40,
    )


@pytest.mark.parametrize("key", ["draft", "work_in_progress"])
def test_gitlab_ready_for_review_from_either_draft_key(key: str) -> None:
    payload = fixture_json("gitlab/webhooks/merge_request.json")
    payload["object_attributes"]["action"] = "update"
    payload["changes"] = {key: {"previous": True, "current": False}}
    assert from_gitlab("u", payload).action == "ready_for_review"


@pytest.mark.parametrize(
    ("username", "bot"),
    [
        ("project_12_bot_9f8e7d", True),
        ("group_3_bot", True),
        ("deploy-bot", True),
        ("robert", False),
        ("botanist", False),
    ],
)
def test_gitlab_bot_names(username: str, bot: bool) -> None:
    assert is_gitlab_bot(username) is bot
