"""The worker against a real SQLite store: concurrency cap, retries, dead jobs, leases, shutdown,
and a store that goes away for a while (behind a fault injector)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from bot.metrics import Metrics
from bot.router import DispatchResult, HandlerFailed
from bot.store import Job, JobDeferred, NewJob, Store, StoreUnavailable
from bot.store.sql import SQLStore
from bot.worker import (
    Worker,
    WorkerOptions,
    backoff_delay,
    slot_needed,
    slot_no_longer_needed,
)
from tests.store.faults import OUTCOME_CALLS, Outage

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
    # A lease long enough that a loaded machine (the suite runs one process per core) does not
    # stall the heartbeat past it: renewed every 0.5 s, it is lost only after a 1.5 s stall.
    options = WorkerOptions(**{**FAST.__dict__, "lease_seconds": 1.5})
    first = Worker(sqlite_store, slow, options, worker_id="first")
    second_store = SQLStore(sqlite_store.url)
    await second_store.open()
    second = Worker(second_store, other, options, worker_id="second")
    first.start()
    try:
        async with asyncio.timeout(10):
            await started.wait()
        second.start()
        await asyncio.sleep(3.5)  # over two lease periods: renewed by the heartbeat each time
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


# --- No claim polling gaps: a freed slot claims at once, and no wake is lost (issue 20) ---------

# A poll that never comes within a test: a job runs only if the worker was woken for it.
NO_POLL = WorkerOptions(**{**FAST.__dict__, "poll_interval": 3600})


class HeldClaims:
    """A real store whose next claim, once armed, holds its answer until released: what an
    enqueue looks like when it lands while a claim is in flight. Everything else passes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.claims = 0
        self.armed = False
        self.answered = asyncio.Event()  # the held claim has its (empty) answer
        self.release = asyncio.Event()

    def as_store(self) -> Store:
        return cast(Store, self)

    async def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        self.claims += 1
        jobs = await self.store.claim(*args, **kwargs)
        if self.armed:
            self.armed = False
            self.answered.set()
            await self.release.wait()
        return jobs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def _started(events: list[str], *names: str) -> None:
    while not all(name in events for name in names):
        await asyncio.sleep(0.005)


async def test_a_freed_slot_claims_a_job_another_process_queued(sqlite_store: SQLStore) -> None:
    """Two of three slots busy, and a job queued by another process (no notify): when one of
    the two ends, its slot takes the job at once, not at the next poll."""
    events: list[str] = []
    finish = {"0": asyncio.Event(), "1": asyncio.Event()}

    async def run(job: Job) -> None:
        events.append(f"start {job.payload}")
        if job.payload in finish:
            await finish[job.payload].wait()
        events.append(f"end {job.payload}")

    await _enqueue(sqlite_store, 2)
    worker = Worker(sqlite_store, run, NO_POLL)
    worker.start()
    try:
        async with asyncio.timeout(10):
            await _started(events, "start 0", "start 1")
            # The worker has a free slot and is waiting out its poll.
            await sqlite_store.enqueue(NewJob(kind="event", payload="2", max_attempts=3))
            await asyncio.sleep(0.05)
            assert "start 2" not in events  # nobody told this process: no claim yet
            finish["1"].set()
            await _started(events, "end 2")
        assert events.index("end 1") < events.index("start 2")
        assert "end 0" not in events  # a slot freed, not the worker gone idle
    finally:
        finish["0"].set()
        await worker.stop()


async def test_an_enqueue_during_a_claim_is_not_lost(sqlite_store: SQLStore) -> None:
    """A job enqueued (and notified) while a claim that missed it is in flight is claimed by
    the next look, not left to the next poll."""
    ran = asyncio.Event()

    async def run(job: Job) -> None:
        ran.set()

    held = HeldClaims(sqlite_store)
    worker = Worker(held.as_store(), run, NO_POLL)
    worker.start()
    try:
        async with asyncio.timeout(10):
            while held.claims == 0:  # the first look found nothing; the worker now waits
                await asyncio.sleep(0.005)
            held.armed = True
            worker.notify()  # a wake: the worker looks again, and this claim is held
            await held.answered.wait()  # it answered: nothing queued
            await _enqueue(sqlite_store, 1)
            worker.notify()
            held.release.set()
            await ran.wait()
    finally:
        await worker.stop()


async def test_a_slot_freed_during_a_claim_is_not_lost(sqlite_store: SQLStore) -> None:
    """Two slots, one busy. Its job ends while a claim that found nothing is in flight, and a
    job another process queued meanwhile runs at once, not at the next poll."""
    events: list[str] = []
    finish = asyncio.Event()

    async def run(job: Job) -> None:
        events.append(f"start {job.payload}")
        if job.payload == "0":
            await finish.wait()
        events.append(f"end {job.payload}")

    two_slots = WorkerOptions(**{**NO_POLL.__dict__, "max_jobs": 2})
    held = HeldClaims(sqlite_store)
    await _enqueue(sqlite_store, 1)
    worker = Worker(held.as_store(), run, two_slots)
    worker.start()
    try:
        async with asyncio.timeout(10):
            await _started(events, "start 0")
            # A claim for the free slot, held after it answered: nothing was queued then.
            held.armed = True
            worker.notify()
            await held.answered.wait()
            await sqlite_store.enqueue(NewJob(kind="event", payload="1", max_attempts=3))
            finish.set()  # job 0 ends while the claim is still in flight
            await _started(events, "end 0")
            held.release.set()
            await _started(events, "end 1")
    finally:
        finish.set()
        await worker.stop()


async def test_polling_still_finds_jobs_no_one_announced(sqlite_store: SQLStore) -> None:
    """The fallback for jobs another process queued while this one had nothing running."""
    ran = asyncio.Event()

    async def run(job: Job) -> None:
        ran.set()

    worker = Worker(sqlite_store, run, FAST)
    worker.start()
    try:
        await asyncio.sleep(0.05)
        await _enqueue(sqlite_store, 1)  # no notify(): only the poll can find it
        async with asyncio.timeout(10):
            await ran.wait()
    finally:
        await worker.stop()


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 12])
def test_backoff_grows_exponentially_within_jitter_and_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    delay = backoff_delay(attempt, base=2, cap=60, rng=rng)
    nominal = min(60, 2 * 2 ** (attempt - 1))
    assert nominal * 0.5 <= delay <= min(60, nominal * 1.5)


def test_backoff_stays_at_its_cap_however_many_tries() -> None:
    """Outcomes and claims are tried again for as long as the store is away: hours of tries."""
    rng = random.Random(7)
    assert 2.5 <= backoff_delay(5000, base=0.5, cap=5.0, rng=rng) <= 5.0


async def test_a_deferred_job_waits_without_using_an_attempt(sqlite_store: SQLStore) -> None:
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
        worker.notify(delivery=True)
    assert not worker._busy()  # below the threshold
    worker.notify(delivery=True)
    assert worker._busy()  # 20 arrivals well within 0.1 s: intake comes first


async def test_during_a_flood_a_claim_takes_a_job_at_a_time(sqlite_store: SQLStore) -> None:
    """Work queued during a burst of deliveries waits for it: a claim takes one job, however
    many slots are free, and the jobs left are claimed once the burst is over."""
    started: list[str] = []

    async def run(job: Job) -> None:
        started.append(job.payload)

    await _enqueue(sqlite_store, 4)
    worker = Worker(sqlite_store, run, FAST)
    pouring = asyncio.create_task(_pour(worker))
    try:
        while not worker._busy():
            await asyncio.sleep(0.001)
        assert await worker._claim_once() == 1  # three slots free, one job taken
        assert await worker._claim_once() == 1  # the next, after busy_claim_delay
    finally:
        pouring.cancel()
    worker._arrivals.clear()  # the burst is over
    assert not worker._busy()
    await asyncio.gather(*worker._tasks.values())
    assert await worker._claim_once() == 2  # the two left: every free slot may take one again
    await asyncio.gather(*worker._tasks.values())
    assert sorted(started) == ["0", "1", "2", "3"]


async def test_a_job_that_needs_its_slot_no_longer_lets_the_next_one_start(
    sqlite_store: SQLStore,
) -> None:
    """A run left with bookkeeping only gives its slot back: with one slot, the next job
    starts while the first still runs, and both end done."""
    finish = asyncio.Event()
    second = asyncio.Event()

    async def run(job: Job) -> None:
        if job.payload == "0":
            slot_no_longer_needed()
            slot_no_longer_needed()  # said twice, the slot is given back once
            await finish.wait()
        else:
            second.set()

    slot_no_longer_needed()  # outside a job's run: nothing to give back
    ids = await _enqueue(sqlite_store, 3)
    worker = Worker(sqlite_store, run, WorkerOptions(**{**FAST.__dict__, "max_jobs": 1}))
    worker.start()
    try:
        async with asyncio.timeout(10):
            await second.wait()  # the first job is still running
            assert worker.active <= 1
            finish.set()
            while True:
                jobs = [await sqlite_store.get_job(i) for i in ids]
                if all(j is not None and j.state == "done" for j in jobs):
                    break
                await asyncio.sleep(0.02)
    finally:
        await worker.stop()


async def _pour(worker: Worker) -> None:
    """Deliveries arriving every 2 ms (a burst: above the threshold's rate), until cancelled."""
    while True:
        worker.notify(delivery=True)
        await asyncio.sleep(0.002)


async def test_a_burst_is_over_once_deliveries_stop(sqlite_store: SQLStore) -> None:
    """A burst ends when deliveries stop coming (`busy_quiet` without one), not a whole
    `busy_window` after its last ones: the work it queued starts then."""

    async def run(job: Job) -> None:
        pass

    options = WorkerOptions(**{**FAST.__dict__, "busy_window": 60.0})
    worker = Worker(sqlite_store, run, options)
    for _ in range(options.busy_arrivals):
        worker.notify(delivery=True)
    assert worker._busy()
    await asyncio.sleep(options.busy_quiet * 2)
    assert not worker._busy()  # well within the window, but nothing came for busy_quiet
    worker.notify(delivery=True)
    assert worker._busy()  # they come again: the twenty are still within the window


async def test_a_claim_waiting_out_a_burst_takes_every_free_slot_once_it_ends(
    sqlite_store: SQLStore,
) -> None:
    """A claim held back by a burst (at most one job every `busy_claim_delay`) claims for
    every free slot if the burst ends while it waits."""

    async def run(job: Job) -> None:
        pass

    await _enqueue(sqlite_store, 4)
    options = WorkerOptions(**{**FAST.__dict__, "busy_window": 60.0, "busy_claim_delay": 60.0})
    worker = Worker(sqlite_store, run, options)
    for _ in range(options.busy_arrivals):
        worker.notify(delivery=True)
    assert await worker._claim_once() == 1
    await asyncio.gather(*worker._tasks.values())
    async with asyncio.timeout(10):  # not the minute the burst's pace would have it wait
        assert await worker._claim_once() == 3  # the burst ended meanwhile: every free slot


# --- A store that goes away: leases, heartbeats and outcomes (issue 16) ------------------------

OUTAGE = WorkerOptions(
    **{
        **FAST.__dict__,
        "lease_seconds": 0.3,
        "poll_interval": 0.01,
        "store_backoff_base": 0.01,
        "store_backoff_max": 0.1,
    }
)


async def _until(
    predicate: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


async def _state(store: Store, job_id: int) -> Job:
    job = await store.get_job(job_id)
    assert job is not None
    return job


async def test_a_worker_takes_back_its_own_job_whose_run_it_lost_track_of(
    sqlite_store: SQLStore,
) -> None:
    """The claim went through but its answer never came back (or a run's outcome could not be
    recorded): the job is this live worker's, unrenewed; the worker takes it back and runs it."""
    ran: list[int] = []

    async def run(job: Job) -> None:
        ran.append(job.attempts)

    (job_id,) = await _enqueue(sqlite_store, 1)
    (lost,) = await sqlite_store.claim("w", limit=1, lease_seconds=OUTAGE.lease_seconds)
    assert lost.id == job_id
    worker = Worker(sqlite_store, run, OUTAGE, worker_id="w")
    worker.start()
    try:
        await _until(lambda: _is(sqlite_store, job_id, "done"), "the job taken back and run")
    finally:
        await worker.stop()
    assert ran == [2]  # run once, on the attempt after the one whose answer was lost
    assert (await sqlite_store.job_counts())["running"] == 0


async def _is(store: Store, job_id: int, state: str) -> bool:
    return (await _state(store, job_id)).state == state


OUTCOME_NAMES = {"done": "complete", "failed": "retry_later", "dead": "bury", "deferred": "release"}


@pytest.mark.parametrize("ending", list(OUTCOME_NAMES))
async def test_an_outcome_is_recorded_once_the_store_is_back(
    sqlite_store: SQLStore, ending: str
) -> None:
    """The store goes away while a job runs and stays away past its lease: when it comes back
    the outcome is recorded, without a restart, and nothing runs twice."""
    outage = Outage(sqlite_store)
    store = outage.as_store()
    go = asyncio.Event()
    runs: list[int] = []

    async def run(job: Job) -> None:
        runs.append(job.attempts)
        if len(runs) > 1:
            return  # a retry or a deferred job's next turn: it ends well
        await go.wait()
        if ending in ("failed", "dead"):
            raise ValueError("the model provider is down")
        if ending == "deferred":
            raise JobDeferred(0.05, "waiting for the daily budget")

    (job_id,) = await _enqueue(sqlite_store, 1, max_attempts=1 if ending == "dead" else 3)
    worker = Worker(store, run, OUTAGE, worker_id="w")
    worker.start()
    try:
        await _until(lambda: bool(runs), "the run to start")
        outage.begin()
        go.set()
        await asyncio.sleep(OUTAGE.lease_seconds * 3)  # the lease lapses while the store is away
        outage.end()
        final = "dead" if ending == "dead" else "done"
        await _until(lambda: _is(sqlite_store, job_id, final), f"the job {final}")
        job = await _state(sqlite_store, job_id)
    finally:
        await worker.stop()
    assert (await sqlite_store.job_counts())["running"] == 0
    assert outage.count(OUTCOME_NAMES[ending], failed=True) >= 2  # tried again, not dropped
    assert outage.count("renew_leases", failed=True) >= 2  # the job stayed held meanwhile
    if ending == "done":
        assert (runs, job.attempts) == ([1], 1)  # recorded, not run again
    elif ending == "failed":
        assert (runs, job.attempts) == ([1, 2], 2)
        assert job.last_error == "ValueError: the model provider is down"
    elif ending == "dead":
        assert (runs, job.attempts) == ([1], 1)
        assert job.last_error == "ValueError: the model provider is down"
    else:
        assert (runs, job.attempts) == ([1, 1], 1)  # the deferral gave its attempt back


async def test_recording_an_outcome_does_not_hold_a_slot(sqlite_store: SQLStore) -> None:
    """One slot: the first job's outcome cannot be recorded yet, the second job runs anyway."""
    outage = Outage(sqlite_store)
    second_ran = asyncio.Event()

    async def run(job: Job) -> None:
        if job.payload == "1":
            second_ran.set()

    first, second = await _enqueue(sqlite_store, 2)
    outage.begin(OUTCOME_CALLS, jobs=[first])
    one_slot = WorkerOptions(**{**OUTAGE.__dict__, "max_jobs": 1})
    worker = Worker(outage.as_store(), run, one_slot, worker_id="w")
    worker.start()
    try:
        async with asyncio.timeout(10):
            await second_ran.wait()
        assert outage.count("complete", failed=True) >= 1
        assert (await _state(sqlite_store, first)).state == "running"  # still being recorded
        outage.end()
        await _until(lambda: _is(sqlite_store, first, "done"), "the first job's outcome")
        await _until(lambda: _is(sqlite_store, second, "done"), "the second job's outcome")
    finally:
        await worker.stop()


async def test_the_heartbeat_survives_store_errors_and_keeps_the_job(
    sqlite_store: SQLStore,
) -> None:
    outage = Outage(sqlite_store)
    release = asyncio.Event()
    runs: list[int] = []

    async def run(job: Job) -> None:
        runs.append(job.attempts)
        await release.wait()

    (job_id,) = await _enqueue(sqlite_store, 1)
    worker = Worker(outage.as_store(), run, OUTAGE, worker_id="w")
    worker.start()
    try:
        await _until(lambda: bool(runs), "the run to start")
        outage.begin(["renew_leases"])
        await _until(lambda: outage.count("renew_leases", failed=True) >= 3, "failed renewals")
        await asyncio.sleep(OUTAGE.lease_seconds)  # the lease has lapsed by now
        renewed = outage.count("renew_leases", failed=False)
        outage.end()
        await _until(lambda: outage.count("renew_leases", failed=False) > renewed, "a renewal")
        job = await _state(sqlite_store, job_id)
        assert (job.state, job.worker_id) == ("running", "w")
        assert job.lease_until is not None and job.lease_until > time.time()
        await asyncio.sleep(OUTAGE.lease_seconds * 2)  # its own sweeps leave it alone
        release.set()
        await _until(lambda: _is(sqlite_store, job_id, "done"), "the job done")
    finally:
        await worker.stop()
    assert runs == [1]


async def test_a_run_whose_lease_was_taken_over_stops_and_records_nothing(
    sqlite_store: SQLStore,
) -> None:
    """The first worker could not renew (its store was away) and another took the job over:
    once the first hears its lease is gone it stops the run, and records nothing over the
    other's."""
    outage = Outage(sqlite_store)
    metrics = Metrics()
    events: list[str] = []
    taken_over = asyncio.Event()

    async def slow(job: Job) -> None:
        events.append("first started")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("first stopped")
            raise
        events.append("first finished")

    async def quick(job: Job) -> None:
        events.append("second ran")
        taken_over.set()

    (job_id,) = await _enqueue(sqlite_store, 1)
    first = Worker(outage.as_store(), slow, OUTAGE, metrics=metrics, worker_id="first")
    other_store = SQLStore(sqlite_store.url)
    await other_store.open()
    second = Worker(other_store, quick, OUTAGE, worker_id="second")
    first.start()
    try:
        await _until(lambda: bool(events), "the first run")
        outage.begin(["renew_leases"])
        second.start()
        async with asyncio.timeout(10):
            await taken_over.wait()
        outage.end()
        await _until(lambda: _is(sqlite_store, job_id, "done"), "the job done")
        await _until(lambda: len(events) == 3, "the first run to end", timeout=20)
        lost = metrics.job_runs.labels(kind="event", outcome="lost")
        await _until(lambda: lost._value.get() == 1, "the first worker to count its run lost")
        job = await _state(sqlite_store, job_id)
    finally:
        await first.stop()
        await second.stop()
        await other_store.close()
    assert events == ["first started", "second ran", "first stopped"]
    assert (job.state, job.attempts) == ("done", 2)
    assert metrics.job_runs.labels(kind="event", outcome="lost")._value.get() == 1


async def test_claiming_while_the_store_is_down_backs_off_and_resumes_on_its_own(
    sqlite_store: SQLStore,
) -> None:
    outage = Outage(sqlite_store)
    ran = asyncio.Event()

    async def run(job: Job) -> None:
        ran.set()

    outage.begin(["claim"])
    options = WorkerOptions(**{**OUTAGE.__dict__, "store_backoff_max": 0.5})
    worker = Worker(outage.as_store(), run, options, worker_id="w")
    worker.start()
    try:
        await _until(lambda: outage.count("claim", failed=True) >= 7, "failed claims")
        failed = [c.at for c in outage.calls if c.name == "claim" and c.failed]
        gaps = [b - a for a, b in itertools.pairwise(failed)]
        # Each wait at least half its nominal poll·2^n (the jitter's floor), not one poll.
        assert gaps[5] >= 0.5 * options.poll_interval * 2**5, gaps
        outage.end()
        await _enqueue(sqlite_store, 1)  # no notify(): the worker must look by itself
        async with asyncio.timeout(10):
            await ran.wait()
    finally:
        await worker.stop()


async def test_jobs_queued_by_jobs_are_not_a_burst_of_deliveries(sqlite_store: SQLStore) -> None:
    """Reviews queued by the dispatch of deliveries wake the worker without throttling it."""

    async def run(job: Job) -> None:
        pass

    worker = Worker(sqlite_store, run, FAST)
    for _ in range(FAST.busy_arrivals * 3):
        worker.notify()
    assert not worker._busy()


async def test_a_kind_with_a_lane_runs_while_every_shared_slot_is_taken(
    sqlite_store: SQLStore,
) -> None:
    """Two long reviews hold both shared slots; events queued after them still run, in their
    lane, one at a time (its one slot), and never more reviews than the shared slots."""
    release = asyncio.Event()
    running: dict[str, int] = {"review": 0, "event": 0}
    most: dict[str, int] = {"review": 0, "event": 0}
    done: list[str] = []

    async def run(job: Job) -> None:
        running[job.kind] += 1
        most[job.kind] = max(most[job.kind], running[job.kind])
        try:
            if job.kind == "review":
                await release.wait()
            else:
                await asyncio.sleep(0.01)
        finally:
            running[job.kind] -= 1
            done.append(f"{job.kind} {job.payload}")

    for i in range(3):
        await sqlite_store.enqueue(NewJob(kind="review", payload=str(i)))
    for i in range(4):
        await sqlite_store.enqueue(NewJob(kind="event", payload=str(i)))
    options = dataclasses.replace(FAST, max_jobs=2, lanes={"event": 1})
    worker = Worker(sqlite_store, run, options)
    worker.start()
    try:
        async with asyncio.timeout(10):
            while sum(1 for d in done if d.startswith("event")) < 4:
                await asyncio.sleep(0.01)
        assert running["review"] == 2 and not any(d.startswith("review") for d in done)
        assert most == {"review": 2, "event": 1}
        release.set()
        async with asyncio.timeout(10):
            while len(done) < 7:
                await asyncio.sleep(0.01)
        assert most["review"] == 2  # the third review waited for a shared slot
    finally:
        release.set()
        await worker.stop(grace=1)


async def test_a_claim_that_fills_every_slot_does_not_claim_again_for_empty_lanes(
    sqlite_store: SQLStore,
) -> None:
    """Two reviews fill both shared slots in one claim, and no event waits for the lane: the
    worker then waits for a slot or an enqueue instead of asking the store again at once (that
    claim could only find events, and there were none a moment ago; the next freed slot would
    wait behind it)."""
    release = asyncio.Event()
    started: list[str] = []
    claims: list[tuple[int, dict[str, int]]] = []
    claim = sqlite_store.claim

    async def counted(worker_id: str, **kwargs: Any) -> list[Job]:
        claims.append((kwargs["limit"], dict(kwargs.get("lanes") or {})))
        return await claim(worker_id, **kwargs)

    async def run(job: Job) -> None:
        started.append(job.payload)
        await release.wait()

    for i in range(2):
        await sqlite_store.enqueue(NewJob(kind="review", payload=str(i)))
    sqlite_store.claim = counted  # type: ignore[method-assign]
    options = dataclasses.replace(FAST, max_jobs=2, lanes={"event": 2}, poll_interval=30)
    worker = Worker(sqlite_store, run, options)
    worker.start()
    try:
        async with asyncio.timeout(10):
            while len(started) < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert claims == [(2, {"event": 2})]
        # An event queued now still runs in its lane at once (the enqueue wakes the worker).
        await sqlite_store.enqueue(NewJob(kind="event", payload="e"))
        worker.notify()
        async with asyncio.timeout(10):
            while "e" not in started:
                await asyncio.sleep(0.01)
        assert claims[1] == (0, {"event": 2})
    finally:
        release.set()
        await worker.stop(grace=1)


async def test_a_retry_claimed_while_its_run_is_ending_runs_once_more(
    sqlite_store: SQLStore,
) -> None:
    """The run fails, its retry is recorded due at once, and a claim takes it before the run's
    task has ended: the claim is not dropped (which stranded the job until its lease ran out,
    then ran it as a third attempt); the next attempt runs once, as attempt 2."""
    runs: list[int] = []

    async def run(job: Job) -> None:
        runs.append(job.attempts)
        if job.attempts == 1:
            raise ValueError("flaky")

    class Racing:
        """The store, but a claim is made right after each retry is recorded."""

        def __init__(self) -> None:
            self.worker: Worker | None = None

        async def retry_later(self, *args: Any, **kwargs: Any) -> bool:
            recorded = await sqlite_store.retry_later(*args, **kwargs)
            assert self.worker is not None
            await self.worker._claim_once()
            return recorded

        def __getattr__(self, name: str) -> Any:
            return getattr(sqlite_store, name)

    racing = Racing()
    options = dataclasses.replace(FAST, backoff_base=0, backoff_max=0)
    worker = Worker(cast(Store, racing), run, options)
    racing.worker = worker
    (job_id,) = await _enqueue(sqlite_store, 1)
    worker.start()
    try:
        await _until(lambda: _is(sqlite_store, job_id, "done"), "the job done")
    finally:
        await worker.stop()
    job = await _state(sqlite_store, job_id)
    assert (runs, job.attempts) == ([1, 2], 2)


# --- Jobs claimed ahead of a free slot (`WorkerOptions.ahead`, `slot_needed`) -------------------

# Ahead whatever the queue's depth (`ahead_leaves`, tested on its own below).
AHEAD = dataclasses.replace(FAST, max_jobs=2, ahead={"review": 2}, ahead_leaves=0)


async def _enqueue_reviews(store: SQLStore, n: int) -> list[int]:
    ids = []
    for i in range(n):
        result = await store.enqueue(NewJob(kind="review", payload=str(i)))
        assert result.job_id is not None
        ids.append(result.job_id)
    return ids


async def _soon(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_jobs_claimed_ahead_prepare_then_wait_for_a_slot_which_goes_to_them_in_order(
    sqlite_store: SQLStore,
) -> None:
    """Two slots, two more claimed ahead: all four do their first steps at once, never more
    than two are past `slot_needed` at a time, and a slot that frees goes to the job that has
    waited longest, at once (no claim between)."""
    prepared: list[str] = []
    in_slot: list[str] = []
    most = 0
    release = {str(i): asyncio.Event() for i in range(8)}
    claims = 0
    claim = sqlite_store.claim

    async def counted(worker_id: str, **kwargs: Any) -> list[Job]:
        nonlocal claims
        claims += 1
        return await claim(worker_id, **kwargs)

    async def run(job: Job) -> None:
        nonlocal most
        prepared.append(job.payload)
        if job.payload in ("2", "3"):
            await asyncio.sleep(0.05 if job.payload == "2" else 0.01)  # "3" is ready first
        await slot_needed()
        in_slot.append(job.payload)
        most = max(most, len(in_slot) - sum(release[p].is_set() for p in in_slot))
        await release[job.payload].wait()

    assert await slot_needed() == 0.0  # outside a job's run: nothing to wait for
    await _enqueue_reviews(sqlite_store, 8)
    sqlite_store.claim = counted  # type: ignore[method-assign]
    worker = Worker(sqlite_store, run, dataclasses.replace(AHEAD, poll_interval=30))
    worker.start()
    try:
        await _soon(lambda: len(prepared) == 4)
        await asyncio.sleep(0.1)  # "2" and "3" are waiting by now
        assert sorted(in_slot) == ["0", "1"] and sorted(prepared) == ["0", "1", "2", "3"]
        before = claims
        release["0"].set()
        await _soon(lambda: len(in_slot) == 3)
        assert in_slot[2] == "3"  # the first to wait
        # The slot went to "3" before any claim: the claim after it refills what it left ahead.
        await _soon(lambda: "4" in prepared)
        assert claims >= before + 1
        release["1"].set()
        await _soon(lambda: len(in_slot) == 4)
        assert in_slot[3] == "2"
        for event in release.values():
            event.set()
        await _soon(lambda: len(in_slot) == 8)
        assert most == 2
    finally:
        for event in release.values():
            event.set()
        await worker.stop(grace=1)
    assert (await sqlite_store.job_counts())["done"] == 8


async def test_a_job_claimed_while_a_slot_is_free_takes_it_at_once(
    sqlite_store: SQLStore,
) -> None:
    """A job of a kind claimed ahead goes to a free shared slot first: it does not wait."""
    waited: list[float] = []

    async def run(job: Job) -> None:
        waited.append(await slot_needed())

    await _enqueue_reviews(sqlite_store, 2)
    worker = Worker(sqlite_store, run, AHEAD)
    async with asyncio.timeout(10):
        await worker.run_until_idle()
    assert waited == [0.0, 0.0]


async def test_time_waiting_for_a_slot_does_not_count_toward_the_job_timeout(
    sqlite_store: SQLStore,
) -> None:
    """One slot, held 0.6 s; the job claimed ahead (0.4 s timeout) waits for it that long, then
    finishes its own 0.1 s of work: done on its first attempt, told how long it waited."""
    waited: list[float] = []
    options = dataclasses.replace(AHEAD, max_jobs=1, ahead={"review": 1}, job_timeout=0.4)

    async def run(job: Job) -> None:
        if job.payload == "0":
            await asyncio.sleep(0.3)
            await slot_needed()  # holds the slot already: no wait, no extension
            await asyncio.sleep(0.3)  # past the 0.4 s since the slot was taken: a timeout
        else:
            waited.append(await slot_needed())
            await asyncio.sleep(0.1)

    first, second = await _enqueue_reviews(sqlite_store, 2)
    worker = Worker(sqlite_store, run, options)
    worker.start()
    try:
        await _soon(lambda: bool(waited))
        await _soon(lambda: worker.active == 0)
    finally:
        await worker.stop(grace=1)
    assert waited[0] >= 0.35  # it waited for the first job's slot (which timed out at 0.4 s)
    done = await sqlite_store.get_job(second)
    assert done is not None and (done.state, done.attempts) == ("done", 1)
    timed_out = await sqlite_store.get_job(first)
    assert timed_out is not None and "timed out" in (timed_out.last_error or "")


async def test_stopping_hands_back_jobs_waiting_for_a_slot_untried_at_once(
    sqlite_store: SQLStore,
) -> None:
    """At shutdown a job claimed ahead never reaches its slot's step: it is queued again
    untried, without waiting out the grace period the running jobs get."""
    reached: list[str] = []
    release = asyncio.Event()

    async def run(job: Job) -> None:
        await slot_needed()
        reached.append(job.payload)
        if job.payload in ("0", "1"):
            await release.wait()

    ids = await _enqueue_reviews(sqlite_store, 4)
    worker = Worker(sqlite_store, run, AHEAD)
    worker.start()
    await _soon(lambda: len(reached) == 2 and worker.active == 4)
    stopping = asyncio.ensure_future(worker.stop(grace=5))
    await asyncio.sleep(0.1)
    release.set()  # the two running jobs end within their grace
    async with asyncio.timeout(5):
        await stopping
    assert sorted(reached) == ["0", "1"]
    jobs = [await sqlite_store.get_job(i) for i in ids]
    assert [(j.state, j.attempts) for j in jobs if j is not None] == [
        ("done", 1),
        ("done", 1),
        ("queued", 0),
        ("queued", 0),
    ]


async def _one_slot_one_ahead(
    store: SQLStore,
    run: Callable[[Job], Awaitable[None]],
    claim: Callable[..., Awaitable[list[Job]]],
    names: tuple[str, ...],
) -> Worker:
    """A started worker of one slot and one review ahead, claiming through `claim`, with a
    review queued per name."""
    for name in names:
        await store.enqueue(NewJob(kind="review", payload=name))
    store.claim = claim  # type: ignore[method-assign,assignment]
    options = dataclasses.replace(AHEAD, max_jobs=1, ahead={"review": 1}, poll_interval=30)
    worker = Worker(store, run, options)
    worker.start()
    return worker


async def test_a_slot_a_claim_in_flight_asked_for_is_not_also_given_to_a_job_claimed_ahead(
    sqlite_store: SQLStore,
) -> None:
    """One slot. "a" holds it, "p" was claimed ahead and is still getting ready. "a" ends, and
    the claim for its slot is slow; "p" asks for a slot meanwhile, and waits for the claim:
    the job it brings ("j") takes "p"'s place ahead and "p" the slot. Never do two jobs run in
    one slot (they did: "p" took the slot at once, and "j" the same slot after the claim)."""
    in_slot: list[str] = []
    started: list[str] = []
    now_in_slot = most = 0
    release_a = asyncio.Event()
    claim = sqlite_store.claim
    slow = False

    async def slowly(worker_id: str, **kwargs: Any) -> list[Job]:
        if slow:
            await asyncio.sleep(0.3)
        return await claim(worker_id, **kwargs)

    async def run(job: Job) -> None:
        nonlocal now_in_slot, most, slow
        started.append(job.payload)
        if job.payload == "p":
            await asyncio.sleep(0.15)  # ready while the claim for "a"'s slot is in flight
        await slot_needed()
        now_in_slot += 1
        most = max(most, now_in_slot)
        in_slot.append(job.payload)
        try:
            if job.payload == "a":
                await release_a.wait()
                slow = True
            else:
                await asyncio.sleep(0.3 if job.payload == "p" else 0.05)
        finally:
            now_in_slot -= 1

    worker = await _one_slot_one_ahead(sqlite_store, run, slowly, ("a", "p", "j"))
    try:
        await _soon(lambda: in_slot == ["a"] and started == ["a", "p"])  # "p" claimed ahead
        release_a.set()
        await _soon(lambda: len(in_slot) == 3)
    finally:
        release_a.set()
        await worker.stop(grace=1)
    assert most == 1
    assert in_slot == ["a", "p", "j"]


async def test_the_last_jobs_of_a_burst_are_left_to_workers_with_a_free_slot(
    sqlite_store: SQLStore,
) -> None:
    """By default a worker claims ahead only while more than `max_jobs` due jobs would be left
    besides those its free slots take: with two slots and four reviews, two run and none is
    held ahead (another worker's free slots take the rest); three more queued, two are."""
    prepared: list[str] = []
    release = asyncio.Event()

    async def run(job: Job) -> None:
        prepared.append(job.payload)
        await slot_needed()
        await release.wait()

    await _enqueue_reviews(sqlite_store, 4)
    options = dataclasses.replace(AHEAD, ahead_leaves=None, poll_interval=0.05)
    worker = Worker(sqlite_store, run, options)
    worker.start()
    try:
        await _soon(lambda: len(prepared) == 2)
        await asyncio.sleep(0.3)  # several polls
        assert sorted(prepared) == ["0", "1"]
        for i in range(4, 7):
            await sqlite_store.enqueue(NewJob(kind="review", payload=str(i)))
        await _soon(lambda: len(prepared) == 4)
        await asyncio.sleep(0.3)
        assert sorted(prepared) == ["0", "1", "2", "3"]  # five due, two ahead: three left
    finally:
        release.set()
        await worker.stop(grace=1)


async def test_a_slot_a_failed_claim_asked_for_goes_to_the_job_that_waited_for_it(
    sqlite_store: SQLStore,
) -> None:
    """As above, but the slow claim for "a"'s slot fails (the store went away): "p", which
    waited for that claim, takes the slot then, not at the next poll."""
    in_slot: list[str] = []
    started: list[str] = []
    release_a = asyncio.Event()
    claim = sqlite_store.claim
    failing = False

    async def failing_once(worker_id: str, **kwargs: Any) -> list[Job]:
        nonlocal failing
        if failing:
            failing = False
            await asyncio.sleep(0.3)
            raise StoreUnavailable("the store went away")
        return await claim(worker_id, **kwargs)

    async def run(job: Job) -> None:
        nonlocal failing
        started.append(job.payload)
        if job.payload == "p":
            await asyncio.sleep(0.15)  # ready while the claim for "a"'s slot is in flight
        await slot_needed()
        in_slot.append(job.payload)
        if job.payload == "a":
            await release_a.wait()
            failing = True

    worker = await _one_slot_one_ahead(sqlite_store, run, failing_once, ("a", "p"))
    try:
        await _soon(lambda: in_slot == ["a"] and started == ["a", "p"])
        release_a.set()
        await _soon(lambda: in_slot == ["a", "p"], timeout=5)
    finally:
        release_a.set()
        await worker.stop(grace=1)
