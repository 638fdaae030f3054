"""Group commit: calls that arrive while a write is in flight are written together in the next.

SQLite has one writer, and each transaction costs a hop to the store's SQLite thread and a
commit; under load, writing N deliveries in one transaction costs little more than writing
one. Every caller still gets its own answer only after the transaction that holds its write
has committed.

With `in_flight` above one, that many writes may run at once (PostgreSQL: each on a
connection of its own, the server's own group commit sharing their WAL flushes), so a batch
waiting on a commit's round trip does not hold the next one back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int = 256,
        *,
        in_flight: int = 1,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._in_flight = max(in_flight, 1)
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        # A flusher that has returned counts no more, though its done-callback has yet to run.
        if sum(not flusher.done() for flusher in self._flushers) < self._in_flight:
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return await future

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (or has failed)."""
        while running := [flusher for flusher in self._flushers if not flusher.done()]:
            await asyncio.wait(running)

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._write([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # the caller may have gone (a client disconnected)
                        future.set_result(result)
