"""A GitLab merge request reviewed end to end: `arbiter serve` as a process, the fake GitLab,
the fake OpenAI, and the same handlers and reviewer that serve GitHub."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conversation.model import TEXT, answering, questions
from tests.e2e.gitlab_world import (
    API_TOKEN,
    BOT,
    MERGE_REQUEST_HOOK,
    NOTE_HOOK,
    PROJECT,
    GitLabWorld,
)
from tests.e2e.world import wait_for
from tests.fakes.gitlab import FakeGitLab, MRFile, project_path
from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt

pytestmark = pytest.mark.e2e

H1, H2, BASE, START = "a1" * 20, "b2" * 20, "c3" * 20, "d4" * 20
IID = 1
MR = f"{project_path(PROJECT)}/merge_requests/{IID}"
APP = "import subprocess\n\n\ndef run(command):\n    return subprocess.run(command, shell=True)\n"
HELPERS = (
    "@@ -1,4 +1,4 @@\n"
    " def load(path):\n"
    "-    return open(path).read()\n"
    "+    return eval(open(path).read())\n"
    " \n"
    " \n"
)
LATER = "def parse(text):\n    return eval(text)\n"
SHELL = finding("app.py", 5, severity="critical", title="Shell injection", category="security")
FAR_AWAY = finding("app.py", 40, severity="major", title="Not in the diff")
RENAMED_EVAL = finding(
    "lib/util.py", 2, severity="major", title="eval of a file", category="security"
)
LATER_EVAL = finding("later.py", 2, severity="major", title="eval of input", category="security")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[GitLabWorld]:
    async with FakeGitLab(token=API_TOKEN, username=BOT) as gitlab:
        gitlab.add_project(PROJECT, default_branch="master")
        gitlab.add_merge_request(
            PROJECT,
            IID,
            files=[
                MRFile.added("app.py", APP),
                MRFile.renamed("lib/helpers.py", "lib/util.py", HELPERS),
            ],
            head_sha=H1,
            base_sha=BASE,
            start_sha=START,  # the target branch moved on since the branch was cut
            title="Run commands",
            author="dev",
            target_branch="master",
        )
        gitlab.add_user("dev", project=PROJECT, access="developer")
        async with FakeOpenAI() as openai:
            openai.respond(findings_in_prompt([SHELL, FAR_AWAY, RENAMED_EVAL, LATER_EVAL]))
            w = GitLabWorld(tmp_path, gitlab, openai)
            try:
                yield w
            finally:
                w.stop()


def diff_notes(world: GitLabWorld) -> list[dict[str, Any]]:
    return [n for n in world.ours(IID) if n["type"] == "DiffNote"]


def summaries(world: GitLabWorld) -> list[dict[str, Any]]:
    return [n for n in world.ours(IID) if "<!-- arbiter:summary -->" in n["body"]]


def review_notes(world: GitLabWorld) -> list[dict[str, Any]]:
    return [n for n in world.ours(IID) if "<!-- arbiter:review:" in n["body"] and not n["type"]]


def where(note: dict[str, Any]) -> tuple[Any, ...]:
    p = note["position"]
    return (p["old_path"], p["new_path"], p["old_line"], p["new_line"])


def _push(world: GitLabWorld) -> None:
    """A second commit: later.py added; the comparison from H1 shows only it."""
    later = MRFile.added("later.py", LATER)
    files = [
        MRFile.added("app.py", APP),
        MRFile.renamed("lib/helpers.py", "lib/util.py", HELPERS),
        later,
    ]
    world.gitlab.push(PROJECT, IID, head_sha=H2, files=files)
    world.gitlab.add_compare(PROJECT, H1, H2, files=[later])


async def test_an_opened_merge_request_is_reviewed_once_and_well(world: GitLabWorld) -> None:
    await world.start()
    status, answer = await world.deliver(MERGE_REQUEST_HOOK, world.merge_request_hook(IID, "open"))
    assert status == 202, answer

    statuses = await world.settled(H1)
    assert statuses[0] == ("running", "Arbiter is reviewing")
    assert [s for s, _ in statuses] == ["running", "success"]
    assert "2 new finding(s): 1 critical, 1 major" in statuses[1][1]
    (record_status,) = world.gitlab.statuses(PROJECT, H1)
    assert record_status["name"] == "arbiter"

    notes = diff_notes(world)
    assert sorted(where(n) for n in notes) == [
        ("app.py", "app.py", None, 5),
        ("lib/helpers.py", "lib/util.py", None, 2),
    ]
    for note in notes:
        position = note["position"]
        assert (position["base_sha"], position["start_sha"], position["head_sha"]) == (
            BASE,
            START,
            H1,
        )
    bodies = {n["position"]["new_path"]: n["body"] for n in notes}
    assert "Shell injection" in bodies["app.py"] and "eval of a file" in bodies["lib/util.py"]
    (summary,) = summaries(world)
    assert "## Arbiter review" in summary["body"]
    assert "Not in the diff" in summary["body"]  # dropped findings are listed, not posted
    (body,) = review_notes(world)
    assert body["body"].startswith("Arbiter found 2 new issues in a1a1a1a")
    assert world.gitlab.draft_notes(PROJECT, IID) == []
    assert len(world.gitlab.requests_to("POST", f"{MR}/draft_notes/bulk_publish")) == 1

    (record,) = await world.reviews()
    assert (record.platform, record.state, record.outcome, record.mode, record.head_sha) == (
        "gitlab",
        "done",
        "success",
        "full",
        H1,
    )
    assert record.findings == 2 and record.posted_review_id == str(body["id"])
    metrics = await world.metrics()
    assert 'arbiter_reviews_total{outcome="success",platform="gitlab"} 1.0' in metrics
    assert re.search(r"^arbiter_cost_usd_total \S+$", metrics, re.MULTILINE)
    # Every API call carried the delivery it serves.
    deliveries = {r.headers.get("x-arbiter-delivery") for r in world.gitlab.requests}
    assert len(deliveries) == 1 and None not in deliveries


async def test_an_update_with_oldrev_reviews_only_what_changed_and_repeats_nothing(
    world: GitLabWorld,
) -> None:
    await world.start()
    await world.deliver(MERGE_REQUEST_HOOK, world.merge_request_hook(IID, "open"))
    await world.settled(H1)
    (first_summary,) = summaries(world)

    _push(world)
    update = world.merge_request_hook(IID, "update", oldrev=H1)
    status, _ = await world.deliver(MERGE_REQUEST_HOOK, update)
    assert status == 202
    await world.settled(H2)

    prompts = [r.user for r in world.openai.requests]
    assert len(prompts) == 2
    assert "=== FILE later.py (" in prompts[1] and "=== FILE app.py (" not in prompts[1]
    assert sorted(n["position"]["new_path"] for n in diff_notes(world)) == [
        "app.py",
        "later.py",
        "lib/util.py",
    ]
    (later_note,) = [n for n in diff_notes(world) if n["position"]["new_path"] == "later.py"]
    assert later_note["position"]["head_sha"] == H2
    (summary,) = summaries(world)
    assert summary["id"] == first_summary["id"]  # edited in place
    assert "from earlier reviews: 2" in summary["body"]
    assert len(review_notes(world)) == 2  # one body per review
    records = await world.reviews()
    assert [r.mode for r in records] == ["incremental", "full"]  # newest first


async def test_a_retried_hook_is_one_job_and_a_wrong_token_is_refused(world: GitLabWorld) -> None:
    await world.start()
    hook = world.merge_request_hook(IID, "open")

    status, answer = await world.deliver(MERGE_REQUEST_HOOK, hook, token="not-the-token")
    assert status == 401 and "X-Gitlab-Token" in answer["error"]
    assert (await world.deliver(MERGE_REQUEST_HOOK, hook, key="gl-1"))[0] == 202
    status, answer = await world.deliver(MERGE_REQUEST_HOOK, hook, key="gl-1")
    assert (status, answer["duplicate"]) == (200, True)
    await world.settled(H1)

    store = await world.store()
    try:
        jobs = await store.list_jobs(kind="event")
    finally:
        await store.close()
    assert [j.delivery_id for j in jobs] == ["gl-1"]
    assert len(world.openai.requests) == 1
    assert len(diff_notes(world)) == 2 and len(summaries(world)) == 1


async def test_a_merge_request_from_a_bot_or_closed_is_not_reviewed(world: GitLabWorld) -> None:
    world.gitlab.add_user("project_7_bot_5e1f")
    await world.start()

    by_bot = world.merge_request_hook(IID, "open", user="project_7_bot_5e1f")
    assert (await world.deliver(MERGE_REQUEST_HOOK, by_bot))[0] == 202
    closed = world.merge_request_hook(IID, "close")
    assert (await world.deliver(MERGE_REQUEST_HOOK, closed))[0] == 202

    store = await world.store()
    try:

        async def handled() -> bool:
            return (await store.job_counts())["done"] >= 2

        await wait_for(handled, what="both hooks handled")
        assert await store.list_jobs(kind="review") == []
    finally:
        await store.close()
    assert world.openai.requests == [] and world.ours(IID) == []


async def test_draft_to_ready_is_reviewed(world: GitLabWorld) -> None:
    world.gitlab.update_merge_request(PROJECT, IID, draft=True)
    await world.start()
    await world.deliver(MERGE_REQUEST_HOOK, world.merge_request_hook(IID, "open"))

    world.gitlab.update_merge_request(PROJECT, IID, draft=False)
    ready = world.merge_request_hook(
        IID, "update", changes={"draft": {"previous": True, "current": False}}
    )
    assert (await world.deliver(MERGE_REQUEST_HOOK, ready))[0] == 202

    statuses = await world.settled(H1)
    assert statuses[-1][0] == "success"
    assert len(diff_notes(world)) == 2


@pytest.mark.parametrize("point", ["publishing", "after publishing"])
async def test_a_worker_killed_mid_review_leaves_exactly_one_review(
    world: GitLabWorld, point: str
) -> None:
    env = {"ARBITER_WORKER_LEASE_SECONDS": "1", "ARBITER_WORKER_RETRY_BACKOFF_SECONDS": "0.2"}
    # "publishing": the drafts are written, not yet published; "after": the review is up,
    # the summary not yet.
    held = f"{MR}/draft_notes/bulk_publish" if point == "publishing" else f"{MR}/notes"
    world.gitlab.delay("POST", held, 30)
    await world.start(**env)
    await world.deliver(MERGE_REQUEST_HOOK, world.merge_request_hook(IID, "open"))
    # At least once: with a one-second lease, a slow machine may start a second attempt.
    await wait_for(lambda: world.gitlab.arrived("POST", held) >= 1, what=f"POST {held}")
    world.kill()

    await world.start(**env)
    statuses = await world.settled(H1, timeout=60)

    assert statuses[-1][0] == "success"
    assert sorted(where(n) for n in diff_notes(world)) == [
        ("app.py", "app.py", None, 5),
        ("lib/helpers.py", "lib/util.py", None, 2),
    ]
    assert len(review_notes(world)) == 1 and len(summaries(world)) == 1
    assert world.gitlab.draft_notes(PROJECT, IID) == []
    (record,) = await world.reviews()
    assert record.state == "done"
    assert len(world.openai.requests) == 1  # the answer came from the cache


# --- Conversations ------------------------------------------------------------------------------


async def _reviewed(world: GitLabWorld) -> None:
    """Arbiter has reviewed the merge request: its finding discussions are up."""
    await world.start()
    await world.deliver(MERGE_REQUEST_HOOK, world.merge_request_hook(IID, "open"))
    await world.settled(H1)


def discussion_of(world: GitLabWorld, discussion_id: str) -> dict[str, Any]:
    return next(d for d in world.gitlab.discussions(PROJECT, IID) if d["id"] == discussion_id)


async def _answered(world: GitLabWorld, discussion_id: str, notes: int) -> list[dict[str, Any]]:
    await wait_for(
        lambda: len(discussion_of(world, discussion_id)["notes"]) >= notes,
        what=f"{notes} notes in discussion {discussion_id[:8]}",
    )
    return list(discussion_of(world, discussion_id)["notes"])


async def _jobs_done(world: GitLabWorld, count: int) -> None:
    store = await world.store()
    try:

        async def done() -> bool:
            return (await store.job_counts())["done"] >= count

        await wait_for(done, what=f"{count} jobs done")
    finally:
        await store.close()


async def test_a_mention_in_a_diff_discussion_is_answered_in_that_discussion(
    world: GitLabWorld,
) -> None:
    world.openai.respond(answering(findings=[SHELL, FAR_AWAY, RENAMED_EVAL]))
    await _reviewed(world)
    (shell,) = [n for n in diff_notes(world) if n["position"]["new_path"] == "app.py"]
    discussion_id = shell["discussion_id"]

    question = world.gitlab.add_note(
        PROJECT, IID, "@arbiter-bot why is this a bug?", author="dev", discussion_id=discussion_id
    )
    status, answer = await world.deliver(NOTE_HOOK, world.note_hook(IID, question))
    assert status == 202, answer

    notes = await _answered(world, discussion_id, 3)
    reply = notes[2]
    assert reply["author"]["username"] == BOT and reply["type"] == "DiffNote"
    assert TEXT in reply["body"] and "<!-- arbiter:reply -->" in reply["body"]
    (asked,) = questions(world.openai.requests)
    assert "why is this a bug?" in asked.user
    assert "subprocess.run(command, shell=True)" in asked.user  # the diff around the line
    assert "Shell injection" in asked.user  # the finding the thread is about
    assert world.gitlab.award_emoji(question["id"]) == ["eyes"]

    # GitLab sends a hook for Arbiter's own reply too: it starts nothing.
    reply_note = {**reply, "discussion_id": discussion_id}
    assert (await world.deliver(NOTE_HOOK, world.note_hook(IID, reply_note)))[0] == 202
    await _jobs_done(world, 4)  # open, review, the question, Arbiter's own note
    assert len(questions(world.openai.requests)) == 1
    assert len(discussion_of(world, discussion_id)["notes"]) == 3


async def test_a_reply_without_a_mention_in_arbiters_discussion_is_a_question(
    world: GitLabWorld,
) -> None:
    world.openai.respond(answering(findings=[SHELL, FAR_AWAY, RENAMED_EVAL]))
    await _reviewed(world)
    (shell,) = [n for n in diff_notes(world) if n["position"]["new_path"] == "app.py"]

    question = world.gitlab.add_note(
        PROJECT,
        IID,
        "But the input is trusted?",
        author="dev",
        discussion_id=shell["discussion_id"],
    )
    await world.deliver(NOTE_HOOK, world.note_hook(IID, question))

    notes = await _answered(world, shell["discussion_id"], 3)
    assert TEXT in notes[2]["body"]


async def test_pause_from_a_reporter_is_refused_politely_and_from_a_developer_pauses(
    world: GitLabWorld,
) -> None:
    world.gitlab.add_user("rep", project=PROJECT, access="reporter")
    await _reviewed(world)

    refused = world.gitlab.add_note(PROJECT, IID, "@arbiter-bot pause", author="rep")
    assert (await world.deliver(NOTE_HOOK, world.note_hook(IID, refused)))[0] == 202
    notes = await _answered(world, refused["discussion_id"], 2)
    assert notes[1]["author"]["username"] == BOT
    assert notes[1]["body"].startswith("Sorry, only people with write access")
    assert world.gitlab.award_emoji(refused["id"]) == []
    store = await world.store()
    try:
        assert not (await store.pr_state("gitlab", PROJECT, IID)).paused
    finally:
        await store.close()

    paused = world.gitlab.add_note(PROJECT, IID, "@arbiter-bot pause", author="dev")
    await world.deliver(NOTE_HOOK, world.note_hook(IID, paused))
    notes = await _answered(world, paused["discussion_id"], 2)
    assert notes[1]["body"].startswith("Automatic reviews are paused")
    assert world.gitlab.award_emoji(paused["id"]) == ["eyes"]

    _push(world)
    await world.deliver(MERGE_REQUEST_HOOK, world.merge_request_hook(IID, "update", oldrev=H1))
    await _jobs_done(world, 6)  # open, review, two commands, the update, its (skipped) review
    assert len(world.openai.requests) == 1
    assert world.statuses(H2) == []
