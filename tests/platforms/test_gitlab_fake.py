"""The fake GitLab keeps GitLab's rules, so tests that pass against it mean something."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.gitlab import FakeGitLab, MRFile, project_path
from tests.platforms.conftest import GL_PROJECT, GL_TOKEN

H1, BASE, START = "a1" * 20, "c3" * 20, "d4" * 20
DIFF = "@@ -1,3 +1,3 @@\n keep\n-old\n+new\n tail\n"
MR = f"{project_path(GL_PROJECT)}/merge_requests/1"


@pytest.fixture
async def http(gitlab_fake: FakeGitLab) -> AsyncIterator[aiohttp.ClientSession]:
    gitlab_fake.add_merge_request(
        GL_PROJECT,
        1,
        files=[MRFile.modified("f.py", DIFF)],
        head_sha=H1,
        base_sha=BASE,
        start_sha=START,
    )
    async with aiohttp.ClientSession(
        base_url=gitlab_fake.url, headers={"PRIVATE-TOKEN": GL_TOKEN}
    ) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any, Any]:
    async with http.request(method, path, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body, response.headers


async def test_every_call_wants_the_token(
    gitlab_fake: FakeGitLab, http: aiohttp.ClientSession
) -> None:
    async with aiohttp.ClientSession(base_url=gitlab_fake.url) as anonymous:
        status, body, _ = await call(anonymous, "GET", MR)
        assert (status, body) == (401, {"message": "401 Unauthorized"})
        bearer = {"Authorization": f"Bearer {GL_TOKEN}"}
        assert (await call(anonymous, "GET", MR, headers=bearer))[0] == 200
    assert (await call(http, "GET", MR))[0] == 200


async def test_lists_are_paged_the_gitlab_way(
    gitlab_fake: FakeGitLab, http: aiohttp.ClientSession
) -> None:
    for i in range(5):
        gitlab_fake.add_note(GL_PROJECT, 1, f"note {i}")

    status, body, headers = await call(http, "GET", f"{MR}/notes?per_page=2&page=2&sort=asc")

    assert status == 200 and [n["body"] for n in body] == ["note 2", "note 3"]
    assert (headers["X-Page"], headers["X-Per-Page"], headers["X-Total"]) == ("2", "2", "5")
    assert (headers["X-Next-Page"], headers["X-Prev-Page"], headers["X-Total-Pages"]) == (
        "3",
        "1",
        "3",
    )
    assert "page=3" in headers["Link"].split(";")[0] and 'rel="next"' in headers["Link"]
    *_, last = await call(http, "GET", f"{MR}/notes?per_page=500")
    assert last["X-Per-Page"] == "100"


@pytest.mark.parametrize(
    ("lines", "accepted"),
    [
        ({"new_line": 2}, True),  # the added line
        ({"old_line": 2}, True),  # the removed line
        ({"old_line": 1, "new_line": 1}, True),  # a context line needs both
        ({"new_line": 1}, False),
        ({"new_line": 3, "old_line": 2}, False),
        ({"new_line": 9}, False),
    ],
)
async def test_a_position_must_name_a_line_of_the_diff(
    http: aiohttp.ClientSession, lines: dict[str, int], accepted: bool
) -> None:
    position = {
        "position_type": "text",
        "base_sha": BASE,
        "start_sha": START,
        "head_sha": H1,
        "old_path": "f.py",
        "new_path": "f.py",
        **lines,
    }

    status, body, _ = await call(
        http, "POST", f"{MR}/discussions", json={"body": "x", "position": position}
    )

    if accepted:
        assert status == 201 and body["notes"][0]["type"] == "DiffNote"
    else:
        assert status == 400 and "line_code" in body["message"]


async def test_a_position_must_name_the_versions_own_shas(http: aiohttp.ClientSession) -> None:
    position = {
        "position_type": "text",
        "base_sha": BASE,
        "start_sha": BASE,  # the merge base, not the target branch's head
        "head_sha": H1,
        "old_path": "f.py",
        "new_path": "f.py",
        "new_line": 2,
    }

    status, body, _ = await call(
        http, "POST", f"{MR}/draft_notes", json={"note": "x", "position": position}
    )

    assert status == 400 and "line_code" in body["message"]


async def test_commit_statuses_follow_gitlabs_state_machine(
    gitlab_fake: FakeGitLab, http: aiohttp.ClientSession
) -> None:
    path = f"{project_path(GL_PROJECT)}/statuses/{H1}"

    def post(state: str) -> Any:
        return call(http, "POST", path, json={"state": state, "name": "arbiter"})

    assert (await post("pending"))[0] == 201
    status, body, _ = await post("pending")
    assert (
        status == 400 and "Cannot transition status via :enqueue from :pending" in body["message"]
    )
    assert (await post("running"))[0] == 201
    assert (await post("running"))[0] == 400
    assert (await post("success"))[0] == 201
    assert (await post("running"))[0] == 201  # a finished status is left be: a new one starts
    assert [s["status"] for s in gitlab_fake.statuses(GL_PROJECT, H1)] == ["success", "running"]
    assert [c["status"] for c in gitlab_fake.status_changes(GL_PROJECT, H1)] == [
        "pending",
        "running",
        "success",
        "running",
    ]
    assert (
        await call(
            http,
            "POST",
            f"{project_path(GL_PROJECT)}/statuses/{'f' * 40}",
            json={"state": "running"},
        )
    )[0] == 404


async def test_drafts_stay_private_until_published(
    gitlab_fake: FakeGitLab, http: aiohttp.ClientSession
) -> None:
    status, draft, _ = await call(http, "POST", f"{MR}/draft_notes", json={"note": "later"})
    assert status == 201 and draft["note"] == "later" and gitlab_fake.notes(GL_PROJECT, 1) == []

    assert (await call(http, "POST", f"{MR}/draft_notes/bulk_publish"))[0] == 204

    assert [n["body"] for n in gitlab_fake.notes(GL_PROJECT, 1)] == ["later"]
    assert gitlab_fake.draft_notes(GL_PROJECT, 1) == []
    gitlab_fake.draft_notes_supported = False
    assert (await call(http, "GET", f"{MR}/draft_notes"))[0] == 404


# --- Lost answers: the write is done, the answer never arrives ----------------------------------


@pytest.mark.parametrize("landed", [False, True])
async def test_a_scripted_failure_is_carried_out_first_only_when_landed(
    gitlab_fake: FakeGitLab, http: aiohttp.ClientSession, landed: bool
) -> None:
    notes = f"{MR}/notes"
    gitlab_fake.fail("POST", notes, 502, landed=landed)
    gitlab_fake.disconnect("POST", notes, landed=landed)
    gitlab_fake.delay("POST", notes, 5, landed=landed)
    answers: list[int | None] = []
    for _ in range(3):
        try:
            status, _, _ = await call(
                http, "POST", notes, json={"body": "hi"}, timeout=aiohttp.ClientTimeout(total=0.5)
            )
            answers.append(status)
        except (aiohttp.ClientError, TimeoutError):
            answers.append(None)

    assert answers == [502, None, None]  # a 502, a dropped connection, an answer too late
    assert len(gitlab_fake.notes(GL_PROJECT, 1)) == (3 if landed else 0)
