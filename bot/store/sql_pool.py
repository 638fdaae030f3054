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

An overflow connection is opened only once a caller has found none idle for GROW_AFTER_SECONDS,
after the pool's owner was asked to give back one it keeps idle (`spare`: the store keeps
connections between its statements), and only one at a time: a caller that finds one being
opened waits for whichever comes first, a returned one or that one's turn to be done. A store
call holds a connection for a round trip or a few, so in a burst one comes back within a few
milliseconds, while a new one costs a backend the server forks, its catalog caches loaded anew
and every statement prepared again (and, in production, a TLS handshake and password exchange).
The worker bench's burst of 100 deliveries opened all ten overflow connections within a tenth
of a second, each taking 10-50 ms on a loaded machine, and delayed the first reviews' model calls
by as much (issue 20). The pool still grows to its limit when its connections stay busy (long
transactions, a slow server), one connection at a time.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import queue as sqla_queue

LINGER_SECONDS = 60.0
GROW_AFTER_SECONDS = 0.01


class LingeringPool(AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool whose overflow connections are closed after LINGER_SECONDS idle
    instead of on their return."""

    def __init__(
        self,
        *args: Any,
        linger: float | None = None,
        grow_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._linger = LINGER_SECONDS if linger is None else linger
        self._grow_after = GROW_AFTER_SECONDS if grow_after is None else grow_after
        # Returned overflow connections, the least recently used first, with when they came back.
        self._lingering: collections.deque[tuple[float, ConnectionPoolEntry]] = collections.deque()
        self._opening = 0  # callers opening an overflow connection now
        # Set by the pool's owner: give back (check in) one connection it holds idle, if any.
        self.spare: Callable[[], object] | None = None

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self._pool.full():
            self._lingering.append((time.monotonic(), record))
            self._expire()
            return
        super()._do_return_conn(record)

    def _do_get(self) -> ConnectionPoolEntry:
        self._expire()
        waited = False
        while self._pool.empty():
            if self._lingering:
                return self._lingering.pop()[1]  # the one used last: warm, the others may expire
            if self.spare is not None:
                self.spare()  # a connection its owner kept idle comes back to the queue
            if not self._pool.empty() or not self._may_grow() or (waited and not self._opening):
                break
            # … or one a caller is about to return, or the one another caller is opening now
            # has been opened (one at a time): cheaper than opening one more at once.
            try:
                return self._pool.get(True, self._grow_after)
            except sqla_queue.Empty:
                waited = True
        opening = self._pool.empty() and self._may_grow()
        self._opening += opening
        try:
            return super()._do_get()
        finally:
            self._opening -= opening

    def _may_grow(self) -> bool:
        """Whether the next connection would be an overflow one, and one may still be opened."""
        if self._grow_after <= 0 or self._overflow < 0:  # the pool's own are opened at once
            return False
        return self._max_overflow < 0 or self._overflow < self._max_overflow

    def _expire(self, *, everything: bool = False) -> None:
        """Close the lingering connections idle past the linger (with `everything`, all)."""
        deadline = time.monotonic() - self._linger
        while self._lingering and (everything or self._lingering[0][0] <= deadline):
            _, record = self._lingering.popleft()
            try:
                record.close()
            finally:
                self._dec_overflow()

    def recreate(self) -> LingeringPool:
        """The same pool anew (`engine.dispose()` makes one): its linger, growth and owner kept."""
        pool = super().recreate()
        assert isinstance(pool, LingeringPool)
        pool._linger, pool._grow_after, pool.spare = self._linger, self._grow_after, self.spare
        return pool

    def dispose(self) -> None:
        self._expire(everything=True)
        super().dispose()

    def checkedin(self) -> int:
        return super().checkedin() + len(self._lingering)

    def checkedout(self) -> int:
        return super().checkedout() - len(self._lingering)
