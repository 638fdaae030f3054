"""A PostgreSQL outage under `arbiter serve`: the database goes away while reviews are in flight
and comes back; without a restart, every review ends posted exactly once with a final status.

The test starts a PostgreSQL server of its own (`postgres_server.py`), never the machine's
shared one, and stops it while five reviews are in flight: three wait for the fake model's
answers, which come while the database is away; two have posted their review and wait for
GitHub to take their summary. Each then fails on its next store write, and its outcome cannot
be recorded until the database is back. A delivery that arrives meanwhile is answered 503 with
Retry-After, and is accepted when GitHub sends it again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import github_headers
from tests.e2e.postgres_server import PostgresServer
from tests.e2e.serve import ServeProcess
from tests.e2e.world import PAT, REPO, SECRET, World, wait_for
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import (
    Answer,
    FakeOpenAI,
    Outcome,
    Reply,
    finding,
    findings_in_prompt,
)

pytestmark = pytest.mark.e2e

# Pull requests under review when the database goes away: waiting for the model's answer, or
# for GitHub to take the summary (their review is already posted).
ASKING = [2, 3, 4]
POSTING = [5, 6]
IN_FLIGHT = ASKING + POSTING
DURING = 7  # the pull request whose delivery arrives while it is away
LEASE_SECONDS = 2  # the outage outlasts the leases of the jobs it interrupts
OUTAGE_SECONDS = 3 * LEASE_SECONDS
SUMMARY_HELD_SECONDS = 8  # GitHub answers the summary posts of POSTING during the outage


def _head(number: int) -> str:
    return f"{number:02d}" * 20


def _file(number: int) -> str:
    return f"pr{number}.py"


class HeldOpenAI(FakeOpenAI):
    """The fake OpenAI, holding its answers about some files until the test lets them go
    (requests are still recorded on arrival)."""

    def __init__(self, files: list[str]) -> None:
        super().__init__()
        self._held = set(files)
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    async def _settle(self, reply: Reply, *, since: float | None = None) -> Outcome | None:
        if isinstance(reply, Answer) and self._held & _paths(reply):
            await self._released.wait()
        return await super()._settle(reply, since=since)


def _paths(answer: Answer) -> set[str]:
    return {str(f["path"]) for f in answer.data.get("findings", [])}


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer.create()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def world(tmp_path: Path, postgres: PostgresServer) -> AsyncIterator[World]:
    key = AppKey.generate()
    async with FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=1)
        for number in [*IN_FLIGHT, DURING]:
            code = f"import os\n\n\ndef run(command):\n    return os.system(command)  # {number}\n"
            github.add_pull(
                REPO,
                number,
                files=[PullFile.added(_file(number), code)],
                head_sha=_head(number),
                title=f"Change {number}",
            )
        findings = [finding(_file(n), 5, severity="critical") for n in [*IN_FLIGHT, DURING]]
        openai = HeldOpenAI([_file(n) for n in ASKING])
        async with openai:
            openai.respond(findings_in_prompt(findings))
            w = World(tmp_path, github, openai)
            w.db_url = postgres.create_database("arbiter")
            try:
                yield w
            finally:
                openai.release()
                w.stop()


async def _deliver(world: World, number: int, delivery: str) -> tuple[int, dict[str, str]]:
    """A signed `pull_request` "opened" delivery: the status and headers of the answer."""
    assert world.server is not None
    body = json.dumps(world.pull_request_payload(number, "opened")).encode()
    headers = github_headers("pull_request", delivery, body, SECRET)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{world.server.url}/webhooks/github", data=body, headers=headers) as answer,
    ):
        return answer.status, dict(answer.headers)


def _posted(world: World, number: int) -> dict[str, Any]:
    reviews = [r for r in world.github.reviews(REPO, number) if r["state"] != "PENDING"]
    summaries = [
        c for c in world.github.issue_comments(REPO, number) if "arbiter:summary" in c["body"]
    ]
    return {
        "reviews": len(reviews),
        "inline": [(c["path"], c["line"]) for c in world.github.review_comments(REPO, number)],
        "summaries": len(summaries),
        "status": world.statuses(_head(number))[-1][0],
    }


async def test_reviews_in_flight_finish_once_after_the_database_comes_back(
    world: World, postgres: PostgresServer
) -> None:
    settings = {
        "ARBITER_WORKER_LEASE_SECONDS": str(LEASE_SECONDS),
        "ARBITER_WORKER_RETRY_BACKOFF_SECONDS": "0.5",
    }
    ServeProcess(world.tmp_path, world.env(**settings)).migrate()
    server = await world.start(**settings)
    assert server.process is not None
    pid = server.process.pid

    def summary_posts(numbers: list[int]) -> int:
        return sum(
            world.github.arrived("POST", f"/repos/{REPO}/issues/{n}/comments") for n in numbers
        )

    for number in POSTING:
        world.github.delay("POST", f"/repos/{REPO}/issues/{number}/comments", SUMMARY_HELD_SECONDS)
    for number in IN_FLIGHT:
        status, _ = await _deliver(world, number, f"opened-{number}")
        assert status == 202
    await wait_for(
        lambda: len(world.openai.requests) == len(IN_FLIGHT) and summary_posts(POSTING) == 2,
        60,
        "the reviews to wait for the model, or for GitHub to take their summary",
    )

    postgres.stop()
    status, headers = await _deliver(world, DURING, f"opened-{DURING}")
    assert status == 503 and int(headers["Retry-After"]) > 0
    assert isinstance(world.openai, HeldOpenAI)
    world.openai.release()  # the held answers arrive while the database is away

    def failed_to_record() -> bool:
        return server.log().count("could not record job outcome") >= len(IN_FLIGHT)

    await wait_for(failed_to_record, 60, "every in-flight review to fail on the store")
    await asyncio.sleep(OUTAGE_SECONDS)  # past every lease
    postgres.start()

    status, _ = await _deliver(world, DURING, f"opened-{DURING}")  # GitHub sends it again
    assert status == 202

    for number in [*IN_FLIGHT, DURING]:
        await world.settled(_head(number), timeout=120)
    assert server.process.poll() is None and server.process.pid == pid  # never restarted

    store = await world.store()
    try:

        async def all_finished() -> bool:
            counts = await store.job_counts()
            return counts["queued"] == 0 and counts["running"] == 0

        await wait_for(all_finished, 60, "every job to finish")
        counts = await store.job_counts()
        reviews = await store.list_reviews()
        jobs = await store.list_jobs(limit=1000)
    finally:
        await store.close()

    for number in [*IN_FLIGHT, DURING]:
        assert _posted(world, number) == {
            "reviews": 1,
            "inline": [(_file(number), 5)],
            "summaries": 1,
            "status": "success",  # the final status, not "pending"
        }, number
    assert counts["dead"] == 0 and counts["done"] == len(jobs)
    assert sorted(r.number for r in reviews) == sorted([*IN_FLIGHT, DURING])
    assert all(r.state == "done" for r in reviews)
    # Each answer was paid for once: a review run again after the outage used the cache.
    assert len(world.openai.requests) == len(IN_FLIGHT) + 1
    # No delivery ran a second time: each event job ran once, each review job at most twice
    # (the attempt the outage broke, and the one that posted).
    assert all(j.attempts == 1 for j in jobs if j.kind == "event"), jobs
    assert all(j.attempts <= 2 for j in jobs if j.kind == "review"), jobs
