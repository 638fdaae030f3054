"""The worker: claims jobs from the store's queue and runs them, at most `max_jobs` at once
(and, for the kinds given a lane of their own, up to that lane's slots besides).

It knows only the store and the `run(job)` it is handed. A claimed job is leased; a heartbeat
renews the leases of the jobs it holds, so a worker that dies loses them after one lease period
and another worker takes them over. Failures retry with exponential backoff and jitter, then the
job is parked as dead with its error. On `stop()` the worker claims nothing more, gives running
jobs a grace period, and hands back those that did not finish.

A store that goes away for a while strands nothing: claiming backs off and resumes on its own;
the heartbeat keeps trying, and a run goes on while its lease may still be valid (it stops,
recording nothing, once the store says another worker has the job); the outcome of a run that
ended meanwhile is recorded once the store is back, without holding a slot. A job of this
worker's that it no longer holds (a claim whose answer was lost, an outcome it gave up on) is
taken back by its own claims once the lease expires.
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
from contextvars import ContextVar
from dataclasses import dataclass, field
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
    # The burst is over once none has arrived for `busy_quiet` seconds (at the threshold's rate
    # one arrives every 5 ms): the work it queued starts then, not a whole window later.
    busy_quiet: float = 0.02
    # … and take at most `busy_claim_limit` jobs per claim then: a burst of deliveries is answered
    # at the speed of intake alone, and what it queued drains once the burst is over.
    busy_claim_limit: int = 1
    # Job kinds with slots of their own besides `max_jobs` (which they may use too): kind →
    # slots. A delivery's dispatch (a few milliseconds that queue its review) must not wait for
    # a slot behind reviews that each wait a minute for their model.
    lanes: dict[str, int] = field(default_factory=dict)
    # Job kinds that may be claimed ahead while every slot is taken: kind → how many at once.
    # Such a job runs its first steps (a review fetches its pull request and builds its prompt)
    # and waits at `slot_needed()` for a slot before the step the slot is for (the model
    # call): a slot that frees goes to it at once, its first steps done meanwhile, instead of
    # waiting for a claim and those steps. Its time waiting does not count toward its timeout.
    ahead: dict[str, int] = field(default_factory=dict)
    # … only while the queue holds more due jobs than the free slots take and this many more
    # (None: `max_jobs`): the last of a burst are left to workers with a free slot (in other
    # processes) instead of waiting here for one of this worker's (issue 20: a second worker
    # process stood idle while the first held four reviews ahead, one model call longer).
    ahead_leaves: int | None = None
    backoff_base: float = 5
    backoff_max: float = 600
    shutdown_grace: float = 30
    retention_seconds: float = 14 * 86400
    # While the store is unavailable: outcomes are tried again after base·2^n s (jittered),
    # at most `store_backoff_max` apart, as claims are (from `poll_interval`).
    store_backoff_base: float = 0.5
    store_backoff_max: float = 5.0


# A store error other than unavailability (a bug, a refused value) is not worth waiting out:
# the outcome is tried this many times, then left to the lease (taken back when it expires).
OUTCOME_TRIES = 5


# The running job's way to give its slot back before its run ends (set in the job's own task).
_GIVE_BACK: ContextVar[Callable[[], None] | None] = ContextVar("arbiter_give_back", default=None)


# The running job's way to wait for a slot, if it was claimed ahead of one (its task's context).
_TAKE_SLOT: ContextVar[Callable[[], Awaitable[float]] | None] = ContextVar(
    "arbiter_take_slot", default=None
)


async def slot_needed() -> float:
    """Said by a running job before the step its slot is for (a review, before its model
    call): a job claimed ahead of a free slot (`WorkerOptions.ahead`) waits here until one
    frees, a job that holds one goes on at once. The seconds it waited, which the worker adds
    to the job's time (the caller extends its own deadlines by as much). Outside a worker's
    job it does nothing. Raises CancelledError if the worker stops meanwhile: the job is
    handed back untried."""
    take = _TAKE_SLOT.get()
    return 0.0 if take is None else await take()


def slot_no_longer_needed() -> None:
    """Said by a running job whose work that needs a slot is done, with only bookkeeping
    (store writes) left of its run: the worker may start another job in its place now. The
    job is still held (its lease renewed) until its outcome is recorded. Outside a worker's
    job it does nothing."""
    give_back = _GIVE_BACK.get()
    if give_back is not None:
        give_back()


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1-based): base·2^(attempt-1), capped, ±50 % jitter."""
    doublings = min(max(attempt - 1, 0), 64)  # a long outage's thousandth try must not overflow
    raw = min(cap, base * (2**doublings))
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
        # Every job this worker holds (its lease renewed), from its claim until its outcome is
        # recorded; of those, the runs that ended and are being recorded (they hold no slot), and
        # the runs stopped because another worker took the job over.
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # The jobs held in a lane of their own, or claimed ahead and holding no slot yet: kind.
        self._lane: dict[int, str] = {}
        # Jobs claimed ahead that wait for a slot (`slot_needed`), first come first served.
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._timeouts: dict[int, asyncio.Timeout] = {}  # each running job's (`_execute`)
        self._promised = 0  # free slots the claim in flight asked jobs for
        # Claimed while a run of ours still held them: looked at again once that run ends.
        self._reclaimed: dict[int, tuple[Job, str | None]] = {}
        self._resuming: set[asyncio.Task[None]] = set()
        self._recording: set[int] = set()
        self._winding: set[int] = set()  # runs left with bookkeeping only: they hold no slot
        self._lost: set[int] = set()
        self._wake = asyncio.Event()  # look for work now: a job was enqueued or a slot freed
        self._enqueued = False  # the wake came from an enqueue (notify), not only a freed slot
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self._arrivals: deque[float] = deque(maxlen=max(options.busy_arrivals, 1))
        self._busy_claimed_at = 0.0
        self._full = False  # the last claim took all it could: more may be waiting

    # --- Lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._claim_loop(), name="worker-claim")
            self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="worker-heartbeat")
            self._watch_task = asyncio.create_task(self._watch(), name="worker-watch")
            self.log.info("worker started", max_jobs=self.options.max_jobs)

    def notify(self, *, delivery: bool = False) -> None:
        """A job was just enqueued in this process: look now instead of at the next poll.
        `delivery`: a webhook's (counted to tell a burst of deliveries), not a job's own."""
        if delivery:
            self._arrivals.append(time.monotonic())
        self._enqueued = True
        self._wake.set()

    async def _watch(self) -> None:
        """Jobs queued by other processes wake the worker where the store can tell
        (`Store.watch_jobs`); a failure there leaves the poll, and is logged."""
        try:
            await self.store.watch_jobs(self.notify)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.error("watching for jobs failed; polling", error=describe_error(exc))

    def _busy(self) -> bool:
        """Are deliveries arriving faster than `busy_arrivals` per `busy_window`, and still?"""
        return self._burst_ends() > time.monotonic()

    def _burst_ends(self) -> float:
        """When the burst is over if no other delivery arrives (0: there is none)."""
        if len(self._arrivals) < self.options.busy_arrivals:
            return 0.0
        return min(
            self._arrivals[0] + self.options.busy_window,
            self._arrivals[-1] + self.options.busy_quiet,
        )

    async def _wait_out_burst(self, until: float) -> None:
        """Sleep until `until` (time.monotonic), or less if the burst ends before."""
        while True:
            now = time.monotonic()
            if now >= until or not self._busy():  # a delivery arriving meanwhile extends it
                return
            await asyncio.sleep(min(until, self._burst_ends()) - now)

    @property
    def active(self) -> int:
        """Slots in use: jobs running (one whose outcome is being recorded, or whose run said
        it needs its slot no longer, holds none)."""
        return len(self._running())

    def _running(self) -> list[int]:
        """The jobs that hold a slot."""
        idle = self._recording | self._winding
        return [job_id for job_id in self._tasks if job_id not in idle]

    def _give_back(self, job_id: int) -> None:
        """A running job needs its slot no longer (`slot_no_longer_needed`): claim for it."""
        if job_id in self._tasks and job_id not in self._recording | self._winding:
            self._winding.add(job_id)
            self._slot_freed()

    def _room(self) -> tuple[int, dict[str, int]]:
        """Free slots: of `max_jobs` (any kind), and of each lane (its kind only; a kind that
        may be claimed ahead counts its jobs that hold no slot yet)."""
        running = self._running()
        in_lane = [self._lane[job_id] for job_id in running if job_id in self._lane]
        lanes = {
            kind: slots - in_lane.count(kind)
            for kind, slots in (self.options.lanes | self.options.ahead).items()
        }
        return self.options.max_jobs - (len(running) - len(in_lane)), lanes

    async def _take_slot(self, job_id: int) -> float:
        """`slot_needed` for job `job_id`: if it was claimed ahead, a slot for it (at once if
        one is free, else the first to free after those asked for before). Seconds waited."""
        kind = self._lane.get(job_id)
        if kind is None or kind not in self.options.ahead:
            return 0.0  # it holds a slot (or a lane's own) already
        if self._stopping.is_set():
            raise asyncio.CancelledError  # handed back untried (`_execute`)
        # The job's timeout stands still while it waits, and goes on from where it was.
        timeout = self._timeouts.get(job_id)
        if timeout is not None and timeout.expired():
            raise asyncio.CancelledError  # it went off: the job is being stopped
        started = time.monotonic()
        waiter = self._waiting[job_id] = asyncio.get_running_loop().create_future()
        when = timeout.when() if timeout is not None else None
        if timeout is not None:
            timeout.reschedule(None)
        self._hand_over()  # at once if a slot is free and no job asked before
        try:
            await waiter
        finally:
            self._waiting.pop(job_id, None)
        waited = time.monotonic() - started
        if timeout is not None and when is not None:
            timeout.reschedule(when + waited)
        return waited

    def _hand_over(self) -> None:
        """Free slots go to the jobs claimed ahead that wait for one, in order."""
        if self._stopping.is_set():
            return
        free = self._room()[0] - self._promised
        for job_id, waiter in list(self._waiting.items()):
            if free <= 0:
                return
            if waiter.done():  # cancelled: its task is ending
                continue
            del self._waiting[job_id]
            self._lane.pop(job_id, None)
            waiter.set_result(None)
            free -= 1

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let running jobs finish within `grace`, release the rest."""
        grace = self.options.shutdown_grace if grace is None else grace
        self._stopping.set()
        self._wake.set()
        for job_id, waiter in list(self._waiting.items()):  # no slot for them now: handed back
            if (task := self._tasks.get(job_id)) is not None and not waiter.done():
                task.cancel()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        if self._loop_task is not None:
            await self._loop_task
        if self._resuming:  # claims looked at again: each starts its run or gives it up
            await asyncio.wait(list(self._resuming), timeout=grace)
        pending = list(self._tasks.values())
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
            if not self._tasks:
                return
            await asyncio.wait(list(self._tasks.values()), return_when=asyncio.FIRST_COMPLETED)

    # --- Claiming ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        failures = 0  # claims failed in a row: the wait between them grows
        down_since = 0.0
        while not self._stopping.is_set():
            # From here on, an enqueue in this process or a freed slot means: look again. Set
            # while the claim is in flight, it is kept, so no wake between two looks is lost.
            self._wake.clear()
            self._enqueued = False
            try:
                claimed = await self._claim_once()
            except StoreUnavailable as exc:
                failures += 1
                if failures == 1:
                    down_since = time.monotonic()
                # Once is news; every poll of a long outage is noise.
                (self.log.warning if failures == 1 else self.log.debug)(
                    "store unavailable; claiming again with backoff", error=str(exc)
                )
                claimed = 0
            except Exception as exc:  # the loop must survive anything a store raises
                failures += 1
                self.log.error("claiming failed", error=describe_error(exc), exc_info=exc)
                claimed = 0
            else:
                if failures:
                    self.log.info(
                        "claiming again",
                        failed_claims=failures,
                        seconds=round(time.monotonic() - down_since, 1),
                    )
                failures = 0
            await self._maybe_purge()
            if claimed and self._full:
                continue  # a full batch (or all a burst allows): more may be waiting
            if not self._wake.is_set():
                wait = self.options.poll_interval
                if failures:  # an enqueue in this process (notify) still wakes it at once
                    cap = max(self.options.store_backoff_max, wait)
                    wait = backoff_delay(failures, wait, cap)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            if self._enqueued and not self._stopping.is_set():
                # Woken by an enqueue: let a few more gather, so one claim takes a batch
                # instead of one transaction per job. A freed slot claims at once: claims
                # made while one is in flight gather by themselves.
                if self._busy():  # … or until the burst is over, if that is sooner
                    await self._wait_out_burst(time.monotonic() + self.options.busy_claim_delay)
                else:
                    await asyncio.sleep(self.options.claim_delay)

    async def _claim_once(self) -> int:
        self._full = False
        free, lanes = self._room()
        if (free <= 0 and max(lanes.values(), default=0) <= 0) or self._stopping.is_set():
            return 0
        if self._busy():
            # Deliveries pour in: answering them comes first. Jobs go on, a few at a time, at
            # most every busy_claim_delay, whatever wakes the worker (a freed slot included).
            # If the burst ends meanwhile, every free slot claims at once.
            until = self._busy_claimed_at + self.options.busy_claim_delay
            if until > time.monotonic():
                await self._wait_out_burst(until)
                free, lanes = self._room()
                if (free <= 0 and max(lanes.values(), default=0) <= 0) or self._stopping.is_set():
                    return 0
            if self._busy():
                few = max(self.options.busy_claim_limit, 1)
                free, lanes = min(free, few), {kind: min(n, few) for kind, n in lanes.items()}
                self._busy_claimed_at = time.monotonic()
        free, lanes = max(free, 0), {kind: max(n, 0) for kind, n in lanes.items()}
        # The free slots this claim asks for are its jobs': a job claimed ahead that asks for a
        # slot meanwhile waits for the next (`_hand_over`), or both would run in one slot.
        self._promised = free
        leaves = self.options.ahead_leaves
        leaves = self.options.max_jobs if leaves is None else leaves
        try:
            jobs = await self.store.claim(
                self.worker_id,
                limit=free,
                lease_seconds=self.options.lease_seconds,
                holding=list(self._tasks),
                lanes=lanes,
                deep={kind: free + leaves + 1 for kind in self.options.ahead},
            )
        except BaseException:
            self._promised = 0
            self._hand_over()  # the slots it asked for, to the jobs that waited for them
            raise
        self._promised = 0
        lane_of = self._lanes_of(jobs, free, lanes)
        # Jobs claimed ahead that asked for a slot during the claim waited for the slots it asked
        # for: they take those slots (`_hand_over`, below), and as many of the jobs just claimed
        # of their kind take their places ahead, which are free once they have left.
        waiting = [self._lane.get(job_id) for job_id, w in self._waiting.items() if not w.done()]
        for job in jobs:
            if lane_of[job.id] is None and job.kind in waiting and job.id not in self._tasks:
                waiting.remove(job.kind)
                lane_of[job.id] = job.kind
        for job in jobs:
            lane = lane_of[job.id]
            if job.id in self._tasks:
                # Still held by a run of ours: one run of a job per worker at a time. Either
                # another worker's sweep took it and it came back to us (the run goes on under
                # the new lease, and its outcome settles the job), or the run just recorded
                # its outcome (a retry, due now) and is ending: once it has, the store says
                # which, and in the second case this claim runs (`_resume`).
                self.log.info("claimed a job this worker still holds", job_id=job.id)
                self._reclaimed[job.id] = (job, lane)
                continue
            self._start(job, lane)
        # Some part took all it asked for: more of its jobs may be waiting. Claim again at once
        # only if they would find room now (the claim asked for less than the room, in a burst,
        # or a slot freed meanwhile): a part that asked for its whole room and got it has none
        # left, and one that got less than it asked for has nothing waiting. A claim for room
        # nothing waits for is a store round trip the next freed slot would wait behind.
        # A kind claimed ahead is asked for by the shared part and its own, which pick the same
        # jobs first: the shared part full, its own may have more waiting.
        taken = [lane_of[job.id] for job in jobs]
        shared = taken.count(None)
        now_free, now_lanes = self._room()
        filled = [k for k, n in lanes.items() if n > 0 and taken.count(k) == n]
        filled += [k for k in self.options.ahead if 0 < free <= shared and k not in filled]
        self._full = (0 < free <= shared and now_free > 0) or any(
            now_lanes.get(k, 0) > 0 or now_free > 0 for k in filled
        )
        self._hand_over()  # slots the claim asked for and found no job for
        return len(jobs)

    def _lanes_of(self, jobs: list[Job], free: int, lanes: dict[str, int]) -> dict[int, str | None]:
        """Where each claimed job runs: its lane's kind, or None for the shared slots.

        A job of a lane's kind goes to its lane while that has room, else to the shared slots;
        a job of a kind claimed ahead goes to the shared slots the other jobs leave, else it is
        held ahead of a slot (`slot_needed`). That fits: each part of the claim picked no more
        than its room."""
        room = dict(lanes)
        lane_of: dict[int, str | None] = {}
        ahead = [job for job in jobs if job.kind in self.options.ahead]
        for job in jobs:
            if job.kind in self.options.ahead:
                continue
            lane_of[job.id] = None
            if room.get(job.kind, 0) > 0:
                room[job.kind] -= 1
                lane_of[job.id] = job.kind
        left = free - list(lane_of.values()).count(None)
        for job in ahead:
            lane_of[job.id] = None
            if left > 0:
                left -= 1
            elif room.get(job.kind, 0) > 0:
                room[job.kind] -= 1
                lane_of[job.id] = job.kind
        return lane_of

    def _start(self, job: Job, lane: str | None) -> None:
        task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        self._tasks[job.id] = task
        if lane is not None:
            self._lane[job.id] = lane
        task.add_done_callback(functools.partial(self._finished, job.id))

    def _finished(self, job_id: int, task: asyncio.Task[None]) -> None:
        if self._tasks.get(job_id) is task:
            del self._tasks[job_id]
            self._lane.pop(job_id, None)
            self._timeouts.pop(job_id, None)
        was_recording = job_id in self._recording or job_id in self._winding
        self._recording.discard(job_id)
        self._winding.discard(job_id)
        self._lost.discard(job_id)
        if (claimed := self._reclaimed.pop(job_id, None)) is not None:
            resume = asyncio.create_task(self._resume(*claimed), name=f"resume-{job_id}")
            self._resuming.add(resume)
            resume.add_done_callback(self._resuming.discard)
        if not was_recording:
            self._slot_freed()

    async def _resume(self, job: Job, lane: str | None) -> None:
        """A claim of a job whose earlier run was still ending: run it if the claim still
        stands (the run's outcome came first, so this is the next attempt); if the outcome
        came after the claim, it settled the job and there is nothing to run."""
        try:
            current = await self.store.get_job(job.id)
        except Exception as exc:  # its lease expires, and it is taken back then
            self.log.warning("could not look at a reclaimed job", job_id=job.id, error=str(exc))
            return
        stands = (
            current is not None
            and current.state == "running"
            and current.worker_id == self.worker_id
            and current.attempts == job.attempts
        )
        if not stands or job.id in self._tasks:
            return
        if self._stopping.is_set():
            await _quietly(self.store.release(job.id, self.worker_id), self.log)
            return
        self._start(job, lane)

    def _slot_freed(self) -> None:
        """A slot opened: a job claimed ahead takes it, or claim for it now rather than at the
        next poll. Jobs may be waiting whoever enqueued them (another process does not notify
        this one); if none are, this costs one claim per job run."""
        self._hand_over()
        self._wake.set()

    async def _heartbeat(self) -> None:
        """Renew the leases of every job held, for as long as the worker runs: a store error
        is retried sooner (the lease may be running out), never the end of the heartbeat."""
        interval = max(self.options.lease_seconds / 3, 0.05)
        failures = 0
        while True:
            delay = interval
            if failures:
                delay = backoff_delay(failures, self.options.store_backoff_base, interval)
            await asyncio.sleep(delay)
            held = dict(self._tasks)
            if not held:
                continue
            try:
                kept = await self.store.renew_leases(
                    self.worker_id, list(held), self.options.lease_seconds
                )
            except Exception as exc:
                failures += 1
                (self.log.warning if failures == 1 else self.log.debug)(
                    "lease renewal failed; trying again", error=describe_error(exc), jobs=len(held)
                )
                continue
            if failures:
                self.log.info("leases renewed again", failed_renewals=failures, jobs=len(kept))
            failures = 0
            self._stop_lost({job_id: held[job_id] for job_id in held.keys() - set(kept)})

    def _stop_lost(self, lost: dict[int, asyncio.Task[None]]) -> None:
        """Stop the runs whose job the store no longer gives this worker: another worker took
        it over after the lease ran out. A run that already ended is left to its outcome
        write, which the store refuses if the job is no longer this worker's."""
        for job_id, task in lost.items():
            if self._tasks.get(job_id) is not task or job_id in self._recording:
                continue
            self._lost.add(job_id)
            task.cancel()
            self.log.warning("lease lost to another worker; stopping the run", job_id=job_id)

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
        _GIVE_BACK.set(functools.partial(self._give_back, job.id))  # this task's context only
        _TAKE_SLOT.set(functools.partial(self._take_slot, job.id))
        try:
            async with asyncio.timeout(self.options.job_timeout) as timeout:
                self._timeouts[job.id] = timeout
                await self.run(job)
        except asyncio.CancelledError:
            if job.id in self._lost:  # another worker has the job: record nothing over its run
                self._count(job, "lost")
                log.warning("job stopped: its lease was taken over")
                return
            # Shutdown: hand the job back untried so another worker takes it now.
            released = await _quietly(self.store.release(job.id, self.worker_id), log)
            self._count(job, "released")
            log.warning("job released at shutdown", released=bool(released))
            return
        except TimeoutError:
            await self._failed(job, f"timed out after {self.options.job_timeout:g} s", None, log)
            return
        except JobDeferred as deferred:
            log.info("job deferred", reason=deferred.reason, delay_seconds=round(deferred.delay))
            release = functools.partial(
                self.store.release,
                job.id,
                self.worker_id,
                delay=deferred.delay,
                note=self.redact(deferred.reason),
            )
            await self._record(job, "deferred", release, log)
            return
        except Exception as exc:
            progress = getattr(exc, "progress", None)
            await self._failed(job, self.redact(describe_error(exc)), progress, log)
            return
        complete = functools.partial(self.store.complete, job.id, self.worker_id)
        if await self._record(job, "done", complete, log):
            # Routine: its handlers log what they did.
            log.debug("job done", seconds=round(time.monotonic() - started, 3))

    async def _failed(
        self, job: Job, error: str, progress: dict[str, Any] | None, log: Logger
    ) -> None:
        if job.attempts < job.max_attempts:
            delay = backoff_delay(job.attempts, self.options.backoff_base, self.options.backoff_max)
            log.warning(
                "job failed; will retry",
                error=error,
                retry_in_seconds=round(delay, 2),
                attempts_left=job.max_attempts - job.attempts,
            )
            retry = functools.partial(
                self.store.retry_later,
                job.id,
                self.worker_id,
                error=error,
                delay=delay,
                progress=progress,
            )
            await self._record(job, "retry", retry, log)
        else:
            log.error("job dead after its last attempt", error=error, attempts=job.attempts)
            bury = functools.partial(
                self.store.bury, job.id, self.worker_id, error=error, progress=progress
            )
            await self._record(job, "dead", bury, log)

    async def _record(
        self, job: Job, outcome: str, write: Callable[[], Awaitable[bool]], log: Logger
    ) -> bool:
        """Record how a run ended; `write` is the store call, made again on each try.

        The run's slot is free from here on. While the store is unavailable the write is tried
        again, with capped backoff, for as long as the worker runs: the heartbeat keeps the
        lease meanwhile, so no other worker runs the job again. Another error is tried
        OUTCOME_TRIES times, then the job is left to its lease. True once recorded; False if
        the store refused it (the job is another worker's now) or it could not be written.
        """
        freed = job.id not in self._winding  # else its slot was given back already
        self._recording.add(job.id)
        if freed:
            self._slot_freed()
        unavailable = errors = 0
        try:
            while True:
                try:
                    recorded = await asyncio.shield(write())
                except StoreUnavailable as exc:
                    unavailable += 1
                    error = describe_error(exc)
                except Exception as exc:
                    errors += 1
                    error = describe_error(exc)
                    if errors >= OUTCOME_TRIES:
                        log.error(
                            "could not record job outcome; left to its lease",
                            outcome=outcome,
                            error=error,
                            tries=unavailable + errors,
                        )
                        return False
                else:
                    break
                tries = unavailable + errors
                delay = backoff_delay(
                    tries, self.options.store_backoff_base, self.options.store_backoff_max
                )
                (log.warning if tries == 1 else log.debug)(
                    "could not record job outcome; trying again",
                    outcome=outcome,
                    error=error,
                    retry_in_seconds=round(delay, 2),
                )
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            log.warning(
                "job outcome not recorded at shutdown; its lease will expire", outcome=outcome
            )
            raise
        if unavailable or errors:
            log.info("job outcome recorded", outcome=outcome, tries=unavailable + errors + 1)
        self._count(job, outcome if recorded else "lost")
        if not recorded:
            log.warning("job finished after its lease was taken over", outcome=outcome)
        return recorded

    def _count(self, job: Job, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.job_runs.labels(kind=job.kind, outcome=outcome).inc()


async def _quietly(call: Awaitable[bool], log: Logger) -> bool:
    """One try at handing a job back at shutdown; if the store is down the lease expires and
    the job is taken back then."""
    try:
        return await asyncio.shield(call)
    except Exception as exc:
        log.error("could not record job outcome", error=describe_error(exc))
        return False
