"""The worker against a real SQLite store: concurrency cap, retries, dead jobs, leases, shutdown."""

from __future__ import annotations

import asyncio
import random

import pytest

from bot.metrics import Metrics
from bot.router import DispatchResult, HandlerFailed
from bot.store import Job, NewJob
from bot.store.sql import SQLStore
from bot.worker import Worker, WorkerOptions, backoff_delay

FAST = WorkerOptions(
    max_jobs=3,
    job_timeout=5,
    lease_seconds=5,
    poll_interval=0.02,
    backoff_base=0.01,
    backoff_max=0.05,
    shutdown_grace=1,
)


async def _enqueue(store: SQLStore, n: int, max_attempts: int = 3) -> list[int]:
    ids = []
    for i in range(n):
        result = await store.enqueue(
            NewJob(kind="event", payload=str(i), max_attempts=max_attempts)
        )
        assert result.job_id is not None
        ids.append(result.job_id)
    return ids


async def test_runs_every_job_once_with_at_most_max_jobs_at_a_time(sqlite_store: SQLStore) -> None:
    ran: list[str] = []
    active = peak = 0

    async def run(job: Job) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        ran.append(job.payload)
        active -= 1

    await _enqueue(sqlite_store, 20)
    worker = Worker(sqlite_store, run, FAST)
    async with asyncio.timeout(20):
        await worker.run_until_idle()
    assert sorted(ran, key=int) == [str(i) for i in range(20)]
    assert peak == FAST.max_jobs
    assert (await sqlite_store.job_counts())["done"] == 20


async def test_failures_retry_with_backoff_then_the_job_is_dead(sqlite_store: SQLStore) -> None:
    attempts: list[int] = []
    metrics = Metrics()

    async def run(job: Job) -> None:
        attempts.append(job.attempts)
        raise ValueError("the model provider is down")

    (job_id,) = await _enqueue(sqlite_store, 1, max_attempts=3)
    worker = Worker(sqlite_store, run, FAST, metrics=metrics)
    async with asyncio.timeout(20):
        while (job := await sqlite_store.get_job(job_id)) and job.state != "dead":
            await worker.run_until_idle()
            await asyncio.sleep(0.01)
    assert attempts == [1, 2, 3]
    assert job is not None
    assert job.last_error == "ValueError: the model provider is down"
    runs = metrics.job_runs
    assert runs.labels(kind="event", outcome="retry")._value.get() == 2
    assert runs.labels(kind="event", outcome="dead")._value.get() == 1


async def test_handler_progress_survives_retries(sqlite_store: SQLStore) -> None:
    seen_progress: list[dict[str, object]] = []

    async def run(job: Job) -> None:
        seen_progress.append(job.progress)
        result = DispatchResult(
            succeeded=["handlers.a.ok"], failed=[("handlers.a.bad", KeyError("x"))]
        )
        raise HandlerFailed(result)

    (job_id,) = await _enqueue(sqlite_store, 1, max_attempts=2)
    worker = Worker(sqlite_store, run, FAST)
    async with asyncio.timeout(20):
        while (job := await sqlite_store.get_job(job_id)) and job.state != "dead":
            await worker.run_until_idle()
            await asyncio.sleep(0.01)
    assert seen_progress == [{}, {"succeeded": ["handlers.a.ok"]}]
    assert job is not None
    assert job.last_error == "HandlerFailed: handlers.a.bad: KeyError: 'x'"


async def test_a_job_past_its_timeout_is_retried(sqlite_store: SQLStore) -> None:
    calls = 0

    async def run(job: Job) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)

    (job_id,) = await _enqueue(sqlite_store, 1)
    options = WorkerOptions(**{**FAST.__dict__, "job_timeout": 0.1})
    worker = Worker(sqlite_store, run, options)
    async with asyncio.timeout(20):
        while (job := await sqlite_store.get_job(job_id)) and job.state != "done":
            await worker.run_until_idle()
            await asyncio.sleep(0.01)
    assert calls == 2
    assert job is not None
    assert job.last_error == "timed out after 0.1 s"


async def test_the_heartbeat_keeps_a_long_job_from_being_taken_over(
    sqlite_store: SQLStore, tmp_path: object
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    runs: list[str] = []

    async def slow(job: Job) -> None:
        runs.append("slow")
        started.set()
        await release.wait()

    async def other(job: Job) -> None:
        runs.append("other")

    await _enqueue(sqlite_store, 1)
    options = WorkerOptions(**{**FAST.__dict__, "lease_seconds": 0.3})
    first = Worker(sqlite_store, slow, options, worker_id="first")
    second_store = SQLStore(sqlite_store.url)
    await second_store.open()
    second = Worker(second_store, other, options, worker_id="second")
    first.start()
    try:
        async with asyncio.timeout(10):
            await started.wait()
        second.start()
        await asyncio.sleep(1.2)  # four lease periods: renewed by the heartbeat each time
        assert runs == ["slow"]
        release.set()
        async with asyncio.timeout(10):
            while (await sqlite_store.job_counts())["done"] != 1:
                await asyncio.sleep(0.02)
    finally:
        await first.stop()
        await second.stop()
        await second_store.close()
    assert runs == ["slow"]


async def test_stop_waits_for_the_grace_period_then_releases_the_rest(
    sqlite_store: SQLStore,
) -> None:
    quick_done = asyncio.Event()

    async def run(job: Job) -> None:
        if job.payload == "0":
            await asyncio.sleep(0.05)
            quick_done.set()
        else:
            await asyncio.sleep(30)

    ids = await _enqueue(sqlite_store, 2)
    worker = Worker(sqlite_store, run, WorkerOptions(**{**FAST.__dict__, "shutdown_grace": 0.3}))
    worker.start()
    async with asyncio.timeout(10):
        while worker.active < 2:
            await asyncio.sleep(0.01)
    await worker.stop()
    assert quick_done.is_set()
    finished = await sqlite_store.get_job(ids[0])
    released = await sqlite_store.get_job(ids[1])
    assert finished is not None and finished.state == "done"
    assert released is not None and released.state == "queued" and released.attempts == 0


async def test_notify_wakes_an_idle_worker(sqlite_store: SQLStore) -> None:
    ran = asyncio.Event()

    async def run(job: Job) -> None:
        ran.set()

    slow_poll = WorkerOptions(**{**FAST.__dict__, "poll_interval": 60})
    worker = Worker(sqlite_store, run, slow_poll)
    worker.start()
    try:
        await asyncio.sleep(0.05)  # the loop is now waiting out a 60 s poll
        await _enqueue(sqlite_store, 1)
        worker.notify()
        async with asyncio.timeout(5):
            await ran.wait()
    finally:
        await worker.stop()


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 12])
def test_backoff_grows_exponentially_within_jitter_and_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    delay = backoff_delay(attempt, base=2, cap=60, rng=rng)
    nominal = min(60, 2 * 2 ** (attempt - 1))
    assert nominal * 0.5 <= delay <= min(60, nominal * 1.5)


async def test_a_deferred_job_waits_without_using_an_attempt(sqlite_store: SQLStore) -> None:
    from bot.store import JobDeferred

    calls: list[int] = []

    async def run(job: Job) -> None:
        calls.append(job.attempts)
        if len(calls) == 1:
            raise JobDeferred(0.05, "waiting for the daily budget")

    (job_id,) = await _enqueue(sqlite_store, 1, max_attempts=1)
    worker = Worker(sqlite_store, run, FAST)
    async with asyncio.timeout(20):
        while (job := await sqlite_store.get_job(job_id)) and job.state != "done":
            await worker.run_until_idle()
            await asyncio.sleep(0.02)
    assert calls == [1, 1]  # the deferral gave its attempt back: a one-attempt job still ran


async def test_a_flood_of_deliveries_makes_the_worker_claim_less_often(
    sqlite_store: SQLStore,
) -> None:
    async def run(job: Job) -> None:
        pass

    worker = Worker(sqlite_store, run, FAST)
    assert not worker._busy()
    for _ in range(FAST.busy_arrivals - 1):
        worker.notify()
    assert not worker._busy()  # below the threshold
    worker.notify()
    assert worker._busy()  # 20 arrivals well within 0.1 s: intake comes first
