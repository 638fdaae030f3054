"""A pull request reviewed end to end: `arbiter serve` as a process, the fake GitHub, the fake
OpenAI. What the pull request shows, what the store records, what the metrics say."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.world import PAT, REPO, World, wait_for
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, ServerError, Slow, finding, findings_in_prompt

pytestmark = pytest.mark.e2e

H1, H2, BASE = "a1" * 20, "b2" * 20, "c3" * 20
APP = "import subprocess\n\n\ndef run(command):\n    return subprocess.run(command, shell=True)\n"
LATER = "def parse(text):\n    return eval(text)\n"
SHELL = finding("app.py", 5, severity="critical", title="Shell injection", category="security")
FAR_AWAY = finding("app.py", 40, severity="major", title="Not in the diff")
EVAL = finding("later.py", 2, severity="major", title="eval of input", category="security")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    key = AppKey.generate()
    async with FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=1)
        github.add_pull(
            REPO,
            2,
            files=[PullFile.added("app.py", APP)],
            head_sha=H1,
            base_sha=BASE,
            title="Run commands",
            author="Codertocat",
        )
        async with FakeOpenAI() as openai:
            openai.respond(findings_in_prompt([SHELL, FAR_AWAY, EVAL]))
            w = World(tmp_path, github, openai)
            try:
                yield w
            finally:
                w.stop()


def _push(world: World) -> None:
    """A second commit: later.py added; the compare API shows only it."""
    world.github.update_pull(
        REPO,
        2,
        head_sha=H2,
        files=[PullFile.added("app.py", APP), PullFile.added("later.py", LATER)],
    )
    world.github.add_compare(REPO, H1, H2, files=[PullFile.added("later.py", LATER)])


def _summaries(world: World) -> list[dict[str, object]]:
    return [c for c in world.github.issue_comments(REPO, 2) if "arbiter:summary" in c["body"]]


async def test_an_opened_pull_request_is_reviewed_once_and_well(world: World) -> None:
    await world.start()
    status, answer = await world.deliver("pull_request", world.pull_request_payload(2, "opened"))
    assert status == 202, answer

    statuses = await world.settled(H1)
    assert [s for s, _ in statuses] == ["pending", "success"]
    assert statuses[0][1] == "Arbiter is reviewing"
    assert "1 new finding(s): 1 critical" in statuses[1][1]

    (review,) = world.github.reviews(REPO, 2)
    assert review["state"] == "COMMENTED"
    comments = world.github.review_comments(REPO, 2)
    assert [(c["path"], c["line"]) for c in comments] == [("app.py", 5)]
    assert "Shell injection" in comments[0]["body"]
    (summary,) = _summaries(world)
    assert "## Arbiter review" in str(summary["body"])
    assert "Not in the diff" in str(summary["body"])  # dropped findings are listed, not posted

    (record,) = await world.reviews()
    assert (record.state, record.outcome, record.mode, record.head_sha) == (
        "done",
        "success",
        "full",
        H1,
    )
    assert record.input_tokens > 0 and record.output_tokens > 0 and record.cost_usd > 0
    assert record.findings == 1 and record.severity_counts == {"critical": 1}
    assert record.posted_review_id == str(review["id"])

    metrics = await world.metrics()
    assert 'arbiter_reviews_total{outcome="success",platform="github"} 1.0' in metrics
    assert "arbiter_review_duration_seconds_count" in metrics
    cost = re.search(r"^arbiter_cost_usd_total (\S+)$", metrics, re.MULTILINE)
    assert cost is not None and float(cost.group(1)) == pytest.approx(record.cost_usd)


async def test_a_push_reviews_only_what_changed_and_repeats_nothing(world: World) -> None:
    await world.start()
    await world.deliver("pull_request", world.pull_request_payload(2, "opened"))
    await world.settled(H1)
    (first_summary,) = _summaries(world)

    _push(world)
    synchronize = world.pull_request_payload(2, "synchronize", before=H1, after=H2)
    status, _ = await world.deliver("pull_request", synchronize)
    assert status == 202
    await world.settled(H2)

    prompts = [r.user for r in world.openai.requests]
    assert len(prompts) == 2
    assert "=== FILE later.py (" in prompts[1] and "=== FILE app.py (" not in prompts[1]
    comments = world.github.review_comments(REPO, 2)
    assert sorted((c["path"], c["line"]) for c in comments) == [("app.py", 5), ("later.py", 2)]
    assert len(world.github.reviews(REPO, 2)) == 2
    (summary,) = _summaries(world)
    assert summary["id"] == first_summary["id"]  # edited in place
    assert "from earlier reviews: 1" in str(summary["body"])
    records = await world.reviews()
    assert [r.mode for r in records] == ["incremental", "full"]  # newest first


async def test_the_same_delivery_and_the_same_head_cost_nothing_more(world: World) -> None:
    await world.start()
    opened = world.pull_request_payload(2, "opened")
    assert (await world.deliver("pull_request", opened, delivery="d-1"))[0] == 202
    await world.settled(H1)
    calls = len(world.openai.requests)
    posted = len(world.github.review_comments(REPO, 2)), len(world.github.issue_comments(REPO, 2))

    status, answer = await world.deliver("pull_request", opened, delivery="d-1")
    assert (status, answer["duplicate"]) == (200, True)

    # A new delivery for the same head (GitHub redelivered it, say, or a label changed).
    status, answer = await world.deliver(
        "pull_request", world.pull_request_payload(2, "synchronize"), delivery="d-2"
    )
    assert status == 202
    store = await world.store()
    try:

        async def both_done() -> bool:
            return (await store.job_counts())["done"] >= 4  # two events, two reviews

        await wait_for(both_done, what="the second delivery's jobs")
    finally:
        await store.close()
    assert len(world.openai.requests) == calls
    assert (
        len(world.github.review_comments(REPO, 2)),
        len(world.github.issue_comments(REPO, 2)),
    ) == posted
    assert len(await world.reviews()) == 1


@pytest.mark.parametrize("point", ["before the model answers", "after it answered", "posting"])
async def test_a_worker_killed_mid_review_leaves_exactly_one_review(
    world: World, point: str
) -> None:
    env = {"ARBITER_WORKER_LEASE_SECONDS": "1", "ARBITER_WORKER_RETRY_BACKOFF_SECONDS": "0.2"}
    if point == "before the model answers":
        world.openai.script(Slow(30))
    elif point == "after it answered":
        world.github.delay("POST", f"/repos/{REPO}/pulls/2/reviews", 30)
    else:  # the review is up, the summary not yet
        world.github.delay("POST", f"/repos/{REPO}/issues/2/comments", 30)
    await world.start(**env)
    await world.deliver("pull_request", world.pull_request_payload(2, "opened"))

    if point == "before the model answers":
        await wait_for(lambda: len(world.openai.requests) == 1, what="the model call")
    elif point == "after it answered":
        await wait_for(
            lambda: world.github.arrived("POST", f"/repos/{REPO}/pulls/2/reviews") == 1,
            what="the review post",
        )
    else:
        await wait_for(
            lambda: world.github.arrived("POST", f"/repos/{REPO}/issues/2/comments") == 1,
            what="the summary post",
        )
    world.kill()

    await world.start(**env)
    statuses = await world.settled(H1, timeout=60)
    assert statuses[-1][0] == "success"
    assert len([r for r in world.github.reviews(REPO, 2) if r["state"] != "PENDING"]) == 1
    assert [(c["path"], c["line"]) for c in world.github.review_comments(REPO, 2)] == [
        ("app.py", 5)
    ]
    assert len(_summaries(world)) == 1
    (record,) = await world.reviews()
    assert record.state == "done"
    if point != "before the model answers":
        assert len(world.openai.requests) == 1  # the answer came from the cache


async def test_a_model_that_always_fails_errors_retries_then_dies(world: World) -> None:
    world.openai.always(ServerError(500))
    await world.start(ARBITER_WORKER_RETRY_ATTEMPTS="1", ARBITER_WORKER_RETRY_BACKOFF_SECONDS="0.1")
    await world.deliver("pull_request", world.pull_request_payload(2, "opened"))
    store = await world.store()
    try:

        async def dead() -> bool:
            return any(j.state == "dead" for j in await store.list_jobs(kind="review"))

        await wait_for(dead, timeout=60, what="the review job to die")
        (job,) = await store.list_jobs(kind="review")
    finally:
        await store.close()
    assert job.attempts == 2
    assert job.last_error is not None and "provider" in job.last_error.lower()
    statuses = world.statuses(H1)
    assert statuses[-1][0] == "error"
    assert "Arbiter could not review" in statuses[-1][1]
    assert world.github.reviews(REPO, 2) == []
    assert _summaries(world) == []
    (record,) = await world.reviews()
    assert (record.state, record.outcome) == ("failed", "error")


async def test_a_spent_daily_budget_makes_the_next_review_wait(world: World) -> None:
    world.github.add_pull(
        REPO, 3, files=[PullFile.added("other.py", LATER)], head_sha="d4" * 20, base_sha=BASE
    )
    # Under what one review costs: the first runs (nothing spent yet), the second waits.
    await world.start(ARBITER_DAILY_BUDGET_USD="0.0001")
    await world.deliver("pull_request", world.pull_request_payload(2, "opened"))
    await world.settled(H1)
    await world.deliver("pull_request", world.pull_request_payload(3, "opened"))

    def waiting() -> bool:
        found = world.statuses("d4" * 20)
        return bool(found) and found[-1][1].startswith("Waiting: today's LLM budget")

    await wait_for(waiting, what="the second review to wait for the budget")
    assert len(world.openai.requests) == 1  # nothing spent on the second one
    (state, description) = world.statuses("d4" * 20)[-1]
    assert state == "pending"
    assert "00:00 UTC" in description
