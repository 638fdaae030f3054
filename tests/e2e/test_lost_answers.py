"""Lost answers end to end: `arbiter serve` as a process, and a fake GitHub or GitLab that
carries out the review's post and the summary's post, then answers 502 or drops the
connection, once or three times over, as a proxy in front of the platform does. The pull
request shows exactly one review, one summary and one set of inline comments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.store.base import ReviewRecord
from tests.e2e.gitlab_world import API_TOKEN, BOT, MERGE_REQUEST_HOOK, PROJECT, GitLabWorld
from tests.e2e.world import PAT, REPO, World, wait_for
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.gitlab import FakeGitLab, MRFile, project_path
from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt

pytestmark = pytest.mark.e2e

H1, BASE = "a1" * 20, "c3" * 20
APP = "import subprocess\n\n\ndef run(command):\n    return subprocess.run(command, shell=True)\n"
FINDINGS = [
    finding("app.py", 4, severity="major", title="Unchecked command", category="security"),
    finding("app.py", 5, severity="critical", title="Shell injection", category="security"),
]
LOSSES = [("502", 1), ("502", 3), ("dropped", 1), ("dropped", 3)]
# Quick retries, so three lost answers in a row cost seconds, not minutes.
ENV = {"ARBITER_INTEGRATION_TIMEOUT": "5", "ARBITER_WORKER_RETRY_BACKOFF_SECONDS": "0.2"}


def _submitted(body: Any) -> bool:
    return isinstance(body, dict) and "event" in body  # a review, not a probe


async def _recorded(world: World | GitLabWorld) -> ReviewRecord:
    """The review record, once done: the final status is set just before it is written."""

    async def done() -> bool:
        return [r.state for r in await world.reviews()] == ["done"]

    await wait_for(done, timeout=30, what="the review to be recorded")
    (record,) = await world.reviews()
    return record


# --- GitHub ---------------------------------------------------------------------------------------

REVIEWS = f"/repos/{REPO}/pulls/2/reviews"
ISSUE_COMMENTS = f"/repos/{REPO}/issues/2/comments"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    key = AppKey.generate()
    async with FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=1)
        github.add_pull(REPO, 2, files=[PullFile.added("app.py", APP)], head_sha=H1, base_sha=BASE)
        async with FakeOpenAI() as openai:
            openai.respond(findings_in_prompt(FINDINGS))
            w = World(tmp_path, github, openai)
            try:
                yield w
            finally:
                w.stop()


@pytest.mark.parametrize(("how", "times"), LOSSES)
async def test_github_lost_answers_leave_one_review_and_one_summary(
    world: World, how: str, times: int
) -> None:
    github = world.github
    if how == "502":
        github.fail("POST", REVIEWS, 502, times=times, landed=True, if_body=_submitted)
        github.fail("POST", ISSUE_COMMENTS, 502, times=times, landed=True)
    else:
        github.disconnect("POST", REVIEWS, times=times, landed=True, if_body=_submitted)
        github.disconnect("POST", ISSUE_COMMENTS, times=times, landed=True)
    await world.start(**ENV)

    status, answer = await world.deliver("pull_request", world.pull_request_payload(2, "opened"))
    assert status == 202, answer
    statuses = await world.settled(H1, timeout=60)

    assert statuses[-1][0] == "success"
    (review,) = [r for r in github.reviews(REPO, 2) if r["state"] != "PENDING"]
    assert [(c["path"], c["line"]) for c in github.review_comments(REPO, 2)] == [
        ("app.py", 4),
        ("app.py", 5),
    ]
    (summary,) = github.issue_comments(REPO, 2)
    assert "<!-- arbiter:summary -->" in summary["body"]
    # Each was sent once: what GitHub had done was found, not done again.
    assert github.arrived("POST", REVIEWS) == 1
    assert github.arrived("POST", ISSUE_COMMENTS) == 1
    record = await _recorded(world)
    assert record.outcome == "success"
    assert record.posted_review_id == str(review["id"])
    assert record.url == summary["html_url"]


# --- GitLab ---------------------------------------------------------------------------------------

IID = 1
MR = f"{project_path(PROJECT)}/merge_requests/{IID}"


@pytest.fixture
async def gitlab_world(tmp_path: Path) -> AsyncIterator[GitLabWorld]:
    async with FakeGitLab(token=API_TOKEN, username=BOT) as gitlab:
        gitlab.add_project(PROJECT, default_branch="master")
        gitlab.add_merge_request(
            PROJECT,
            IID,
            files=[MRFile.added("app.py", APP)],
            head_sha=H1,
            base_sha=BASE,
            author="dev",
            target_branch="master",
        )
        gitlab.add_user("dev", project=PROJECT, access="developer")
        async with FakeOpenAI() as openai:
            openai.respond(findings_in_prompt(FINDINGS))
            w = GitLabWorld(tmp_path, gitlab, openai)
            try:
                yield w
            finally:
                w.stop()


@pytest.mark.parametrize(("how", "times"), LOSSES)
async def test_gitlab_lost_answers_leave_one_review_and_one_summary(
    gitlab_world: GitLabWorld, how: str, times: int
) -> None:
    world, gitlab = gitlab_world, gitlab_world.gitlab
    for path in (f"{MR}/draft_notes", f"{MR}/draft_notes/bulk_publish", f"{MR}/notes"):
        if how == "502":
            gitlab.fail("POST", path, 502, times=times, landed=True)
        else:
            gitlab.disconnect("POST", path, times=times, landed=True)
    await world.start(**ENV)

    status, answer = await world.deliver(MERGE_REQUEST_HOOK, world.merge_request_hook(IID, "open"))
    assert status == 202, answer
    statuses = await world.settled(H1, timeout=60)

    assert statuses[-1][0] == "success"
    ours = world.ours(IID)
    inline = [n for n in ours if n["type"] == "DiffNote"]
    assert sorted(n["position"]["new_line"] for n in inline) == [4, 5]
    (summary,) = [n for n in ours if "<!-- arbiter:summary -->" in n["body"]]
    bodies = [n for n in ours if "<!-- arbiter:review:" in n["body"] and not n["type"]]
    assert len(bodies) == 1 and len(ours) == 4
    assert gitlab.draft_notes(PROJECT, IID) == []
    # Each draft (two comments, the body) and the summary were sent once.
    assert gitlab.arrived("POST", f"{MR}/draft_notes") == 3
    assert gitlab.arrived("POST", f"{MR}/notes") == 1
    record = await _recorded(world)
    assert record.outcome == "success"
    assert record.posted_review_id == str(bodies[0]["id"])
    assert record.url is not None and record.url.endswith(f"#note_{summary['id']}")
