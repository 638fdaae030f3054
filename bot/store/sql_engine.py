"""Where the SQL store's transactions run: `SQLDatabase.run(operation)` runs a plain function
over a SQLAlchemy `Connection` as one transaction, and database failures surface as
StoreUnavailable.

- PostgreSQL: on the async engine (asyncpg), through `AsyncConnection.run_sync`.
- SQLite: on one connection owned by one thread, one hop per transaction. (Through aiosqlite,
  every statement was a hop through the event loop, and under load that cost more than the
  SQL.) WAL mode, and every transaction `BEGIN IMMEDIATE`, so one writer at a time across
  processes too. Operations that arrive while a commit is in flight share the next
  transaction (`batching.GroupCommit`; should one fail, the others are run again, each in a
  savepoint of its own, so it fails alone). Reads that need no write lock (`SQLDatabase.read`,
  one statement each) run on a second connection and thread of their own, without BEGIN and
  COMMIT, so a review's lookups never queue behind other jobs' commits (WAL lets a reader go
  on beside the writer, seeing what was committed when its statement began).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, CursorResult, Engine, Result
from sqlalchemy.sql.expression import Executable

from bot.logs import get_logger
from bot.metrics import PoolUsage
from bot.store.base import StoreUnavailable
from bot.store.batching import GroupCommit
from bot.store.sql_checkpoint import Checkpointer
from bot.store.sqlite_plain import (
    StoreThread,
    configure,
    immediate,
    private_database,
    store_thread,
)

if TYPE_CHECKING:  # PostgreSQL's async engine (and the ORM it imports) only where it runs
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")
# `plain_transaction`'s way to run one statement in its transaction: its rows.
PlainRun = Callable[[Executable, dict[str, Any]], Awaitable[list[Any]]]
# … and `sqlite_plain`'s, in the store's thread.
SQLiteRun = Callable[[Executable, dict[str, Any]], list[Mapping[str, Any]]]
DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, OSError, TimeoutError)
# SQLSTATEs of a server that is unreachable, going away or starting, or out of room: the
# connection exceptions (08), insufficient resources (53), and admin shutdown, crash shutdown,
# cannot connect now (57P01-3). asyncpg's errors reach SQLAlchemy as plain DBAPIErrors.
UNAVAILABLE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03")
# A kept connection's statement that takes longer is given up (and the connection with it).
KEPT_TIMEOUT = 8.0
# A listening connection (`listen`) is asked whether it still lives this often, and one lost is
# replaced after LISTEN_RETRY_SECONDS, doubling while it keeps failing (at most a minute).
LISTEN_CHECK_SECONDS = 30.0
LISTEN_RETRY_SECONDS = 0.5
# Queued jobs are announced (`announce`) at most once per this many seconds.
ANNOUNCE_INTERVAL = 0.02
# PostgreSQL: batches of deliveries written at once, each on an intake connection of its own.
INTAKE_CONNECTIONS = 3
# PostgreSQL: statements `SQLDatabase.rows` keeps compiled (the store's hot ones, built once, are
# a few dozen; more means a caller builds them per call, and the cache starts over).
PLAIN_STATEMENTS = 256
# PostgreSQL: a pooled connection idle longer than this is pinged before it is used (one round
# trip), and replaced if the server or a proxy ended it meanwhile. One used more recently goes
# straight to work: a ping on every checkout was ~30 % of a store operation's CPU (270 of
# ~890 µs), and the idle timeouts that end connections (servers, PgBouncer, load balancers)
# are minutes long.
# A server that restarts within the window fails one operation, as StoreUnavailable (every
# caller waits that out), and that invalidates the pool's older connections.
PING_IDLE_SECONDS = 2.0
# PostgreSQL: connections of the pool `rows` keeps checked out between its statements, each
# used again only within PING_IDLE_SECONDS (else back to the pool, which pings it): a checkout
# and return through the pool (a greenlet each way, the pool's events, the reset) cost the
# event loop about as much as asyncpg's own work for a statement (issue 20). It keeps up to the
# pool's size (DATABASE_POOL_SIZE, the connections the pool would keep anyway: with two, ten
# reviews at once still went through the pool for five statements each), and never the last
# connection the pool could give: a transaction, which takes its own from the pool, must find one.
IDLE_SINCE = "arbiter_idle_since"  # a kept connection's last use, told to the pool on return
# … and each goes back to the pool at least this often, busy or not, so that the pool's own
# checks on checkout (its recycling of connections older than pool_recycle) still apply.
PLAIN_HELD_SECONDS = 60.0
TAKEN_AT = "arbiter_taken_at"  # when `rows` last took the connection out of the pool


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot serve now (so waiting may help), as opposed to
    refusing this statement."""
    if isinstance(exc, DB_ERRORS):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return exc.connection_invalidated or (
        isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES)
    )


class SQLDatabase:
    """The engine of one SQL database (SQLite or PostgreSQL, from the URL), and its
    transactions."""

    def __init__(self, url: str, *, pool_size: int = 5, max_overflow: int = 10) -> None:
        self.url = url
        self.backend = "sqlite" if url.startswith("sqlite") else "postgresql"
        self._pool_size = pool_size
        self._max_overflow = max_overflow
        self._async_engine: AsyncEngine | None = None
        # PostgreSQL's reads and one-statement writes: the same pool, in autocommit.
        self._autocommit_engine: AsyncEngine | None = None
        self._sqlite_engine: Engine | None = None
        self._sqlite_thread: StoreThread | None = None
        self._writer: _Kept | None = None  # the SQLite thread's connection for SQLAlchemy
        self._checkpointer: Checkpointer | None = None
        # PostgreSQL: intake's own connections (the idle ones), at most INTAKE_CONNECTIONS.
        self._kept: list[AsyncConnection] = []
        self._kept_slots = asyncio.Semaphore(INTAKE_CONNECTIONS)
        self._intake: AsyncEngine | None = None
        self._announcing: asyncio.Task[None] | None = None  # `announce`'s NOTIFY in flight
        self._announce_again = False  # … and another was asked for meanwhile
        self._kept_sqlite: Any = None  # SQLite: intake's own DBAPI connection (its thread's)
        # SQLite (a file): reads on a connection and thread of their own, made on first use.
        self._reader: _Kept | None = None
        self._reader_thread: StoreThread | None = None
        self._operations = GroupCommit(self._run_together)
        # PostgreSQL: statements `rows` sends to asyncpg as they are, compiled (None: not plain).
        self._plain: dict[Executable, PlainSQL | None] = {}
        # … and the pool's connections it keeps between them: when each was last
        # used, and the connection, the most recently used last.
        self._held: list[tuple[float, Any]] = []
        self._closing = False

    async def open(self) -> None:
        if self._async_engine is not None or self._sqlite_engine is not None:
            return
        self._closing = False
        if self.backend == "sqlite":
            self._sqlite_engine = _sqlite_engine(self.url)
            self._writer = _Kept(self._sqlite_engine)
            self._sqlite_thread = store_thread("arbiter-sqlite")
            database = self._sqlite_engine.url.database
            if database not in (None, "", ":memory:"):
                uri = bool(self._sqlite_engine.url.query.get("uri"))
                self._checkpointer = Checkpointer(database, uri=uri)
                self._checkpointer.start()
        else:
            from sqlalchemy.ext.asyncio import create_async_engine

            from bot.store.sql_pool import LingeringPool

            self._async_engine = create_async_engine(
                self.url,
                # Overflow connections linger, idle, before they are closed (sql_pool).
                poolclass=LingeringPool,
                pool_size=self._pool_size,
                max_overflow=self._max_overflow,
                pool_recycle=1800,
                # The connection used last goes out first: the busy ones stay warm (no ping),
                # the spare ones sit until they are pinged, recycled or ended by the server.
                pool_use_lifo=True,
            )
            pool = self._async_engine.pool
            if isinstance(pool, LingeringPool):  # before it opens an overflow connection
                pool.spare = self._spare_held
            ping_when_idle(self._async_engine.sync_engine, PING_IDLE_SECONDS)

    def pool_usage(self) -> PoolUsage | None:
        """The PostgreSQL connection pool now, for /metrics (None on SQLite: one thread)."""
        pool = self._async_engine.pool if self._async_engine is not None else None
        if not isinstance(pool, sa.pool.QueuePool):
            return None
        held = len(self._held)  # checked out, idle between two of `rows`' statements
        return PoolUsage(
            in_use=pool.checkedout() - held,
            idle=pool.checkedin() + held,
            limit=pool.size() + self._max_overflow,
        )

    async def close(self) -> None:
        await self._operations.drain()
        await self._close_kept()
        self._closing = True  # a statement that ends from here on keeps no connection
        await self._return_held(everything=True)
        if self._async_engine is not None:
            await self._async_engine.dispose()
            self._async_engine = self._autocommit_engine = None
        if self._sqlite_engine is not None and self._sqlite_thread is not None:
            engine, thread = self._sqlite_engine, self._sqlite_thread
            await thread.run(self._release_sqlite)
            await thread.run(engine.dispose)
            thread.shutdown(wait=True)
            if self._reader is not None and self._reader_thread is not None:
                reader, reading = self._reader, self._reader_thread
                await reading.run(reader.close)
                await reading.run(reader.engine.dispose)
                reading.shutdown(wait=True)
                self._reader, self._reader_thread = None, None
            if self._checkpointer is not None:
                await self._checkpointer.close()
                self._checkpointer = None
            self._sqlite_engine, self._sqlite_thread, self._writer = None, None, None

    async def run(self, operation: Callable[[Connection], T], *, alone: bool = False) -> T:
        """Run `operation` in a transaction; database failures surface as StoreUnavailable.

        On SQLite, operations that arrive while a commit is in flight share the next
        transaction (one that fails fails alone: see `_in_one_transaction`); `alone`
        runs it in a transaction of its own (migrations, and work that is already a batch).
        """
        with self._failures_as_unavailable():
            if self._writer is not None and self._sqlite_thread is not None:
                if self._checkpointer is not None:
                    self._checkpointer.written()
                if not alone:
                    outcome: _Outcome[T] = await self._operations.submit(operation)
                    return outcome.unwrap()
                return await self._sqlite_thread.run(_in_transaction, self._writer, operation)
            if self._async_engine is None:
                raise RuntimeError("the store is not open: call `await store.open()` first")
            async with self._async_engine.begin() as conn:
                return await conn.run_sync(operation)

    async def read(self, operation: Callable[[Connection], T]) -> T:
        """`operation` that only reads, with one statement: on SQLite (a file) on the reading
        connection, beside the writer, and on PostgreSQL, without BEGIN and COMMIT around it
        (autocommit: the statement is a transaction by itself and sees every commit made
        before it began; on PostgreSQL two round trips fewer); elsewhere as `run`. An operation
        on the driver's connection alone (`_Raw`) gets no SQLAlchemy transaction around it
        either (on the reading connection it emits nothing, but costs the thread as much as a
        small read). Failures surface as `run`'s do."""
        if self._async_engine is not None:
            return await self._autocommit(self._async_engine, operation)
        if self._sqlite_engine is None or self._sqlite_thread is None:
            return await self.run(operation)
        database = self._sqlite_engine.url.database
        if not database or ":memory:" in database or "mode=memory" in database:
            return await self.run(operation)  # another connection: another (or a locked) one
        if self._reader is None or self._reader_thread is None:
            self._reader = _Kept(_sqlite_engine(self.url, begin=None))
            self._reader_thread = store_thread("arbiter-sqlite-read")
        alone = _by_itself if isinstance(operation, _Raw) else _in_transaction
        with self._failures_as_unavailable():
            return await self._reader_thread.run(alone, self._reader, operation)

    @overload
    async def write_one(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> None: ...

    @overload
    async def write_one(
        self,
        statement: Executable,
        parameters: dict[str, Any] | None,
        shape: Callable[[Result[Any]], T],
        *,
        alone: bool = False,
    ) -> T: ...

    async def write_one(
        self,
        statement: Executable,
        parameters: dict[str, Any] | None = None,
        shape: Callable[[Result[Any]], T] | None = None,
        *,
        alone: bool = False,
    ) -> T | None:
        """One statement that writes (atomic by itself), and `shape` of its result: on
        PostgreSQL in autocommit, without the two round trips of BEGIN and COMMIT; on SQLite as
        `run` (sharing a transaction with the writes beside it unless `alone`). Failures
        surface as `run`'s do."""

        def operation(conn: Connection) -> T | None:
            result = conn.execute(statement, parameters)
            return shape(result) if shape is not None else None

        if self._async_engine is not None:
            return await self._autocommit(self._async_engine, operation)
        return await self.run(operation, alone=alone)

    async def run_each(self, operation: Callable[[Connection], T]) -> T:
        """`operation` whose statements are each atomic by itself and need no transaction
        around them: on PostgreSQL in autocommit (no BEGIN and COMMIT round trips), elsewhere as
        `run`. Failures surface as `run`'s do."""
        if self._async_engine is not None:
            return await self._autocommit(self._async_engine, operation)
        return await self.run(operation)

    async def rows(
        self, statement: Executable, parameters: dict[str, Any], *, write: bool = False
    ) -> Sequence[Mapping[str, Any]]:
        """The rows, as mappings, of one statement built once (`sql_records._once`) and run with
        `parameters`: as `write_one` runs it if it `write`s, else as `read`.

        On PostgreSQL, a statement whose parameters and columns are all plain values (text,
        numbers, booleans: nothing SQLAlchemy converts) goes straight to asyncpg, compiled once,
        on a connection of the same pool, in autocommit as `read` and `write_one` run it there:
        SQLAlchemy's connection, execution context and result around one statement cost the
        event loop 250-400 µs, several times asyncpg's own work (`python -m bench.store_ops`,
        issue 20). On SQLite, such a statement goes to the sqlite3 connection of the thread that
        runs it as it is, compiled once, in the same transactions as through SQLAlchemy (a
        write's shares the group commit's): SQLAlchemy's execution around one statement cost
        that thread, and with it the GIL the event loop waits for, several times SQLite's own
        work (issue 20). Failures surface as `run`'s do."""
        plain = self._plain_sql(statement)
        if plain is not None and plain.takes(parameters):
            if self._async_engine is not None:
                return await self._plain_rows(self._async_engine, plain, parameters)
            on_driver = _Raw(functools.partial(plain.on_sqlite, plain.arguments(parameters)))
            if write:
                return await self.run(on_driver)
            return await self.read(on_driver)

        def shape(result: Result[Any]) -> Sequence[Mapping[str, Any]]:
            if not cast(CursorResult[Any], result).returns_rows:  # a write without RETURNING
                return []
            return cast(Sequence[Mapping[str, Any]], result.mappings().all())

        if write:
            return await self.write_one(statement, parameters, shape)
        return await self.read(lambda conn: shape(conn.execute(statement, parameters)))

    def _plain_sql(self, statement: Executable) -> PlainSQL | None:
        try:
            return self._plain[statement]
        except KeyError:
            engine = self._async_engine or self._sqlite_engine
            if engine is None:
                message = "the store is not open: call `await store.open()` first"
                raise RuntimeError(message) from None
            if len(self._plain) >= PLAIN_STATEMENTS:  # a caller building statements per call
                self._plain.clear()
            plain = self._plain[statement] = PlainSQL.compile(statement, engine.dialect)
            return plain

    async def _plain_rows(
        self, engine: AsyncEngine, plain: PlainSQL, parameters: dict[str, Any]
    ) -> list[Any]:
        async with self._plain_connection(engine) as driver:
            return await plain.fetch(driver, parameters)

    async def plain_transaction(self, work: Callable[[PlainRun], Awaitable[T]]) -> T:
        """PostgreSQL: `work` in one transaction, its statements run as `rows` runs plain ones
        (built once, straight to asyncpg on a connection of the same pool): `work` gets a
        `run(statement, parameters)` that returns a statement's rows. The transaction of
        SQLDatabase.run (SQLAlchemy's) costs the event loop 250-400 µs per statement besides its
        BEGIN and COMMIT (a keyed enqueue, three statements: 1.8 ms of CPU against 0.38 here,
        issue 20). A statement that is not plain (`PlainSQL.compile`) raises TypeError.
        Failures surface as SQLDatabase.run's do."""
        engine = self._async_engine
        if engine is None:
            raise RuntimeError("plain_transaction is PostgreSQL's; the store is not open on it")

        async with self._plain_connection(engine) as driver:

            async def run(statement: Executable, parameters: dict[str, Any]) -> list[Any]:
                plain = self._plain_sql(statement)
                if plain is None or not plain.takes(parameters):
                    raise TypeError(f"not a plain statement with these parameters: {statement}")
                return await plain.fetch(driver, parameters)

            async with driver.transaction():
                return await work(run)

    async def sqlite_plain(self, work: Callable[[SQLiteRun], T]) -> T:
        """SQLite: `work` as one operation of `run` (in the group commit's transaction, failing
        alone), its statements run as `rows` runs plain ones, on the store's thread: `work` gets
        a `run(statement, parameters)` that returns a statement's rows as mappings. A statement
        that is not plain raises TypeError. Failures surface as `run`'s do."""
        if self._sqlite_engine is None:
            raise RuntimeError("sqlite_plain is SQLite's; the store is not open on it")

        def on_driver(driver: sqlite3.Connection) -> T:
            def run(statement: Executable, parameters: dict[str, Any]) -> list[Mapping[str, Any]]:
                plain = self._plain_sql(statement)
                if plain is None or not plain.takes(parameters):
                    raise TypeError(f"not a plain statement with these parameters: {statement}")
                return plain.on_sqlite(plain.arguments(parameters), driver)

            return work(run)

        return await self.run(_Raw(on_driver))

    @contextlib.asynccontextmanager
    async def _plain_connection(self, engine: AsyncEngine) -> AsyncIterator[Any]:
        """A pool connection's asyncpg connection for plain statements: one kept since the last
        (used within PING_IDLE_SECONDS: no ping needed), else the pool's; kept again for the next
        (see PING_IDLE_SECONDS) once the caller is done with it. Failures surface as `run`'s do."""
        from sqlalchemy.util import greenlet_spawn

        if self._held and self._held[0][0] < time.monotonic() - PING_IDLE_SECONDS:
            await asyncio.shield(self._return_held())  # the caller's cancellation strands none
        if self._held:
            connection = self._held.pop()[1]
        else:
            with self._failures_as_unavailable():  # the pool's checkout (a ping, a new one)
                connection = await greenlet_spawn(engine.sync_engine.raw_connection)
            connection.info[TAKEN_AT] = time.monotonic()
        lost, done = True, False
        try:
            yield connection.driver_connection
            lost, done = False, True
        except Exception as exc:
            lost = raw_unavailable(exc)
            if lost or unavailable(exc):
                raise StoreUnavailable(f"{self.backend} store: {_short(exc)}") from exc
            raise  # the statement was refused: the connection is as good as before
        finally:
            now = time.monotonic()
            if (
                done
                and len(self._held) < self._pool_size
                and self._pool_spare(engine)
                and now - connection.info.get(TAKEN_AT, 0.0) < PLAIN_HELD_SECONDS
                and not self._closing
            ):
                self._held.append((now, connection))  # for the next statement
            else:
                # Lost, or stopped midway (cancelled): its state is unknown, so it is not
                # reused. A refused statement's connection goes back to the pool.
                await greenlet_spawn(connection.invalidate if lost else connection.close)

    def _pool_spare(self, engine: AsyncEngine) -> bool:
        """Whether the pool could give out one more connection besides those out now (the one
        being returned counted among them)."""
        pool = engine.pool
        if not isinstance(pool, sa.pool.QueuePool):
            return True
        return pool.checkedout() < pool.size() + self._max_overflow

    def _spare_held(self) -> None:
        """The pool has no idle connection left: give it back the one `rows` kept idle longest
        (called by the pool, in the greenlet of the checkout that found none)."""
        if self._held:
            used_at, connection = self._held.pop(0)
            connection.info[IDLE_SINCE] = used_at
            with contextlib.suppress(Exception):  # closing it is all that is left to do
                connection.close()

    async def _return_held(self, *, everything: bool = False) -> None:
        """Give the pool back the connections `rows` kept that sat idle past
        PING_IDLE_SECONDS (the pool pings such a one before its next use), or all of them."""
        from sqlalchemy.util import greenlet_spawn

        deadline = time.monotonic() - PING_IDLE_SECONDS
        while self._held and (everything or self._held[0][0] < deadline):
            used_at, connection = self._held.pop(0)
            connection.info[IDLE_SINCE] = used_at  # so the pool pings it before its next use
            with contextlib.suppress(Exception):  # closing it is all that is left to do
                await greenlet_spawn(connection.close)

    async def _autocommit(self, engine: AsyncEngine, operation: Callable[[Connection], T]) -> T:
        if self._autocommit_engine is None:
            self._autocommit_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        with self._failures_as_unavailable():
            async with self._autocommit_engine.connect() as conn:
                return await conn.run_sync(operation)

    @contextlib.contextmanager
    def _failures_as_unavailable(self) -> Iterator[None]:
        """A database failure that says the server cannot serve now raised as StoreUnavailable
        (callers wait it out); anything else as it is."""
        try:
            yield
        except Exception as exc:
            if unavailable(exc):
                raise StoreUnavailable(f"{self.backend} store: {_short(exc)}") from exc
            raise

    async def in_sqlite(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` over a plain sqlite3 connection in one `BEGIN IMMEDIATE … COMMIT`, on the
        store's SQLite thread: the hot path of intake, with none of SQLAlchemy's transaction
        machinery around it. The connection is the engine's (its PRAGMAs applied), kept."""
        if self._sqlite_engine is None or self._sqlite_thread is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        if self._checkpointer is not None:
            self._checkpointer.written()
        try:
            return await self._sqlite_thread.run(self._sqlite_transaction, work)
        except sqlite3.OperationalError as exc:  # locked past busy_timeout, disk full, I/O
            raise StoreUnavailable(f"{self.backend} store: {_short(exc)}") from exc

    def _sqlite_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        assert self._sqlite_engine is not None
        if self._kept_sqlite is None:
            self._kept_sqlite = self._sqlite_engine.raw_connection()
        conn: sqlite3.Connection = self._kept_sqlite.driver_connection
        return immediate(conn, work)

    def _release_sqlite(self) -> None:
        if self._writer is not None:
            self._writer.close()
        kept, self._kept_sqlite = self._kept_sqlite, None
        if kept is not None:
            kept.close()  # back to the engine's pool, which dispose() then closes

    async def fetch(self, statement: str, *args: Any) -> list[Any]:
        """One statement of plain SQL straight to asyncpg (PostgreSQL), on a connection kept
        for intake (at most INTAKE_CONNECTIONS at once, outside the pool the rest of the store
        shares): the hot path of intake, one round trip with no pool checkout, ping or
        transaction of SQLAlchemy's around it. The statement commits on its own (asyncpg runs
        it outside a transaction block); asyncpg prepares it once per connection and keeps it."""
        async with self._kept_slots:
            for attempt in (1, 2):
                kept = self._kept.pop() if self._kept else None
                try:
                    if kept is None:
                        kept = await self._intake_engine().connect()
                    raw = await kept.get_raw_connection()
                    driver: Any = raw.driver_connection
                    rows = await driver.fetch(statement, *args, timeout=KEPT_TIMEOUT)
                except Exception as exc:
                    lost = raw_unavailable(exc)
                    if kept is not None:
                        if lost or isinstance(exc, TimeoutError):  # its state is unknown
                            await _close(kept, invalidate=True)
                        else:
                            self._kept.append(kept)
                    if lost and attempt == 1 and kept is not None:
                        # A kept connection the server or a proxy closed while it sat idle:
                        # once more on a new one (what the pool's pre-ping does for the rest).
                        # Had the statement committed first, its deliveries come back as
                        # duplicates: stored either way.
                        continue
                    if lost or unavailable(exc):
                        raise StoreUnavailable(f"{self.backend} store: {_short(exc)}") from exc
                    raise
                self._kept.append(kept)
                return cast(list[Any], rows)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def announce(self, channel: str) -> None:
        """PostgreSQL: NOTIFY `channel`, after the commit that called for it and outside its
        transaction: a transaction that notifies takes a lock of the whole server while it
        commits, which lines up intake's concurrent commits behind one another (a trigger
        that notified inside them cost about 15 % of intake's deliveries/s here). The first
        after a quiet spell goes at once; those asked for while one is in flight, or within
        ANNOUNCE_INTERVAL of it, make one more at the end of that interval (a burst of
        deliveries costs at most 1 / ANNOUNCE_INTERVAL round trips a second). Never raises:
        a listener missing one finds the job at its next poll."""
        if self._announcing is not None and not self._announcing.done():
            self._announce_again = True
            return
        self._announcing = asyncio.ensure_future(self._announce(channel))

    async def _announce(self, channel: str) -> None:
        while True:
            self._announce_again = False
            sent = time.monotonic()
            try:
                await self.fetch("SELECT pg_notify($1, '')", channel)
            except Exception as exc:
                get_logger(component="store").debug("jobs not announced", error=_short(exc))
                return
            await asyncio.sleep(max(sent + ANNOUNCE_INTERVAL - time.monotonic(), 0))
            if not self._announce_again:
                return

    async def listen(self, channel: str, wake: Callable[[], None]) -> None:
        """PostgreSQL: call `wake` on every notification on `channel`, until cancelled. The
        listening connection is one of its own (outside the pool); when it is lost, `wake` is
        called once more on reconnecting (a notification sent meanwhile is gone), and until
        then the caller's polling is all there is. Never raises but CancelledError."""
        log = get_logger(component="store")
        failures = 0
        while True:
            try:
                await self._listen_on_one(channel, wake, again=failures > 0)
                failures = 0  # it listened until the connection was lost: reconnect soon
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                # Once is news; every retry of a long outage is noise.
                (log.warning if failures == 1 else log.debug)(
                    "not listening for jobs; polling meanwhile", error=_short(exc)
                )
            await asyncio.sleep(min(LISTEN_RETRY_SECONDS * 2 ** min(failures, 7), 60.0))

    async def _listen_on_one(self, channel: str, wake: Callable[[], None], *, again: bool) -> None:
        """Listen on one connection of its own until it is lost (returns) or fails (raises)."""
        connection = await self._intake_engine().connect()
        try:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            lost = asyncio.Event()
            driver.add_termination_listener(lambda _connection: lost.set())
            await driver.add_listener(channel, lambda *_notification: wake())
            if again:
                get_logger(component="store").info("listening for jobs again")
            wake()  # what was queued before this connection listened
            while not lost.is_set():
                # A connection that died without a word (no FIN) tells nobody: ask it.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LISTEN_CHECK_SECONDS):
                        await lost.wait()
                if not lost.is_set():
                    await driver.execute("SELECT 1", timeout=KEPT_TIMEOUT)
        finally:
            await _close(connection, invalidate=True)

    def _intake_engine(self) -> AsyncEngine:
        if self._async_engine is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        if self._intake is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            self._intake = create_async_engine(self.url, poolclass=sa.pool.NullPool)
        return self._intake

    async def _close_kept(self) -> None:
        if self._announcing is not None:
            await asyncio.wait([self._announcing])
            self._announcing = None
        kept, self._kept = self._kept, []
        for connection in kept:
            await _close(connection, invalidate=False)
        if self._intake is not None:
            await self._intake.dispose()
            self._intake = None

    async def _run_together(
        self, operations: list[Callable[[Connection], Any]]
    ) -> list[_Outcome[Any]]:
        if self._writer is None or self._sqlite_thread is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        return await self._sqlite_thread.run(_in_one_transaction, self._writer, operations)


# The column types whose values asyncpg takes and gives as SQLAlchemy does (no conversion).
PLAIN_TYPES = frozenset(
    {
        *(sa.String, sa.Text, sa.Unicode, sa.VARCHAR, sa.CHAR),
        *(sa.Integer, sa.BigInteger, sa.SmallInteger, sa.INTEGER),
        *(sa.Float, sa.Double, sa.FLOAT, sa.REAL),  # as floats (`asdecimal` is checked)
        *(sa.Boolean, sa.BOOLEAN),
    }
)


@dataclass(frozen=True)
class PlainSQL:
    """A statement compiled for asyncpg: its SQL (`$1`, `$2`, … in `names`' order), the values
    SQLAlchemy would bind that the caller does not give (literals in the statement), and the
    conversions SQLAlchemy applies to a value before the driver gets it (a Boolean's check, a
    TypeDecorator's) and to a column's value the driver gives (`converters`, by column)."""

    sql: str
    names: tuple[str, ...]
    fixed: dict[str, Any]
    required: frozenset[str]
    processors: dict[str, Callable[[Any], Any]]
    converters: dict[str, Callable[[Any], Any]]

    @classmethod
    def compile(cls, statement: Executable, dialect: sa.engine.Dialect) -> PlainSQL | None:
        """`statement` compiled for `dialect` (asyncpg's or SQLite's); None where a value it
        binds or returns is not plain (JSON, dates, decimals), a list is expanded into it, or
        it has no parameters."""
        compiled = cast(Any, statement).compile(dialect=dialect)
        if not compiled.positiontup:
            return None
        binds = {name: compiled.binds[name] for name in compiled.positiontup}
        if any(b.expanding or b.literal_execute or b.callable for b in binds.values()):
            return None  # rendered or valued anew for each execution (`IN` a list of values)
        if compiled.insert_prefetch or compiled.update_prefetch:
            return None  # column defaults SQLAlchemy computes for each execution
        columns = list(getattr(statement, "exported_columns", ()))
        types = [bind.type for bind in binds.values()] + [column.type for column in columns]
        if not all(_plain_type(kind) for kind in types):
            return None
        if len({column.name for column in columns}) != len(columns):
            return None  # two columns of one name: a row would keep one
        fixed = {name: bind.value for name, bind in binds.items() if not bind.required}
        required = frozenset(name for name, bind in binds.items() if bind.required)
        processors = dict(compiled._bind_processors)
        # Plain columns come from asyncpg as SQLAlchemy gives them; a TypeDecorator's value
        # goes through its own conversion (over a plain type's, which is none). SQLite gives
        # some plain types as others (a Boolean as 0 or 1): every column's conversion applies.
        if dialect.name == "sqlite":
            kinds = {
                column.name: column.type._cached_result_processor(dialect, None)
                for column in columns
            }
        else:
            kinds = {
                column.name: column.type.result_processor(dialect, None)
                for column in columns
                if isinstance(column.type, sa.TypeDecorator)
            }
        converters = {name: convert for name, convert in kinds.items() if convert is not None}
        return cls(
            compiled.string, tuple(compiled.positiontup), fixed, required, processors, converters
        )

    def takes(self, parameters: Mapping[str, Any]) -> bool:
        """Whether `parameters` give every value the statement needs."""
        return self.required <= parameters.keys()

    async def fetch(self, driver: Any, parameters: Mapping[str, Any]) -> list[Any]:
        """The statement's rows, run with `parameters` on asyncpg's connection `driver`."""
        rows = await driver.fetch(self.sql, *self.arguments(parameters))
        return [self.row(record) for record in rows] if self.converters else rows

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        values = [
            parameters[name] if name in parameters else self.fixed[name] for name in self.names
        ]
        if self.processors:
            values = [
                self.processors[name](value) if name in self.processors else value
                for name, value in zip(self.names, values, strict=True)
            ]
        return values

    def on_sqlite(
        self, arguments: list[Any], driver: sqlite3.Connection
    ) -> list[Mapping[str, Any]]:
        """The statement's rows, as mappings, run with `arguments` (`arguments()`) on the
        sqlite3 connection `driver`, inside whatever transaction it is in. The driver's errors
        are raised as SQLAlchemy raises them (IntegrityError, OperationalError, …), so callers
        and `unavailable` see the same failures either way."""
        try:
            cursor = driver.execute(self.sql, arguments)
            try:
                found = cursor.fetchall() if cursor.description else []
                names = [column[0] for column in cursor.description or ()]
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            raise _as_sqlalchemy(exc, self.sql, arguments) from exc
        rows = [dict(zip(names, values, strict=True)) for values in found]
        for name, convert in self.converters.items():
            for row in rows:
                row[name] = convert(row[name])
        return cast(list[Mapping[str, Any]], rows)

    def row(self, record: Any) -> Mapping[str, Any]:
        """A row as SQLAlchemy would give it: asyncpg's record, its columns converted."""
        if not self.converters:
            return cast(Mapping[str, Any], record)
        row = dict(record.items())
        for name, convert in self.converters.items():
            row[name] = convert(row[name])
        return row


def _plain_type(kind: Any) -> bool:
    """Whether asyncpg takes and gives a value of this type as SQLAlchemy does, bar the
    conversions `PlainSQL` applies (a TypeDecorator's, over a plain type; an array's items)."""
    if isinstance(kind, sa.TypeDecorator):
        kind = kind.impl_instance
    if isinstance(kind, sa.ARRAY):
        kind = kind.item_type
    return type(kind) in PLAIN_TYPES and not getattr(kind, "asdecimal", False)


async def _close(connection: AsyncConnection, *, invalidate: bool) -> None:
    try:
        if invalidate:
            await connection.invalidate()
        await connection.close()
    except Exception as exc:  # a connection already gone needs no closing
        get_logger(component="store").debug("intake connection closed", error=_short(exc))


def ping_when_idle(engine: Engine, idle: float = PING_IDLE_SECONDS) -> None:
    """SQLAlchemy's pre-ping for the pooled connections of `engine` that sat idle longer than
    `idle` seconds (see PING_IDLE_SECONDS): the dialect's own ping, and a connection that fails
    it is replaced by the pool (a DisconnectionError on checkout makes it connect anew)."""

    def used(_dbapi: Any, record: Any, *_args: Any) -> None:
        # One `rows` kept idle comes back saying since when (IDLE_SINCE): not used just now.
        record.info["used_at"] = record.info.pop(IDLE_SINCE, None) or time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("used_at", 0.0) <= idle:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"ping failed: {_short(exc)}") from exc
        record.info["used_at"] = time.monotonic()

    sa_event.listen(engine, "connect", used)
    sa_event.listen(engine, "checkin", used)
    sa_event.listen(engine, "checkout", checkout)


def raw_unavailable(exc: BaseException) -> bool:
    """Whether an error asyncpg raised itself says the server cannot serve now."""
    if isinstance(exc, OSError | ConnectionError):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES):
        return True
    # asyncpg's "connection is closed" / "connection was closed in the middle of operation".
    return type(exc).__name__ in ("ConnectionDoesNotExistError", "InterfaceError")


def dialect_insert(backend: str, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    if backend == "sqlite":
        return sqlite.insert(table)
    from sqlalchemy.dialects import postgresql  # loaded with the PostgreSQL engine already

    return postgresql.insert(table)


class _Kept:
    """One SQLAlchemy Connection of `engine`, kept open for the one thread that uses it (a
    store thread: a single thread, `StoreThread`, and nothing else touches this).

    Checking a connection out of the pool and back in for every transaction (the Connection
    built, the pool's events, the rollback that resets it on return) cost SQLite's threads more
    than the statements a review's reads and writes run; a kept one begins and commits alone.
    One the driver found broken (invalidated) is closed and replaced on the next use."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None

    def connection(self) -> Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            conn = self._conn = self.engine.connect()
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _by_itself(kept: _Kept, operation: Callable[[Connection], T]) -> T:
    return operation(kept.connection())


@dataclass(frozen=True)
class _Raw(Generic[T]):
    """An operation on the sqlite3 connection itself (plain statements, `PlainSQL.on_sqlite`):
    run inside SQLAlchemy's transaction when it shares one with operations that need
    SQLAlchemy, and in a transaction of the driver's own when every operation of a group commit
    is one of these (`_in_one_transaction`)."""

    work: Callable[[sqlite3.Connection], T]

    def __call__(self, conn: Connection) -> T:
        return self.work(cast(sqlite3.Connection, conn.connection.driver_connection))


def _as_sqlalchemy(exc: sqlite3.Error, statement: str, arguments: Any = None) -> sa.exc.DBAPIError:
    """A driver error as SQLAlchemy raises it, its class by the driver's (OperationalError for
    a locked database or a failed disk, IntegrityError for a refused row, …)."""
    error = sa.exc.DBAPIError.instance(statement, arguments, exc, sqlite3.Error)
    return cast(sa.exc.DBAPIError, error)


def _raw_together(kept: _Kept, operations: list[_Raw[Any]]) -> list[_Outcome[Any]]:
    """`_in_one_transaction` of operations that each use the driver's connection alone: the
    same transactions (one, or one savepoint per operation once one fails), begun and
    committed on the driver itself. SQLAlchemy's transaction around them cost the store's
    thread more than a small write does (issue 20)."""
    driver = cast(sqlite3.Connection, kept.connection().connection.driver_connection)

    def execute(sql: str) -> None:
        try:
            driver.execute(sql)
        except sqlite3.Error as exc:
            raise _as_sqlalchemy(exc, sql) from exc

    execute("BEGIN IMMEDIATE")
    values: list[Any] = []
    try:
        values.extend(operation.work(driver) for operation in operations)
        execute("COMMIT")
    except BaseException as exc:
        _roll_back(driver)
        if len(values) == len(operations) or not isinstance(exc, Exception):
            raise  # the commit failed (or the thread is stopping): the whole batch has
        if len(operations) == 1:
            if isinstance(exc, DB_ERRORS):
                raise
            return [_Outcome(error=exc)]
    else:
        return [_Outcome(value) for value in values]
    # One failed: nothing of the attempt is kept, and each runs again in a savepoint.
    outcomes: list[_Outcome[Any]] = []
    execute("BEGIN IMMEDIATE")
    try:
        for operation in operations:
            execute("SAVEPOINT arbiter_operation")
            try:
                outcomes.append(_Outcome(operation.work(driver)))
            except Exception as exc:
                execute("ROLLBACK TO SAVEPOINT arbiter_operation")
                outcomes.append(_Outcome(error=exc))
            execute("RELEASE SAVEPOINT arbiter_operation")
        execute("COMMIT")
    except BaseException:
        _roll_back(driver)
        raise
    return outcomes


def _roll_back(driver: sqlite3.Connection) -> None:
    if driver.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the failure itself is what is raised
            driver.execute("ROLLBACK")


def _in_transaction(kept: _Kept, operation: Callable[[Connection], T]) -> T:
    conn = kept.connection()
    with conn.begin():
        return operation(conn)


@dataclass(frozen=True)
class _Outcome(Generic[T]):
    """What one operation of a shared transaction came to: its value, or its error."""

    value: T | None = None
    error: Exception | None = None

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        return cast(T, self.value)


def _in_one_transaction(
    kept: _Kept, operations: list[Callable[[Connection], Any]]
) -> list[_Outcome[Any]]:
    if all(isinstance(operation, _Raw) for operation in operations):
        return _raw_together(kept, cast(list[_Raw[Any]], operations))
    if len(operations) == 1:  # no savepoint needed for one
        try:
            return [_Outcome(_in_transaction(kept, operations[0]))]
        except DB_ERRORS:
            raise
        except Exception as exc:
            return [_Outcome(error=exc)]
    # First as one plain transaction: a savepoint per operation costs SQLAlchemy ~15 times
    # what a small write does, and operations rarely fail. If one does, nothing of the
    # attempt is kept, and each runs again in a savepoint of its own, so it fails alone.
    conn = kept.connection()
    values: list[Any] = []
    with conn.begin() as transaction:
        try:
            values.extend(operation(conn) for operation in operations)
        except Exception:
            transaction.rollback()
    if len(values) == len(operations):
        return [_Outcome(value) for value in values]
    outcomes: list[_Outcome[Any]] = []
    conn = kept.connection()  # a new one if the failure broke it
    with conn.begin():
        for operation in operations:
            try:
                with conn.begin_nested():
                    outcomes.append(_Outcome(operation(conn)))
            except Exception as exc:
                outcomes.append(_Outcome(error=exc))
    return outcomes


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).splitlines()
    return text[0] if text else type(exc).__name__


def _sqlite_engine(url: str, *, begin: str | None = "BEGIN IMMEDIATE") -> Engine:
    """A synchronous engine on the stdlib driver, used from the store's one SQLite thread (or,
    with `begin=None`, the reading one's: no BEGIN and COMMIT around its one-statement reads,
    each of which SQLite runs as a transaction of its own, taking no write lock)."""
    parsed = sa.engine.make_url(url).set(drivername="sqlite")
    database = parsed.database
    memory = database in (None, "", ":memory:")
    if not memory and database is not None:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        if not parsed.query.get("uri"):
            private_database(Path(database).expanduser())
    engine = sa.create_engine(
        parsed, poolclass=sa.pool.SingletonThreadPool if memory else sa.pool.QueuePool
    )

    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN, so it can be BEGIN IMMEDIATE.
        configure(dbapi_connection, memory=memory)

    if begin is not None:

        @sa_event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Take the write lock up front: a deferred transaction that later writes can fail
            # with "database is locked" at once instead of waiting for the other writer.
            conn.exec_driver_sql(begin)

    return engine
