"""PostgreSQL's connection pool: DATABASE_POOL_SIZE connections kept, up to DATABASE_MAX_OVERFLOW
more while the process is busy, and those closed once they have stood idle for a while.

SQLAlchemy's queue pool closes an overflow connection the moment it is returned while the pool
holds its DATABASE_POOL_SIZE idle ones. A worker with ten slots (ARBITER_WORKER_MAX_JOBS' default)
keeps more than five store calls in flight most of the time, so with the defaults (5 + 10) it
opened and closed a connection for most of its calls: 147 server sessions for the worker bench's
100 pull requests, each a backend process the server forks (and, in production, a TLS handshake
and password exchange), a fifth of Arbiter's CPU per review. Here a returned overflow connection
lingers, idle, for LINGER_SECONDS and is handed out again before a new one is opened; the pool's
own connections are still preferred, so lingering ones expire as soon as the load drops. The
limit, DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW connections at once, is unchanged.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

LINGER_SECONDS = 60.0


class LingeringPool(AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool whose overflow connections are closed after LINGER_SECONDS idle
    instead of on their return."""

    def __init__(self, *args: Any, linger: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._linger = LINGER_SECONDS if linger is None else linger
        # Returned overflow connections, the least recently used first, with when they came back.
        self._lingering: collections.deque[tuple[float, ConnectionPoolEntry]] = collections.deque()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self._pool.full():
            self._lingering.append((time.monotonic(), record))
            self._expire()
            return
        super()._do_return_conn(record)

    def _do_get(self) -> ConnectionPoolEntry:
        self._expire()
        if self._lingering and self._pool.empty():
            return self._lingering.pop()[1]  # the one used last: warm, and the others may expire
        return super()._do_get()

    def _expire(self, *, everything: bool = False) -> None:
        """Close the lingering connections idle past the linger (with `everything`, all)."""
        deadline = time.monotonic() - self._linger
        while self._lingering and (everything or self._lingering[0][0] <= deadline):
            _, record = self._lingering.popleft()
            try:
                record.close()
            finally:
                self._dec_overflow()

    def dispose(self) -> None:
        self._expire(everything=True)
        super().dispose()

    def checkedin(self) -> int:
        return super().checkedin() + len(self._lingering)

    def checkedout(self) -> int:
        return super().checkedout() - len(self._lingering)
