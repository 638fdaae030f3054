"""Group commit: calls that arrive while a write is in flight are written together in the next.

SQLite has one writer, and each transaction costs a hop to the store's SQLite thread and a
commit; under load, writing N deliveries in one transaction costs little more than writing
one. Every caller still gets its own answer only after the transaction that holds its write
has committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self, write: Callable[[list[T]], Awaitable[list[R]]], max_batch: int = 256
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (or has failed)."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])

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
