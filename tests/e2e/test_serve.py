"""`arbiter serve` as a real process: signed deliveries in, jobs dispatched exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.store.sql import SQLStore
from tests.conftest import fixture_bytes, fixture_json, github_headers, gitlab_headers
from tests.e2e.serve import ServeProcess

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret"
GL_TOKEN = "e2e-gitlab-token"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/e2e.db",
        "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
        "ARBITER_GITHUB_TOKEN": "ghp_e2e_not_used",
        "ARBITER_GITLAB_WEBHOOK_TOKEN": GL_TOKEN,
        "ARBITER_GITLAB_TOKEN": "glpat-e2e-not-used",
        "ARBITER_HANDLERS": "tests.e2e.handlers",
        "ARBITER_TEST_RECORD": str(tmp_path / "calls.tsv"),
        "ARBITER_WORKER_POLL_INTERVAL": "0.2",
        # The built-in pull-request handler queues reviews; keep their GitHub and GitLab calls local
        # (nothing listens on port 9: they fail at once and are retried later).
        "ARBITER_GITHUB_BASE_URL": "http://127.0.0.1:9",
        "ARBITER_GITLAB_BASE_URL": "http://127.0.0.1:9",
        "ARBITER_WORKER_RETRY_BACKOFF_SECONDS": "60",
        **extra,
    }


def _calls(tmp_path: Path) -> list[tuple[str, str, str]]:
    path = tmp_path / "calls.tsv"
    if not path.exists():
        return []
    return [
        (delivery, label, what)
        for delivery, label, what, _pid in (
            line.split("\t") for line in path.read_text().splitlines() if line
        )
    ]


async def _wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate() if asyncio.iscoroutinefunction(predicate) else predicate():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def _pr_body(title: str | None = None) -> bytes:
    payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
    if title is not None:
        payload["pull_request"]["title"] = title
    return json.dumps(payload).encode()


async def _jobs(tmp_path: Path) -> list[Any]:
    """The event jobs (deliveries); reviews queued by the pull-request handler are left out."""
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/e2e.db")
    await store.open()
    try:
        return await store.list_jobs(kind="event", limit=10_000)
    finally:
        await store.close()


async def test_fresh_start_with_no_configuration(tmp_path: Path) -> None:
    """README command one on a fresh machine: ready, and the log says what each platform needs."""
    async with ServeProcess(tmp_path, {}) as server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/health/ready") as response:
            assert response.status == 200
        async with http.post(f"{server.url}/webhooks/github", data=b"{}") as response:
            assert response.status == 403
    assert (tmp_path / "arbiter.db").exists()  # the embedded default, migrated on start
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    disabled = {
        r["platform"]: r["missing"]
        for r in records
        if r.get("msg", "").startswith("platform disabled")
    }
    assert "ARBITER_GITHUB_WEBHOOK_SECRET" in disabled["github"]
    assert disabled["gitlab"] == ["ARBITER_GITLAB_WEBHOOK_TOKEN", "ARBITER_GITLAB_TOKEN"]
    assert any(r.get("msg") == "listening" for r in records)


async def test_signed_deliveries_through_a_real_server(tmp_path: Path) -> None:
    async with ServeProcess(tmp_path, _env(tmp_path)) as server, aiohttp.ClientSession() as http:
        hook = f"{server.url}/webhooks/github"
        body = fixture_bytes("github/webhooks/pull_request/opened.payload.json")

        async with http.post(
            hook, data=body, headers=github_headers("pull_request", "first", body, SECRET)
        ) as r:
            assert r.status == 202
            job_id = (await r.json())["job_id"]
        async with http.post(
            hook, data=body, headers=github_headers("pull_request", "first", body, SECRET)
        ) as r:
            assert r.status == 200 and (await r.json())["duplicate"] is True
        async with http.post(
            hook, data=body, headers=github_headers("pull_request", "forged", body, "wrong")
        ) as r:
            assert r.status == 401

        mr = fixture_bytes("gitlab/webhooks/merge_request.json")
        gl_hook = f"{server.url}/webhooks/gitlab"
        async with http.post(
            gl_hook, data=mr, headers=gitlab_headers("Merge Request Hook", GL_TOKEN, "gl-1")
        ) as r:
            assert r.status == 202
        async with http.post(
            gl_hook, data=mr, headers=gitlab_headers("Merge Request Hook", "bad", "gl-2")
        ) as r:
            assert r.status == 401

        await _wait_for(lambda: len(_calls(tmp_path)) >= 2, what="two dispatches")
        jobs = await _jobs(tmp_path)
        assert sorted(j.delivery_id for j in jobs) == ["first", "gl-1"]
        assert [j.id for j in jobs if j.delivery_id == "first"] == [job_id]
        assert not any(j.delivery_id in ("forged", "gl-2") for j in jobs)

        # 200 distinct signed deliveries at once: 200 jobs, each dispatched exactly once.
        ids = [f"burst-{uuid.uuid4()}" for _ in range(200)]

        async def send(delivery: str) -> int:
            headers = github_headers("pull_request", delivery, body, SECRET)
            async with http.post(hook, data=body, headers=headers) as response:
                return response.status

        statuses = await asyncio.gather(*(send(d) for d in ids))
        assert Counter(statuses) == {202: 200}
        await _wait_for(
            lambda: sum(1 for c in _calls(tmp_path) if c[0].startswith("burst-")) >= 200,
            what="200 dispatches",
        )

        async def all_done() -> bool:
            jobs = await _jobs(tmp_path)
            return len(jobs) == 202 and all(j.state == "done" for j in jobs)

        # Once every job is done, none can be dispatched again: the count is final.
        await _wait_for(all_done, what="every job done")
        records = Counter(d for d, _, what in _calls(tmp_path) if what == "record")
        assert all(records[d] == 1 for d in ids)
        assert sum(records.values()) == 202


async def test_kill_9_mid_handler_then_restart_completes_the_job(tmp_path: Path) -> None:
    env = _env(tmp_path, ARBITER_WORKER_LEASE_SECONDS="1", ARBITER_TEST_SLOW_SECONDS="2")
    body = _pr_body("[slow] a pull request that takes a while")
    first = ServeProcess(tmp_path, env)
    await first.start()
    try:
        async with aiohttp.ClientSession() as http:
            headers = github_headers("pull_request", "slow-1", body, SECRET)
            async with http.post(f"{first.url}/webhooks/github", data=body, headers=headers) as r:
                assert r.status == 202
        await _wait_for(
            lambda: ("slow-1", "pull_request.opened", "slow-start") in _calls(tmp_path),
            what="the slow handler to start",
        )
    finally:
        first.kill()
    (job,) = await _jobs(tmp_path)
    assert job.state == "running"  # dead process, lease still held

    async with ServeProcess(tmp_path, env):

        async def finished() -> bool:
            (again,) = await _jobs(tmp_path)
            return bool(again.state == "done")

        await _wait_for(finished, what="the job to complete after restart")
    calls = [what for d, _, what in _calls(tmp_path) if d == "slow-1"]
    assert calls.count("slow-start") == 2
    assert calls.count("slow-finish") == 1
    (done,) = await _jobs(tmp_path)
    assert done.attempts == 2


async def test_a_failing_handler_retries_then_dies_while_the_others_ran_once(
    tmp_path: Path,
) -> None:
    env = _env(
        tmp_path,
        ARBITER_WORKER_RETRY_ATTEMPTS="2",
        ARBITER_WORKER_RETRY_BACKOFF_SECONDS="0.1",
    )
    body = _pr_body("[fail] please break")
    async with ServeProcess(tmp_path, env) as server, aiohttp.ClientSession() as http:
        headers = github_headers("pull_request", "fail-1", body, SECRET)
        async with http.post(f"{server.url}/webhooks/github", data=body, headers=headers) as r:
            assert r.status == 202

        async def dead() -> bool:
            (job,) = await _jobs(tmp_path)
            return bool(job.state == "dead")

        await _wait_for(dead, what="the job to be dead")
    (job,) = await _jobs(tmp_path)
    assert job.attempts == 3
    assert job.last_error is not None
    assert "tests.e2e.handlers.fail_when_asked: RuntimeError: asked to fail" in job.last_error
    calls = [what for d, _, what in _calls(tmp_path) if d == "fail-1"]
    assert calls.count("fail") == 3  # tried, retried twice
    assert calls.count("record") == 1  # the handler that succeeded was not run again
    assert sorted(job.progress["succeeded"]) == [
        "handlers.pull_request.review_wanted",  # the built-in one queued its review once
        "tests.e2e.handlers.record_call",
        "tests.e2e.handlers.slow_when_asked",
    ]
    log = server.log()
    assert "job failed; will retry" in log and "job dead after its last attempt" in log


async def test_a_worker_process_serves_health_and_metrics(tmp_path: Path) -> None:
    """`arbiter worker` has no webhooks, but probes and Prometheus can still reach it."""
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
        "PYTHONPATH": str(ROOT),
        "ARBITER_HOST": "127.0.0.1",
        "ARBITER_WORKER_HTTP_PORT": str(port),
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/worker.db",
        "ARBITER_LOG_FORMAT": "json",
    }
    script = Path(sys.executable).with_name("arbiter")
    with open(tmp_path / "worker.log", "wb") as log:
        process = subprocess.Popen(
            [str(script), "worker"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        async with aiohttp.ClientSession() as http:

            async def up() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health/ready") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await _wait_for(up, what="the worker's health endpoint")
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                text = await r.text()
            assert "arbiter_job_runs_total" in text and 'arbiter_jobs{state="queued"}' in text
            async with http.post(f"http://127.0.0.1:{port}/webhooks/github", data=b"{}") as r:
                assert r.status in (404, 405)  # a worker takes no deliveries
    finally:
        process.terminate()
        assert process.wait(30) == 0
