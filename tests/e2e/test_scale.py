"""Scaling out on PostgreSQL: web processes and worker processes sharing one database.

Two `arbiter serve --no-workers` and three `arbiter worker` processes on a fresh database:
signed deliveries spread over both web processes (some sent to both at once) are each
dispatched exactly once, by the workers only; a worker killed with -9 while it runs jobs loses
them to the other workers once their leases expire. And neither kind of process starts on a
database whose schema is behind. Needs ARBITER_TEST_POSTGRES_URL (skipped without it; fails
if it is set and the server is gone).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from alembic import command as alembic
from alembic.script import ScriptDirectory

from bot.store import Job, migrations
from bot.store.sql import SQLStore
from tests.conftest import POSTGRES_ENV, _admin, fixture_json, github_headers
from tests.e2e.serve import ServeProcess, WorkerProcess

pytestmark = pytest.mark.e2e

SECRET = "scale-webhook-secret"
DELIVERIES = 500
BOTH = 100  # of them, also sent to the other web process at the same moment
SLOW = 6
LEASE_SECONDS = 2
SLOW_SECONDS = 4


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A database of its own for this test (`postgres_url` skips or fails for the server)."""
    base = os.environ[POSTGRES_ENV]
    name = f"arbiter_scale_{uuid.uuid4().hex[:12]}"
    _admin(base, f'CREATE DATABASE "{name}"')
    head, _, _ = base.rpartition("/")
    yield f"{head}/{name}"
    _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "ARBITER_DATABASE_URL": database_url,
        "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
        "ARBITER_GITHUB_TOKEN": "ghp_scale_not_used",
        "ARBITER_HANDLERS": "tests.e2e.handlers",
        "ARBITER_TEST_RECORD": str(tmp_path / "calls.tsv"),
        "ARBITER_TEST_SLOW_SECONDS": str(SLOW_SECONDS),
        "ARBITER_WORKER_LEASE_SECONDS": str(LEASE_SECONDS),
        "ARBITER_WORKER_POLL_INTERVAL": "0.2",
        # Reviews queued by the built-in handler fail at once (nothing listens on port 9) and
        # wait a minute before their retry: they stay out of the way.
        "ARBITER_GITHUB_BASE_URL": "http://127.0.0.1:9",
        "ARBITER_WORKER_RETRY_BACKOFF_SECONDS": "60",
    }


def _calls(tmp_path: Path) -> list[tuple[str, str, int]]:
    """(delivery id, what, pid) per handler call, from every process."""
    path = tmp_path / "calls.tsv"
    if not path.exists():
        return []
    rows = (line.split("\t") for line in path.read_text().splitlines() if line)
    return [(delivery, what, int(pid)) for delivery, _label, what, pid in rows]


async def _event_jobs(database_url: str) -> list[Job]:
    store = SQLStore(database_url)
    await store.open()
    try:
        return await store.list_jobs(kind="event", limit=100_000)
    finally:
        await store.close()


async def _wait_for(predicate: Any, what: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _body(title: str) -> bytes:
    payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
    payload["pull_request"]["title"] = title
    return json.dumps(payload).encode()


async def test_two_web_and_three_worker_processes_share_one_postgres(
    tmp_path: Path, database_url: str
) -> None:
    env = _env(tmp_path, database_url)
    webs = [ServeProcess(tmp_path, env, args=("--no-workers",)) for _ in range(2)]
    workers = [WorkerProcess(tmp_path, env) for _ in range(3)]
    webs[0].migrate()
    try:
        await asyncio.gather(*(p.start() for p in [*webs, *workers]))
        worker_pids = {p.process.pid for p in workers if p.process is not None}
        async with aiohttp.ClientSession() as http:
            for worker in workers:  # each answers its own readiness probe
                async with http.get(f"{worker.url}/health/ready") as response:
                    assert response.status == 200

            # 1. Deliveries over both web processes: each dispatched exactly once.
            body = _body("an ordinary pull request")
            ids = [f"scale-{i}-{uuid.uuid4().hex[:8]}" for i in range(DELIVERIES)]
            sends = [(ids[i], webs[i % 2]) for i in range(DELIVERIES)]
            sends += [(ids[i], webs[(i + 1) % 2]) for i in range(BOTH)]
            answers = await _send_all(http, body, sends)
            for i, delivery in enumerate(ids):
                expected = [200, 202] if i < BOTH else [202]
                assert sorted(answers[delivery]) == expected, delivery

            async def all_done() -> bool:
                jobs = await _event_jobs(database_url)
                return len(jobs) == DELIVERIES and all(j.state == "done" for j in jobs)

            # Once every job is done, none can be dispatched again: the counts are final.
            await _wait_for(all_done, f"{DELIVERIES} jobs done")
            records = [(d, pid) for d, what, pid in _calls(tmp_path) if what == "record"]
            assert Counter(d for d, _ in records) == Counter(ids)  # each exactly once
            pids = {pid for _, pid in records}
            assert pids <= worker_pids  # the web processes dispatch nothing
            assert len(pids) >= 2  # and the workers shared the work

            # 2. kill -9 a worker while it runs jobs: the others finish them after the lease.
            slow_body = _body("[slow] a pull request that takes a while")
            slow_ids = [f"slow-{i}-{uuid.uuid4().hex[:8]}" for i in range(SLOW)]
            answers = await _send_all(
                http, slow_body, [(d, webs[i % 2]) for i, d in enumerate(slow_ids)]
            )
            assert all(answers[d] == [202] for d in slow_ids)

            def starts() -> dict[str, int]:
                return {d: pid for d, what, pid in _calls(tmp_path) if what == "slow-start"}

            async def all_started() -> bool:
                return set(starts()) == set(slow_ids)

            await _wait_for(all_started, "every slow job to start")
            holders = Counter(starts().values())
            victim_pid, _ = holders.most_common(1)[0]
            victim = next(p for p in workers if p.process and p.process.pid == victim_pid)
            victim.kill()
            lost = {d for d, pid in starts().items() if pid == victim_pid}
            finished_before_kill = {
                d for d, what, _ in _calls(tmp_path) if what == "slow-finish" and d in lost
            }
            assert lost and not finished_before_kill  # it held jobs when it died

            async def slow_done() -> bool:
                jobs = [j for j in await _event_jobs(database_url) if j.delivery_id in slow_ids]
                return len(jobs) == SLOW and all(j.state == "done" for j in jobs)

            await _wait_for(slow_done, "the slow jobs to finish on the other workers")
    finally:
        for process in [*workers, *webs]:
            process.stop()

    calls = _calls(tmp_path)
    survivors = worker_pids - {victim_pid}
    for delivery in slow_ids:
        started = [pid for d, what, pid in calls if d == delivery and what == "slow-start"]
        finished = [pid for d, what, pid in calls if d == delivery and what == "slow-finish"]
        assert len(finished) == 1 and finished[0] in survivors
        if delivery in lost:  # started on the victim, then again on a survivor
            assert started[0] == victim_pid and len(started) == 2 and started[1] in survivors
        else:
            assert started == finished
    by_delivery = {j.delivery_id: j for j in await _event_jobs(database_url)}
    assert {d for d in slow_ids if by_delivery[d].attempts == 2} == lost
    assert all(by_delivery[d].attempts == 1 for d in ids)  # nothing else ran twice


async def _send_all(
    http: aiohttp.ClientSession, body: bytes, sends: list[tuple[str, ServeProcess]]
) -> dict[str, list[int]]:
    """Post every (delivery id, web process) at once (at most 64 in flight): the answers."""
    answers: dict[str, list[int]] = {}
    gate = asyncio.Semaphore(64)

    async def send(delivery: str, web: ServeProcess) -> None:
        headers = github_headers("pull_request", delivery, body, SECRET)
        async with gate, http.post(f"{web.url}/webhooks/github", data=body, headers=headers) as r:
            answers.setdefault(delivery, []).append(r.status)

    await asyncio.gather(*(send(d, web) for d, web in sends))
    return answers


def _arbiter(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run an `arbiter` command to its end (serve and worker exit at once on a refusal)."""
    process = ServeProcess(cwd, env)
    return subprocess.run(
        [*process._command(), *command.split()],
        cwd=cwd,
        env=process.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_serve_and_worker_refuse_a_schema_that_is_behind(
    tmp_path: Path, database_url: str
) -> None:
    env = _env(tmp_path, database_url)
    head = migrations.head_revision()
    assert head is not None
    for command in ("serve --no-workers", "worker"):
        refused = _arbiter(command, env, tmp_path)
        assert refused.returncode == 1
        assert f"schema is at nothing, this release needs {head}" in refused.stderr
        assert "run `arbiter migrate` first" in refused.stderr

    # A database one release behind: refused too, then brought up to date by `migrate`.
    script = ScriptDirectory.from_config(migrations.config())
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str)
    store = SQLStore(database_url)
    await store.open()
    try:
        await store.run_sql(lambda conn: alembic.upgrade(migrations.config(conn), previous))
    finally:
        await store.close()
    for command in ("serve --no-workers", "worker"):
        refused = _arbiter(command, env, tmp_path)
        assert refused.returncode == 1
        assert f"schema is at {previous}, this release needs {head}" in refused.stderr
    migrated = _arbiter("migrate", env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert f"postgresql store at revision {head} (head {head})" in migrated.stdout
    async with ServeProcess(tmp_path, env, args=("--no-workers",)) as server:
        assert server.process is not None and server.process.poll() is None
