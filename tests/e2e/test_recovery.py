"""Nothing missed, through `arbiter serve` as a process, against the fake GitHub and GitLab.

- GitHub App mode: a delivery GitHub records as failed is asked for again exactly once,
  arrives signed through the normal webhook and is reviewed once; a delivery Arbiter stored is
  not asked for, though GitHub calls it failed.
- Two `serve` processes on one PostgreSQL database ask for each failed delivery once between
  them.
- A pull request opened while Arbiter was down (no webhook ever sent) is reviewed by the
  reconcile sweep within one interval, exactly once, on GitHub and on GitLab.
"""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.store.sql import SQLStore
from tests.conftest import POSTGRES_ENV, _admin, fixture_json
from tests.e2e.gitlab_world import API_TOKEN, BOT, MERGE_REQUEST_HOOK, PROJECT, GitLabWorld
from tests.e2e.serve import ServeProcess
from tests.e2e.world import PAT, REPO, SECRET, World, wait_for
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.gitlab import FakeGitLab, MRFile
from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt

pytestmark = pytest.mark.e2e

H1, H2, H3, BASE = "a1" * 20, "b2" * 20, "c3" * 20, "d4" * 20
APP = "import subprocess\n\n\ndef run(command):\n    return subprocess.run(command, shell=True)\n"
LATER = "def parse(text):\n    return eval(text)\n"
SHELL = finding("app.py", 5, severity="critical", title="Shell injection", category="security")
EVAL = finding("later.py", 2, severity="major", title="eval of input", category="security")
INTERVAL = "1"  # seconds: passes come quickly here; what is asserted is counts, never times


@pytest.fixture(scope="module")
def app_key() -> AppKey:
    return AppKey.generate()


@pytest.fixture
async def world(tmp_path: Path, app_key: AppKey) -> AsyncIterator[World]:
    async with FakeGitHub(app_id="4242", public_key=app_key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=1)  # the installation of the shared fixtures
        for number, head in ((2, H1), (3, H2)):
            github.add_pull(
                REPO, number, files=[PullFile.added("app.py", APP)], head_sha=head, base_sha=BASE
            )
        async with FakeOpenAI() as openai:
            openai.respond(findings_in_prompt([SHELL, EVAL]))
            w = World(tmp_path, github, openai)
            try:
                yield w
            finally:
                w.stop()


def app_env(key: AppKey, **extra: str) -> dict[str, str]:
    return {"ARBITER_GITHUB_APP_ID": "4242", "ARBITER_GITHUB_PRIVATE_KEY": key.private_pem, **extra}


async def passes(store: SQLStore, name: str, count: int, timeout: float = 30) -> None:
    """Wait until the pass `name` has finished `count` more runs (in any process)."""
    seen: list[float] = []

    async def ran() -> bool:
        run = next((r for r in await store.pass_runs() if r.name == name), None)
        if run is not None and run.finished_at is not None and run.finished_at not in seen:
            seen.append(run.finished_at)
        return len(seen) > count

    await wait_for(ran, timeout, f"{count} more {name} runs")


# --- Redelivery, GitHub App ---------------------------------------------------------------------


async def test_a_failed_delivery_is_asked_for_once_arrives_signed_and_is_reviewed_once(
    world: World, app_key: AppKey
) -> None:
    server = await world.start(**app_env(app_key, ARBITER_REDELIVERY_INTERVAL_SECONDS=INTERVAL))
    github = world.github
    github.set_app_webhook(f"{server.url}/webhooks/github", SECRET)

    # Arbiter got this one (202) but GitHub gave up waiting and recorded a timeout.
    stored = await github.deliver("pull_request", world.pull_request_payload(3, "opened"))
    assert stored["status_code"] == 202
    timed_out = github.record_delivery(
        "pull_request",
        world.pull_request_payload(3, "opened"),
        status_code=504,
        guid=stored["guid"],
    )
    # This one never reached Arbiter: the proxy in front of it answered 502.
    failed = github.record_delivery("pull_request", world.pull_request_payload(2, "opened"))

    await wait_for(lambda: failed["id"] in github.redelivery_requests, 30, "the redelivery")
    statuses = await world.settled(H1)
    assert statuses[-1][0] == "success"
    store = await world.store()
    try:
        await passes(store, "redelivery", 3)  # and a few passes more
        assert await store.seen_delivery("github", failed["guid"])
        (record,) = await store.redelivery_records("github")
        assert (record.guid, record.state, record.attempts) == (failed["guid"], "accepted", 1)
    finally:
        await store.close()

    assert github.redelivery_requests == [failed["id"]]  # once; never the stored one
    assert timed_out["id"] not in github.redelivery_requests
    (redelivered,) = [d for d in github.deliveries() if d["redelivery"]]
    assert (redelivered["guid"], redelivered["status_code"]) == (failed["guid"], 202)
    assert len(github.reviews(REPO, 2)) == 1  # reviewed once
    assert len(github.reviews(REPO, 3)) == 1
    metrics = await world.metrics()
    assert 'arbiter_redeliveries_requested_total{platform="github"} 1.0' in metrics
    log = server.log()
    assert '"redelivery on"' in log and '"redelivery pass done"' in log


async def test_a_redelivery_with_a_bad_signature_is_refused_like_any_delivery(
    world: World, app_key: AppKey
) -> None:
    server = await world.start(**app_env(app_key, ARBITER_REDELIVERY_INTERVAL_SECONDS=INTERVAL))
    world.github.set_app_webhook(f"{server.url}/webhooks/github", "not-the-secret")
    failed = world.github.record_delivery("pull_request", world.pull_request_payload(2, "opened"))
    await wait_for(lambda: failed["id"] in world.github.redelivery_requests, 30)
    await world.github.sent()
    redelivered = [d for d in world.github.deliveries() if d["redelivery"]]
    assert [d["status_code"] for d in redelivered] == [401]  # verification is unchanged
    store = await world.store()
    try:
        await passes(store, "redelivery", 2)
        assert not await store.seen_delivery("github", failed["guid"])
    finally:
        await store.close()
    # 401 is Arbiter's final answer to a delivery it will never take: not asked for again.
    assert world.github.redelivery_requests == [failed["id"]]
    assert world.github.reviews(REPO, 2) == []


# --- Redelivery, two processes on one PostgreSQL database -------------------------------------


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    base = os.environ[POSTGRES_ENV]
    name = f"arbiter_recovery_{uuid.uuid4().hex[:12]}"
    _admin(base, f'CREATE DATABASE "{name}"')
    head, _, _ = base.rpartition("/")
    yield f"{head}/{name}"
    _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _repositories_added(n: int) -> dict[str, Any]:
    payload: dict[str, Any] = copy.deepcopy(
        fixture_json("github/webhooks/installation_repositories/added.payload.json")
    )
    payload["installation"]["id"] = 1
    payload["repositories_added"] = [{"full_name": f"Codertocat/repo-{n}", "id": 1000 + n}]
    return payload


async def test_two_serve_processes_on_one_postgres_ask_for_each_delivery_once(
    tmp_path: Path, database_url: str, app_key: AppKey
) -> None:
    async with FakeGitHub(app_id="4242", public_key=app_key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=1)
        env = {
            "ARBITER_DATABASE_URL": database_url,
            "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
            "ARBITER_GITHUB_BASE_URL": github.url,
            "ARBITER_WORKER_POLL_INTERVAL": "0.2",
            "ARBITER_REDELIVERY_INTERVAL_SECONDS": INTERVAL,
            "ARBITER_RECONCILE_INTERVAL_SECONDS": "0",
            **app_env(app_key),
        }
        servers = [ServeProcess(tmp_path, env) for _ in range(2)]
        servers[0].migrate()
        try:
            await asyncio.gather(*(s.start() for s in servers))
            github.set_app_webhook(f"{servers[1].url}/webhooks/github", SECRET)
            failed = [
                github.record_delivery("installation_repositories", _repositories_added(n))
                for n in range(8)
            ]
            store = SQLStore(database_url)
            await store.open()
            try:

                async def all_stored() -> bool:
                    guids = {f["guid"] for f in failed}
                    return await store.seen_deliveries("github", guids) == guids

                await wait_for(all_stored, 60, "every failed delivery to arrive")
                await passes(store, "redelivery", 4)  # both processes keep trying meanwhile
                (run,) = [r for r in await store.pass_runs() if r.name == "redelivery"]
                known = {r.repo for r in await store.known_repositories("github")}
            finally:
                await store.close()
        finally:
            for server in servers:
                server.stop()
        asked = Counter(github.redelivery_requests)
        assert sorted(asked) == sorted(f["id"] for f in failed)
        assert set(asked.values()) == {1}  # each once, between the two processes
        assert run.total == len(failed)
        assert {f"Codertocat/repo-{n}" for n in range(8)} <= known  # handled, once each
        requested = [s.log().count('"redelivery requested"') for s in servers]
        assert sum(requested) == len(failed)
        assert all('"redelivery on"' in s.log() for s in servers)  # both took part


# --- The reconcile sweep --------------------------------------------------------------------------


def _summaries(world: World, number: int) -> list[dict[str, Any]]:
    return [c for c in world.github.issue_comments(REPO, number) if "arbiter:summary" in c["body"]]


async def test_a_pull_request_opened_while_arbiter_was_down_is_reviewed_once_by_the_sweep(
    world: World,
) -> None:
    world.github.update_pull(REPO, 3, state="closed")  # only #2 and #7 in this story
    sweep = {"ARBITER_RECONCILE_INTERVAL_SECONDS": "2"}
    await world.start(**sweep)
    await world.deliver("pull_request", world.pull_request_payload(2, "opened"))
    await world.settled(H1)  # Arbiter now knows the repository
    world.stop()

    world.github.add_pull(  # opened while Arbiter was down: GitHub's webhook went nowhere
        REPO, 7, files=[PullFile.added("later.py", LATER)], head_sha=H3, base_sha=BASE
    )
    server = await world.start(**sweep)
    statuses = await world.settled(H3, timeout=30)
    assert statuses[-1][0] == "success"
    store = await world.store()
    try:
        await passes(store, "reconcile", 2)
        (run,) = [r for r in await store.pass_runs() if r.name == "reconcile"]
    finally:
        await store.close()

    assert len(world.github.reviews(REPO, 7)) == 1 and len(_summaries(world, 7)) == 1
    assert len(world.github.reviews(REPO, 2)) == 1  # its head was reviewed: not again
    assert run.total == 1
    assert len(world.openai.requests) == 2  # one model call per review, none for the sweep
    metrics = await world.metrics()
    assert 'arbiter_reconcile_reviews_scheduled_total{platform="github"} 1.0' in metrics
    assert '"review queued by the reconcile sweep"' in server.log()


async def test_a_merge_request_opened_while_arbiter_was_down_is_reviewed_once_by_the_sweep(
    tmp_path: Path,
) -> None:
    async with FakeGitLab(token=API_TOKEN, username=BOT) as gitlab:
        gitlab.add_project(PROJECT, default_branch="master")
        gitlab.add_user("dev", project=PROJECT, access="developer")
        gitlab.add_merge_request(
            PROJECT,
            1,
            files=[MRFile.added("app.py", APP)],
            head_sha=H1,
            base_sha=BASE,
            author="dev",
            target_branch="master",
        )
        async with FakeOpenAI() as openai:
            openai.respond(findings_in_prompt([SHELL, EVAL]))
            world = GitLabWorld(tmp_path, gitlab, openai)
            sweep = {"ARBITER_RECONCILE_INTERVAL_SECONDS": "2"}
            try:
                await world.start(**sweep)
                status, _ = await world.deliver(
                    MERGE_REQUEST_HOOK, world.merge_request_hook(1, "open")
                )
                assert status == 202
                await world.settled(H1)
                world.stop()

                gitlab.add_merge_request(  # opened while Arbiter was down
                    PROJECT,
                    2,
                    files=[MRFile.added("later.py", LATER)],
                    head_sha=H3,
                    base_sha=BASE,
                    author="dev",
                    target_branch="master",
                    source_branch="other",
                )
                await world.start(**sweep)
                statuses = await world.settled(H3, timeout=30)
                assert statuses[-1][0] == "success"
                store = await world.store()
                try:
                    await passes(store, "reconcile", 2)
                finally:
                    await store.close()
                metrics = await world.metrics()
            finally:
                world.stop()

    def summaries(iid: int) -> int:
        return sum("<!-- arbiter:summary -->" in n["body"] for n in world.ours(iid))

    assert summaries(2) == 1 and summaries(1) == 1  # each reviewed once
    assert [s for s, _ in world.statuses(H1)].count("success") == 1
    assert len(openai.requests) == 2
    assert 'arbiter_reconcile_reviews_scheduled_total{platform="gitlab"} 1.0' in metrics
