"""The worker: claims jobs from the store's queue and runs them, at most `max_jobs` at once.

It knows only the store and the `run(job)` it is handed. A claimed job is leased; a heartbeat
renews the leases of running jobs, so a worker that dies loses them after one lease period and
another worker takes them over. Failures retry with exponential backoff and jitter, then the
job is parked as dead with its error. On `stop()` the worker claims nothing more, gives running
jobs a grace period, and hands back those that did not finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.logs import Logger, get_logger
from bot.metrics import Metrics
from bot.redaction import Redactor
from bot.store import Job, JobDeferred, Store, StoreUnavailable

RunJob = Callable[[Job], Awaitable[None]]


@dataclass(frozen=True)
class WorkerOptions:
    max_jobs: int = 10
    job_timeout: float = 300
    lease_seconds: float = 30
    poll_interval: float = 1.0
    claim_delay: float = 0.01
    # While deliveries pour in (more than `busy_arrivals` within `busy_window` seconds), claim
    # at most every `busy_claim_delay`: answering webhooks fast comes first, the work can wait.
    busy_arrivals: int = 20
    busy_window: float = 0.1
    busy_claim_delay: float = 0.05
    backoff_base: float = 5
    backoff_max: float = 600
    shutdown_grace: float = 30
    retention_seconds: float = 14 * 86400


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1-based): base·2^(attempt-1), capped, ±50 % jitter."""
    raw = min(cap, base * (2 ** max(attempt - 1, 0)))
    jitter = (rng or random).uniform(0.5, 1.5)
    return float(min(cap, raw * jitter))


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Worker:
    def __init__(
        self,
        store: Store,
        run: RunJob,
        options: WorkerOptions,
        *,
        metrics: Metrics | None = None,
        log: Logger | None = None,
        worker_id: str | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.store = store
        self.run = run
        # A job's error is kept and served: never with a secret in it.
        self.redact = redact or Redactor().scrub
        self.options = options
        self.metrics = metrics
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.log = log or get_logger(worker_id=self.worker_id)
        self._running: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self._arrivals: deque[float] = deque(maxlen=max(options.busy_arrivals, 1))

    # --- Lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._claim_loop(), name="worker-claim")
            self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="worker-heartbeat")
            self.log.info("worker started", max_jobs=self.options.max_jobs)

    def notify(self) -> None:
        """A job was just enqueued in this process: look now instead of at the next poll."""
        self._arrivals.append(time.monotonic())
        self._wake.set()

    def _busy(self) -> bool:
        """Are deliveries arriving faster than `busy_arrivals` per `busy_window`?"""
        if len(self._arrivals) < self.options.busy_arrivals:
            return False
        return time.monotonic() - self._arrivals[0] < self.options.busy_window

    @property
    def active(self) -> int:
        return len(self._running)

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let running jobs finish within `grace`, release the rest."""
        grace = self.options.shutdown_grace if grace is None else grace
        self._stopping.set()
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        pending = list(self._running.values())
        if pending:
            self.log.info("waiting for running jobs", jobs=len(pending), grace_seconds=grace)
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        self.log.info("worker stopped")

    async def run_until_idle(self) -> None:
        """Claim and run until nothing is runnable now (tests; bound it with asyncio.timeout)."""
        while True:
            await self._claim_once()
            if not self._running:
                return
            await asyncio.wait(list(self._running.values()), return_when=asyncio.FIRST_COMPLETED)

    # --- Claiming ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            free = self.options.max_jobs - self.active
            try:
                claimed = await self._claim_once()
            except StoreUnavailable as exc:
                self.log.warning("store unavailable; claiming again shortly", error=str(exc))
                claimed = 0
            except Exception as exc:  # the loop must survive anything a store raises
                self.log.error("claiming failed", error=describe_error(exc), exc_info=exc)
                claimed = 0
            await self._maybe_purge()
            if claimed and claimed == free:
                continue  # a full batch: more may be waiting
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.poll_interval):
                    await self._wake.wait()
            if self._wake.is_set() and not self._stopping.is_set():
                # Woken by an enqueue or a freed slot: let a few more gather, so one claim
                # takes a batch instead of one transaction per job.
                busy = self._busy()
                await asyncio.sleep(
                    self.options.busy_claim_delay if busy else self.options.claim_delay
                )

    async def _claim_once(self) -> int:
        free = self.options.max_jobs - self.active
        if free <= 0 or self._stopping.is_set():
            return 0
        jobs = await self.store.claim(
            self.worker_id, limit=free, lease_seconds=self.options.lease_seconds
        )
        for job in jobs:
            task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
            self._running[job.id] = task
            task.add_done_callback(functools.partial(self._finished, job.id))
        return len(jobs)

    def _finished(self, job_id: int, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        if len(self._running) == self.options.max_jobs - 1:
            self._wake.set()  # a slot opened on a full worker

    async def _heartbeat(self) -> None:
        interval = max(self.options.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            if not self._running:
                continue
            try:
                await self.store.renew_leases(
                    self.worker_id, list(self._running), self.options.lease_seconds
                )
            except Exception as exc:
                self.log.warning("lease renewal failed", error=describe_error(exc))

    async def _maybe_purge(self) -> None:
        now = time.monotonic()
        if self._last_purge and now - self._last_purge < 3600:
            return
        self._last_purge = now
        try:
            removed = await self.store.purge(max_age=self.options.retention_seconds)
        except Exception as exc:
            self.log.warning("purge failed", error=describe_error(exc))
        else:
            if removed:
                self.log.info("purged old deliveries and jobs", removed=removed)

    # --- Running one job ---------------------------------------------------------------------

    async def _execute(self, job: Job) -> None:
        log = self.log.bind(job_id=job.id, kind=job.kind, attempt=job.attempts)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.options.job_timeout):
                await self.run(job)
        except asyncio.CancelledError:
            # Shutdown: hand the job back untried so another worker takes it now.
            released = await _quietly(self.store.release(job.id, self.worker_id), log)
            self._count(job, "released")
            log.warning("job released at shutdown", released=bool(released))
            return
        except TimeoutError:
            await self._failed(job, f"timed out after {self.options.job_timeout:g} s", None, log)
            return
        except JobDeferred as deferred:
            await _quietly(
                self.store.release(
                    job.id, self.worker_id, delay=deferred.delay, note=self.redact(deferred.reason)
                ),
                log,
            )
            self._count(job, "deferred")
            log.info("job deferred", reason=deferred.reason, delay_seconds=round(deferred.delay))
            return
        except Exception as exc:
            progress = getattr(exc, "progress", None)
            await self._failed(job, self.redact(describe_error(exc)), progress, log)
            return
        ok = await _quietly(self.store.complete(job.id, self.worker_id), log)
        self._count(job, "done" if ok else "lost")
        # A finished job is routine (its handlers log what they did); a lost lease is not.
        (log.debug if ok else log.warning)(
            "job done" if ok else "job finished after its lease was taken over",
            seconds=round(time.monotonic() - started, 3),
        )

    async def _failed(
        self, job: Job, error: str, progress: dict[str, Any] | None, log: Logger
    ) -> None:
        if job.attempts < job.max_attempts:
            delay = backoff_delay(job.attempts, self.options.backoff_base, self.options.backoff_max)
            await _quietly(
                self.store.retry_later(
                    job.id,
                    self.worker_id,
                    error=error,
                    delay=delay,
                    progress=progress,
                ),
                log,
            )
            self._count(job, "retry")
            log.warning(
                "job failed; will retry",
                error=error,
                retry_in_seconds=round(delay, 2),
                attempts_left=job.max_attempts - job.attempts,
            )
        else:
            await _quietly(
                self.store.bury(job.id, self.worker_id, error=error, progress=progress), log
            )
            self._count(job, "dead")
            log.error("job dead after its last attempt", error=error, attempts=job.attempts)

    def _count(self, job: Job, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.job_runs.labels(kind=job.kind, outcome=outcome).inc()


async def _quietly(call: Awaitable[bool], log: Logger) -> bool:
    """Record an outcome; if the store is down the lease expires and the job runs again."""
    try:
        return await asyncio.shield(call)
    except Exception as exc:
        log.error("could not record job outcome", error=describe_error(exc))
        return False
