"""The store of a web-only process on SQLite (`arbiter serve --no-workers`).

What such a process does all day is take deliveries, answer `/health/ready` and `/metrics`, and
check the schema once at start. `WebStore` does those on the standard library's sqlite3, on a
connection and thread of its own, with the SQL store's settings, group commit and checkpoints
(`sqlite_plain`, `batching`, `sql_checkpoint`). Everything else a web process may be asked (the
operator API, the dashboard, the set-up page, a schema to migrate) goes to the full `SQLStore`,
opened the first time it is needed and kept. An idle web replica so never imports SQLAlchemy,
about 12 MiB of its resident memory (issue 20); the recovery passes, which use most of the
store, run where the workers run (bot/cli/server.py).

Both connections are the same file's, as two processes' would be: each transaction that writes
takes the write lock first (`BEGIN IMMEDIATE`), and either waits for the other's commit.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot.metrics import PoolUsage
from bot.store.base import (
    JOB_STATES,
    Delivery,
    Enqueued,
    NewJob,
    SchemaStatus,
    Store,
    StoreUnavailable,
)
from bot.store.batching import GroupCommit
from bot.store.revisions import scripted_head
from bot.store.sql_checkpoint import Checkpointer
from bot.store.sqlite_plain import (
    StoreThread,
    accept_many,
    configure,
    current_revision,
    immediate,
    job_counts,
    private_database,
    spent_since,
    store_thread,
)

if TYPE_CHECKING:
    from bot.store.sql import SQLStore

T = TypeVar("T")
PING_SECONDS = 5.0
# The Store's operations that WebStore hands to the full SQLStore: every one it does not do.
_OWN = frozenset(
    {
        "open",
        "close",
        "ping",
        "migrate",
        "schema_status",
        "accept_delivery",
        "job_counts",
        "spent_since",
    }
)
DELEGATED = frozenset(
    name
    for name, member in vars(Store).items()
    if inspect.iscoroutinefunction(member) and name not in _OWN
)


class WebStore:
    backend = "sqlite"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.database = database  # the file, as SQLAlchemy opens it (sqlite_plain.file_database)
        self._pool_size = pool_size
        self._max_overflow = max_overflow
        self._clock = clock
        self._thread: StoreThread | None = None
        self._conn: sqlite3.Connection | None = None  # its thread's only
        self._checkpointer: Checkpointer | None = None
        self._deliveries = GroupCommit(self._accept_batch, in_flight=1)
        self._full: SQLStore | None = None
        self._opening = asyncio.Lock()

    @property
    def full_store_open(self) -> bool:
        """Whether the full SQLStore (and SQLAlchemy) was needed yet."""
        return self._full is not None

    # --- Connection --------------------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._thread = store_thread("arbiter-sqlite", yielding=True)
        await self._call(self._connect)
        self._checkpointer = Checkpointer(self.database)
        self._checkpointer.start()

    def _connect(self) -> None:
        path = Path(self.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        private_database(path)
        conn = sqlite3.connect(self.database)
        configure(conn, memory=False)
        self._conn = conn

    def pool_usage(self) -> PoolUsage | None:
        """None: SQLite has no connection pool to report (as the SQL store says)."""
        return None

    async def close(self) -> None:
        await self._deliveries.drain()
        full, self._full = self._full, None
        if full is not None:
            await full.close()
        if self._checkpointer is not None:
            await self._checkpointer.close()
            self._checkpointer = None
        thread, self._thread = self._thread, None
        if thread is not None:
            await thread.run(self._disconnect)
            thread.shutdown(wait=True)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def _call(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` on the store's thread; the database's failures (locked past the busy
        timeout, disk full, I/O) surface as StoreUnavailable, as the SQL store's do."""
        if self._thread is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        try:
            return await self._thread.run(work, *args)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"sqlite store: {exc}") from exc

    def _plain(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        return self._conn

    def _read(self, query: Callable[..., T], *args: Any) -> T:
        return query(self._plain(), *args)

    def _write(self, work: Callable[..., T], *args: Any) -> T:
        return immediate(self._plain(), work, *args)

    # --- What a web process does itself ------------------------------------------------------

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(PING_SECONDS):
                await self._call(self._read, lambda conn: conn.execute("SELECT 1").fetchone())
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"sqlite store did not answer within {PING_SECONDS:g} s"
            ) from exc

    async def migrate(self) -> list[str]:
        """Nothing to do for a schema at head (one SELECT); anything else is Alembic's, through
        the full store."""
        head = scripted_head()
        if head is not None and await self._call(self._read, current_revision) == head:
            return []
        return await (await self.full()).migrate()

    async def schema_status(self) -> SchemaStatus:
        head = scripted_head()
        if head is None:  # scripts Alembic must read (a merge, a branch)
            return await (await self.full()).schema_status()
        return SchemaStatus(current=await self._call(self._read, current_revision), head=head)

    async def accept_delivery(self, delivery: Delivery, job: NewJob) -> Enqueued:
        if job.key is not None:  # coalescing by key is the SQL store's
            return await (await self.full()).accept_delivery(delivery, job)
        return await self._deliveries.submit((delivery, job))

    async def _accept_batch(self, items: list[tuple[Delivery, NewJob]]) -> list[Enqueued]:
        if self._checkpointer is not None:
            self._checkpointer.written()
        return await self._call(self._write, accept_many, items, self._clock())

    async def job_counts(self) -> dict[str, int]:
        return await self._call(self._read, job_counts, JOB_STATES)

    async def spent_since(self, since: float) -> float:
        return await self._call(self._read, spent_since, since)

    # --- Everything else: the full store -----------------------------------------------------

    async def full(self) -> SQLStore:
        """The full SQLStore on the same database, opened on first use and kept."""
        async with self._opening:
            if self._full is None:
                from bot.store.sql import SQLStore

                store = SQLStore(
                    self.url,
                    pool_size=self._pool_size,
                    max_overflow=self._max_overflow,
                    clock=self._clock,
                )
                await store.open()
                self._full = store
            return self._full

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        if name not in DELEGATED:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

        async def delegated(*args: Any, **kwargs: Any) -> Any:
            store = await self.full()
            return await getattr(store, name)(*args, **kwargs)

        delegated.__name__ = name
        return delegated
