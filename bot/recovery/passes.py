"""A background pass that one process at a time runs every interval, whichever process it is.

Each process that runs Arbiter runs the loop; the pass itself runs where the store's lease is
taken: `acquire_pass` gives it to one process, and only when the pass last finished (in any
process) at least an interval ago, so a pass is due "on start" only when none ran lately. A
heartbeat renews the lease while the pass runs; a process that dies lets it expire and another
takes over. A store that is down delays the pass, never ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

from bot.logs import Logger, Redactor
from bot.store import Store, StoreUnavailable

LEASE_SECONDS = 120.0
STORE_RETRY_SECONDS = 30.0  # how long to wait after the store failed to answer
MAX_JITTER = 5.0  # processes waking for the same pass wake a little apart


@dataclass
class Tally:
    """What one run of a pass did, counted as it goes (so a failed run still reports)."""

    sources: int = 0  # webhooks or repositories looked at
    listed: int = 0  # deliveries or pull requests read
    due: int = 0  # of them, found missing: failed deliveries, unreviewed heads
    done: int = 0  # redeliveries requested, reviews queued
    already: int = 0  # due, but asked for or queued before
    refused: int = 0  # the platform said no
    errors: int = 0  # sources that could not be read
    stopped: str | None = None  # why the run ended early (a rate limit, the limit per pass)

    def summary(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v not in (None, 0) or k == "done"}


RunPass = Callable[[Tally], Coroutine[Any, Any, None]]


def process_holder() -> str:
    """A name for this process as a lease holder: host, pid, and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PeriodicPass:
    """Run `run` every `interval()` seconds, in one process at a time (the store's lease)."""

    def __init__(
        self,
        name: str,
        run: RunPass,
        *,
        store: Store,
        interval: Callable[[], float],
        log: Logger,
        redactor: Redactor,
        holder: str,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = LEASE_SECONDS,
        on_done: Callable[[str, Tally], None] | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self._store = store
        self._interval = interval
        self._log = log.bind(recovery_pass=name)
        self._redactor = redactor
        self._holder = holder
        self._clock = clock
        self._lease = lease_seconds
        self._on_done = on_done
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"arbiter-{self.name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _loop(self) -> None:
        while True:
            try:
                if await self.run_if_due():
                    continue  # look at once when the next run is due
                wait = await self._until_due()
            except StoreUnavailable as exc:
                self._log.warning("recovery pass waits for the store", error=str(exc))
                wait = STORE_RETRY_SECONDS
            except Exception as exc:  # never let the loop die: the next interval tries again
                self._log.error(
                    "recovery pass could not start",
                    error=self._redactor.scrub(f"{type(exc).__name__}: {exc}")[:500],
                    exc_info=exc,
                )
                wait = STORE_RETRY_SECONDS
            await asyncio.sleep(wait + random.uniform(0, min(MAX_JITTER, wait * 0.1)))  # noqa: S311

    async def run_if_due(self) -> bool:
        """Run the pass here if it is due and no other process runs it; whether it ran."""
        interval = self._interval()
        if interval <= 0:
            return False
        now = self._clock()
        taken = await self._store.acquire_pass(
            self.name, self._holder, lease_seconds=self._lease, last_finished_before=now - interval
        )
        if not taken:
            return False
        tally = Tally()
        started = self._clock()
        error = await self._run_held(tally)
        summary = {**tally.summary(), "seconds": round(self._clock() - started, 3)}
        if error is not None:
            summary["error"] = error
        await self._store.finish_pass(self.name, self._holder, summary=summary, added=tally.done)
        if self._on_done is not None:
            self._on_done(self.name, tally)
        return True

    async def _run_held(self, tally: Tally) -> str | None:
        """Run the pass while a heartbeat keeps its lease; stop it if the lease is lost. The
        error that ended it, if any (secrets masked)."""
        loop = asyncio.get_running_loop()
        work = loop.create_task(self._run(tally))
        heartbeat = loop.create_task(self._heartbeat())
        try:
            await asyncio.wait({work, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the process stops: free the lease for the others
            work.cancel()
            heartbeat.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._store.release_pass(self.name, self._holder))
            raise
        heartbeat.cancel()
        if not work.done():  # another process took the lease over: it runs the pass now
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            return "stopped: another process took the pass over"
        exc = work.exception()
        if exc is None:
            return None
        error = self._redactor.scrub(f"{type(exc).__name__}: {exc}")[:500]
        self._log.error("recovery pass failed", error=error, exc_info=exc)
        return error

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                kept = await self._store.renew_pass(
                    self.name, self._holder, lease_seconds=self._lease
                )
            except StoreUnavailable:
                continue
            if not kept:
                self._log.warning("recovery pass lease taken over by another process")
                return

    async def _until_due(self) -> float:
        """Seconds until the pass is due again, or its holder's lease runs out."""
        interval = self._interval()
        if interval <= 0:
            return 60.0
        now = self._clock()
        run = next((r for r in await self._store.pass_runs() if r.name == self.name), None)
        if run is not None and run.holder is not None and (run.lease_until or 0.0) > now:
            # Running elsewhere: look again in an interval (or when its lease would run out).
            return max(min(interval, (run.lease_until or now) - now), 0.5)
        due = now
        if run is not None and run.finished_at is not None:
            due = run.finished_at + interval
        return max(due - now, 0.5)
