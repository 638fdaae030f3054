"""How a review ends when GitHub will not take it, end to end through `arbiter serve`: refused
on every attempt, the pull request's final status is `error` with the reason, never "pending";
a rate limit longer than Arbiter waits in a request defers the job, no attempt used."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Job
from tests.e2e.world import PAT, REPO, World, wait_for
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt

pytestmark = pytest.mark.e2e

H1, BASE = "a1" * 20, "c3" * 20
APP = "import subprocess\n\n\ndef run(command):\n    return subprocess.run(command, shell=True)\n"
SHELL = finding("app.py", 5, severity="critical", title="Shell injection", category="security")
REVIEWS = f"/repos/{REPO}/pulls/2/reviews"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    key = AppKey.generate()
    async with FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=1)
        github.add_pull(REPO, 2, files=[PullFile.added("app.py", APP)], head_sha=H1, base_sha=BASE)
        async with FakeOpenAI() as openai:
            openai.respond(findings_in_prompt([SHELL]))
            w = World(tmp_path, github, openai)
            try:
                yield w
            finally:
                w.stop()


async def review_job(world: World) -> Job | None:
    store = await world.store()
    try:
        jobs = await store.list_jobs(kind="review")
    finally:
        await store.close()
    return jobs[0] if jobs else None


async def test_a_review_github_refuses_five_times_ends_in_error_with_the_reason(
    world: World,
) -> None:
    world.github.fail("POST", REVIEWS, 422, times=5, body={"message": "Validation Failed"})
    await world.start(ARBITER_WORKER_RETRY_BACKOFF_SECONDS="0.1")
    await world.deliver("pull_request", world.pull_request_payload(2, "opened"))

    statuses = await world.settled(H1, timeout=60)

    assert [s for s, _ in statuses] == ["pending"] * 4 + ["error"]  # four attempts, the default
    description = statuses[-1][1]
    assert description.startswith("Arbiter could not post its review:")
    assert "422 Validation Failed" in description

    async def dead() -> bool:
        job = await review_job(world)
        return job is not None and job.state == "dead"

    await wait_for(dead, timeout=30, what="the review job to be parked as dead")
    job = await review_job(world)
    assert job is not None and job.attempts == 4
    assert job.last_error is not None and "422" in job.last_error
    (record,) = await world.reviews()
    assert (record.state, record.outcome) == ("failed", "error")
    assert world.github.reviews(REPO, 2) == []


async def test_a_two_minute_secondary_rate_limit_defers_the_review(world: World) -> None:
    world.github.secondary_rate_limit(retry_after=120, method="POST", path=REVIEWS)
    await world.start()
    await world.deliver("pull_request", world.pull_request_payload(2, "opened"))

    async def deferred() -> bool:
        job = await review_job(world)
        return job is not None and job.state == "queued" and job.last_error is not None

    await wait_for(deferred, timeout=60, what="the review to be deferred")
    job = await review_job(world)
    assert job is not None and job.attempts == 0  # no attempt used
    assert 100 <= job.run_at - time.time() <= 130
    assert job.last_error is not None and "secondary rate limit" in job.last_error
    assert world.statuses(H1) == [("pending", "Arbiter is reviewing")]  # it resumes, not dies
    assert world.github.reviews(REPO, 2) == []
