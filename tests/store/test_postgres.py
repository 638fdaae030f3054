"""PostgreSQL specifics: a server that goes away surfaces as StoreUnavailable, whatever form
the driver's error takes, so callers wait it out (503 at intake, outcomes retried) instead of
treating it as a bug."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.util import await_

from bot.store import StoreUnavailable, sql_engine, sql_pool, sql_queue
from bot.store.base import Delivery, NewJob, ReviewStart
from bot.store.records import new_job_row
from bot.store.sql import SQLStore
from bot.store.sql_engine import unavailable
from tests.conftest import reset_sql_schema


def _backend_pid(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


@pytest.fixture
async def postgres_store(postgres_url: str) -> AsyncIterator[SQLStore]:
    store = SQLStore(postgres_url)
    await store.open()
    yield store
    await store.close()


async def test_a_session_the_server_ends_is_store_unavailable(
    postgres_store: SQLStore, postgres_url: str
) -> None:
    """A fast shutdown ends every session, as pg_terminate_backend ends this one."""
    pid = await postgres_store.run_sql(_backend_pid)
    other = SQLStore(postgres_url)
    await other.open()

    def terminate(conn: sa.Connection) -> bool:
        statement = sa.text("SELECT pg_terminate_backend(:pid)")
        return bool(conn.execute(statement, {"pid": pid}).scalar_one())

    async def end_it_soon() -> bool:
        await asyncio.sleep(0.3)
        return await other.run_sql(terminate)

    try:
        ended = asyncio.create_task(end_it_soon())
        with pytest.raises(StoreUnavailable, match="postgresql store"):
            await postgres_store.run_sql(
                lambda conn: conn.execute(sa.text("SELECT pg_sleep(10)")).all()
            )
        assert await ended
    finally:
        await other.close()
    # The pool drops the dead connection: the next operation works.
    assert await postgres_store.run_sql(lambda conn: conn.execute(sa.text("SELECT 1")).scalar())


async def test_an_idle_connection_the_server_ended_is_replaced_before_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection that sat idle past PING_IDLE_SECONDS is pinged when it is taken
    out: one the server (or a proxy) ended meanwhile is replaced, and the operation works."""
    monkeypatch.setattr(sql_engine, "PING_IDLE_SECONDS", 0.05)
    store, other = SQLStore(postgres_url), SQLStore(postgres_url)
    await store.open()
    await other.open()

    try:
        pid = await store.run_sql(_backend_pid)
        ended = await other.run_sql(
            lambda conn: conn.execute(
                sa.text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid}
            ).scalar_one()
        )
        assert ended
        await asyncio.sleep(0.2)  # idle past the window: the pool pings it first
        assert await store.run_sql(_backend_pid) != pid  # a new connection, and no error
    finally:
        await other.close()
        await store.close()


async def test_a_read_runs_without_a_transaction_around_it(postgres_store: SQLStore) -> None:
    """A read is one statement: on PostgreSQL it goes without BEGIN and COMMIT (two round
    trips fewer), and sees what was committed when it began, as it would in a transaction
    under READ COMMITTED. A write still runs in a transaction of its own."""

    def savepoint(conn: sa.Connection) -> bool:
        conn.execute(sa.text("SAVEPOINT probe"))  # PostgreSQL: only inside a transaction block
        return True

    await postgres_store.migrate()
    with pytest.raises(sa.exc.DBAPIError, match="transaction blocks"):
        await postgres_store._db.read(savepoint)
    assert await postgres_store.run_sql(savepoint)
    repo = f"reads/{uuid.uuid4().hex[:8]}"  # the session's database is shared: a repo of its own
    await postgres_store.update_pr_state("github", repo, 7, last_reviewed_head="abc")
    state = await postgres_store.pr_state("github", repo, 7)
    assert state.last_reviewed_head == "abc"  # a read sees the write committed before it


async def test_a_one_statement_write_commits_without_a_transaction_block(
    postgres_store: SQLStore, postgres_url: str
) -> None:
    """The store's one-statement writes (an upsert, an update, an insert) are atomic by
    themselves: on PostgreSQL they go without BEGIN and COMMIT, and are committed once they
    return (another connection sees them)."""
    with pytest.raises(sa.exc.DBAPIError, match="transaction blocks"):
        await postgres_store._db.write_one(sa.text("SAVEPOINT probe"))
    await postgres_store.migrate()
    repo = f"writes/{uuid.uuid4().hex[:8]}"  # the session's database is shared: a repo of its own
    state = await postgres_store.update_pr_state("github", repo, 8, last_reviewed_head="def")
    assert state.last_reviewed_head == "def" and not state.paused  # the upsert's row
    other = SQLStore(postgres_url)
    await other.open()
    try:
        assert (await other.pr_state("github", repo, 8)).last_reviewed_head == "def"
    finally:
        await other.close()


async def test_a_job_s_review_record_is_written_in_one_statement_without_a_transaction(
    postgres_store: SQLStore,
) -> None:
    """A review's record is written beside the steps toward the model on every review: its
    first attempt sends one INSERT (no BEGIN, SELECT, COMMIT); a retry finds it and takes it
    back with one UPDATE more."""

    def savepoint(conn: sa.Connection) -> bool:
        conn.execute(sa.text("SAVEPOINT probe"))  # PostgreSQL: only inside a transaction block
        return True

    with pytest.raises(sa.exc.DBAPIError, match="transaction blocks"):
        await postgres_store._db.run_each(savepoint)
    await postgres_store.migrate()
    sent: list[str] = []

    # Every statement sent: those through SQLAlchemy (its cursor events) and those straight to
    # asyncpg (`SQLDatabase.rows`), which asyncpg's query logger sees with any BEGIN and COMMIT.
    def executed(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    def logged(query: Any) -> None:
        sent.append(query.query.split(None, 1)[0].upper())

    def checkout(dbapi_connection: Any, *_args: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(logged)  # a set: added once

    engine = postgres_store._db._async_engine
    assert engine is not None
    sa.event.listen(engine.sync_engine, "before_cursor_execute", executed)
    sa.event.listen(engine.sync_engine, "checkout", checkout)
    job = int(uuid.uuid4().int % 2**31)  # the session's database is shared: a job of its own
    try:
        first = await postgres_store.start_review(
            ReviewStart("github", "o/r", 1, "a" * 40, "full", job_id=job)
        )
        await asyncio.sleep(0)  # asyncpg calls its loggers soon after the statement
        assert sent == ["INSERT"]
        again = await postgres_store.start_review(
            ReviewStart("github", "o/r", 1, "b" * 40, "incremental", job_id=job)
        )
        await asyncio.sleep(0)
        assert sorted(sent) == ["INSERT", "INSERT", "UPDATE"]
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", executed)
        sa.event.remove(engine.sync_engine, "checkout", checkout)
        await engine.dispose()  # no connection keeps the logger
    assert again.id == first.id and (again.head_sha, again.mode) == ("b" * 40, "incremental")


async def test_a_plain_statement_goes_to_asyncpg_and_fails_as_the_pools_do(
    postgres_store: SQLStore,
) -> None:
    """`rows` sends a statement of plain values straight to asyncpg on a pooled connection: a
    session the server ends under it is StoreUnavailable and that connection is dropped; a
    statement the server refuses raises as it is, and its connection goes back to the pool.
    A statement with a value asyncpg takes otherwise than SQLAlchemy (a date) is left to it."""
    db = postgres_store._db
    engine = db._async_engine
    assert engine is not None
    pool: Any = engine.pool
    marker = uuid.uuid4().hex
    sleep = (
        sa.text(f"SELECT 1 AS one FROM pg_sleep(:seconds) /* {marker} */")  # noqa: S608
        .bindparams(sa.bindparam("seconds", type_=sa.Float))
        .columns(one=sa.Integer)
    )
    backend = sa.select(sa.func.pg_backend_pid(type_=sa.Integer).label("pid"))
    assert sql_engine.PlainSQL.compile(sleep, engine.dialect) is not None
    at = sa.select(sa.bindparam("at", type_=sa.DateTime).label("at"))
    assert sql_engine.PlainSQL.compile(at, engine.dialect) is None
    ending = sa.text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query LIKE :marker AND pid <> pg_backend_pid()"
    ).bindparams(marker=f"%/* {marker} */%")
    other = SQLStore(db.url)
    await other.open()

    async def end_it_soon() -> None:
        await asyncio.sleep(0.3)
        await other.run_sql(lambda conn: conn.execute(ending).all())

    try:
        ended = asyncio.create_task(end_it_soon())
        with pytest.raises(StoreUnavailable, match="postgresql store"):
            await db.rows(sleep, {"seconds": 10})
        await ended
    finally:
        await other.close()
    assert pool.checkedout() == 0  # the lost one dropped, none kept
    (first,) = await db.rows(backend, {})
    refused = sa.text("SELECT 1 / :zero AS x").bindparams(sa.bindparam("zero", type_=sa.Integer))
    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
        await db.rows(refused.columns(x=sa.Integer), {"zero": 0})
    (again,) = await db.rows(backend, {})
    assert again["pid"] == first["pid"]  # the same connection, kept or back from the pool
    usage = db.pool_usage()
    assert usage is not None and usage.in_use == 0


async def test_plain_statements_keep_a_connection_between_them_not_a_checkout_each(
    postgres_store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rows` keeps the pool's connection for the next statement: thirty reads, one at a
    time, take one connection out of the pool, and /metrics counts it idle between them. One
    idle past PING_IDLE_SECONDS goes back to the pool (which pings it before its next use),
    and closing the store hands every kept one back."""
    db = postgres_store._db
    engine = db._async_engine
    assert engine is not None
    await postgres_store.migrate()
    with _pool_checkouts(engine) as checkouts:
        for number in range(30):
            await postgres_store.pr_state("github", "o/r", number)
        assert len(checkouts) == 1
        usage = db.pool_usage()
        assert usage is not None and (usage.in_use, usage.idle) == (0, 1)
        monkeypatch.setattr(sql_engine, "PING_IDLE_SECONDS", 0.05)
        await asyncio.sleep(0.1)
        await postgres_store.pr_state("github", "o/r", 1)
        assert len(checkouts) == 2  # through the pool again
        pool: Any = engine.pool
        assert pool.checkedout() == 1  # the one kept since
    await postgres_store.close()
    assert pool.checkedout() == 0


async def test_a_keyed_enqueue_is_one_plain_transaction_that_all_fails_or_all_holds(
    postgres_store: SQLStore, postgres_url: str
) -> None:
    """A pull request's review is queued in one transaction sent straight to asyncpg (BEGIN,
    the key's lock, the job, the replaced job, COMMIT), none of it through SQLAlchemy's
    cursor. A statement refused inside it undoes the rest and raises as it is; the session
    ending inside it is StoreUnavailable, with nothing written, and the store goes on."""
    await postgres_store.migrate()
    db = postgres_store._db
    engine = db._async_engine
    assert engine is not None
    through_sqlalchemy: list[str] = []
    sent: list[str] = []

    def executed(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        through_sqlalchemy.append(statement)

    def logged(query: Any) -> None:
        sent.append(query.query.split(None, 1)[0].upper())

    key = f"review:github:o/r#{uuid.uuid4().int % 10**6}"
    first = await postgres_store.enqueue(NewJob("review", "head-1", key=key))
    sa.event.listen(engine.sync_engine, "before_cursor_execute", executed)
    held = [c.driver_connection for _, c in db._held]  # the next plain statement's
    for connection in held:
        connection.add_query_logger(logged)
    try:
        second = await postgres_store.enqueue(NewJob("review", "head-2", key=key))
        await asyncio.sleep(0)  # asyncpg calls its loggers soon after the statement
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", executed)
        for connection in held:
            connection.remove_query_logger(logged)
    assert through_sqlalchemy == []
    assert sent == ["BEGIN;", "SELECT", "INSERT", "UPDATE", "COMMIT;"]
    assert second.replaced == (first.job_id,)

    async def refused(run: sql_engine.PlainRun) -> None:
        await run(sql_queue._keyed_statements()[0], {"key": key})
        # A job without its payload and the rest (NOT NULL): the server refuses it.
        insert = sa.text("INSERT INTO jobs (kind) VALUES (:kind)")
        await run(insert.bindparams(sa.bindparam("kind", type_=sa.String)), {"kind": "review"})

    with pytest.raises(asyncpg.exceptions.NotNullViolationError):
        await db.plain_transaction(refused)
    async with asyncio.timeout(5):  # the key's lock was let go with the rollback
        third = await postgres_store.enqueue(NewJob("review", "head-3", key=key))
    assert third.replaced == (second.job_id,)

    async def ended_midway(run: sql_engine.PlainRun) -> None:
        await run(sql_queue._keyed_statements()[0], {"key": key})
        lost = new_job_row(NewJob("review", "lost", key=key), 0.0)
        await run(sql_queue._keyed_statements()[1], lost)
        await _end_session(postgres_url, await _pid(run))
        await run(sql_queue._keyed_statements()[0], {"key": key})

    with pytest.raises(StoreUnavailable, match="postgresql store"):
        await db.plain_transaction(ended_midway)
    queued = [j for j in await postgres_store.list_jobs(state="queued") if j.key == key]
    assert [j.payload for j in queued] == ["head-3"]  # the lost transaction's job is not there
    async with asyncio.timeout(5):
        fourth = await postgres_store.enqueue(NewJob("review", "head-4", key=key))
    assert fourth.replaced == (third.job_id,)


# The server process of the connection a plain statement (`rows`, a plain transaction) ran on.
_PLAIN_PID = (
    sa.text("SELECT pg_backend_pid() AS pid WHERE :yes")
    .bindparams(sa.bindparam("yes", type_=sa.Boolean))
    .columns(pid=sa.Integer)
)


async def _pid(run: sql_engine.PlainRun) -> int:
    (row,) = await run(_PLAIN_PID, {"yes": True})
    return int(row["pid"])


async def test_plain_statements_keep_up_to_the_pool_s_size_and_leave_it_one_to_give(
    postgres_url: str,
) -> None:
    """Statements several at a time keep as many connections as the pool's size between them
    (DATABASE_POOL_SIZE: the next such burst takes none from the pool), but never the last one
    the pool could give: a transaction, which takes its own from the pool, finds it."""
    store = SQLStore(postgres_url, pool_size=3, max_overflow=1)
    await store.open()
    try:
        await store.migrate()
        engine = store._db._async_engine
        assert engine is not None
        with _pool_checkouts(engine) as checkouts:
            await asyncio.gather(*(store.pr_state("github", "o/r", n) for n in range(3)))
            assert len(store._db._held) == 3
            checkouts.clear()
            await asyncio.gather(*(store.pr_state("github", "o/r", n) for n in range(3)))
            assert checkouts == []  # the three kept ones
            # Four at once take the pool's whole limit: the one back last while all four were
            # out goes back to the pool, not kept.
            await asyncio.gather(*(store.pr_state("github", "o/r", n) for n in range(4)))
            assert len(store._db._held) == 3
            pool: Any = engine.pool
            assert pool.checkedout() == 3  # the kept ones: the pool can give one more
            async with asyncio.timeout(5):
                one = await store.run_sql(lambda conn: conn.execute(sa.text("SELECT 1")).scalar())
            assert one == 1
    finally:
        await store.close()


@contextlib.contextmanager
def _pool_checkouts(engine: Any) -> Iterator[list[int]]:
    """Each connection the pool of `engine` (an AsyncEngine) hands out meanwhile, counted."""
    checkouts: list[int] = []

    def checkout(*_: Any) -> None:
        checkouts.append(1)

    sa.event.listen(engine.sync_engine, "checkout", checkout)
    try:
        yield checkouts
    finally:
        sa.event.remove(engine.sync_engine, "checkout", checkout)


def _kept_pid(store: SQLStore) -> int:
    """The server process of the connection `rows` kept last."""
    (_, connection), *_ = reversed(store._db._held)
    return int(connection.driver_connection.get_server_pid())


async def _end_session(url: str, pid: int) -> None:
    other = SQLStore(url)
    await other.open()
    try:
        ended = await other.run_sql(
            lambda conn: conn.execute(
                sa.text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid}
            ).scalar_one()
        )
        assert ended
    finally:
        await other.close()


async def test_a_busy_kept_connection_still_goes_back_to_the_pool_now_and_then(
    postgres_store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However often `rows` uses the connection it keeps, it returns it to the pool once it has
    kept it PLAIN_HELD_SECONDS: the pool's checks on checkout (pool_recycle) still apply."""
    await postgres_store.migrate()
    monkeypatch.setattr(sql_engine, "PLAIN_HELD_SECONDS", 0.2)
    engine = postgres_store._db._async_engine
    assert engine is not None
    with _pool_checkouts(engine) as checkouts:
        for _ in range(10):  # busy: a statement every 50 ms, for 0.5 s
            await postgres_store.pr_state("github", "o/r", 1)
            await asyncio.sleep(0.05)
        assert len(checkouts) >= 2  # back to the pool now and then, not taken once for all


async def test_a_kept_connection_the_server_ended_fails_one_statement_then_is_replaced(
    postgres_store: SQLStore, postgres_url: str
) -> None:
    """A connection kept between statements is used again without a ping (as one just back in
    the pool is): one the server ended meanwhile fails that statement as StoreUnavailable, is
    dropped, and the next statement works on a new one."""
    await postgres_store.migrate()
    await postgres_store.pr_state("github", "o/r", 1)
    first = _kept_pid(postgres_store)
    await _end_session(postgres_url, first)
    with pytest.raises(StoreUnavailable, match="postgresql store"):
        await postgres_store.pr_state("github", "o/r", 1)
    await postgres_store.pr_state("github", "o/r", 1)
    assert _kept_pid(postgres_store) != first


async def test_a_kept_connection_idle_past_the_window_is_pinged_and_replaced_if_ended(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection `rows` kept that then sat idle past PING_IDLE_SECONDS goes back to the
    pool as idle since its last use, not as just used: the pool pings it before it is used
    again, and one the server (or a proxy) ended meanwhile is replaced without an error."""
    monkeypatch.setattr(sql_engine, "PING_IDLE_SECONDS", 0.05)
    store = SQLStore(postgres_url)  # opened with that window
    await store.open()
    await store.migrate()
    engine = store._db._async_engine
    assert engine is not None
    pings: list[int] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return bool(ping(dbapi_connection))

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    try:
        await store.pr_state("github", "o/r", 1)
        first = _kept_pid(store)
        await asyncio.sleep(0.2)  # idle past the window: back to the pool, pinged on checkout
        await store.pr_state("github", "o/r", 1)
        assert len(pings) == 1 and _kept_pid(store) == first  # alive: the same connection
        await _end_session(postgres_url, first)
        await asyncio.sleep(0.2)
        await store.pr_state("github", "o/r", 1)  # no error: pinged, found ended, replaced
        assert _kept_pid(store) != first
    finally:
        await store.close()


async def test_a_plain_statement_against_a_server_that_is_not_there_is_store_unavailable() -> None:
    """The pool's checkout under `rows` (a refused connection) is StoreUnavailable too, for
    reads and writes alike."""
    store = SQLStore("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")  # nothing listens
    await store.open()
    try:
        with pytest.raises(StoreUnavailable, match="postgresql store"):
            await store.pr_state("github", "o/r", 1)
        with pytest.raises(StoreUnavailable, match="postgresql store"):
            await store.cache_put("k", "v", ttl_seconds=60)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),
        (asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"), True),
        (asyncpg.exceptions.UniqueViolationError("duplicate key value"), False),
        (asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'), False),
    ],
)
def test_a_server_going_or_full_is_told_from_a_bad_statement(
    error: asyncpg.PostgresError, expected: bool
) -> None:
    """Wrapped as SQLAlchemy wraps the driver's errors: by its SQLSTATE, not its class."""
    dbapi = PGDialect_asyncpg.import_dbapi()
    translated = next(
        dbapi._asyncpg_error_translate[kind](str(error), error)
        for kind in type(error).__mro__
        if kind in dbapi._asyncpg_error_translate
    )
    wrapped = sa.exc.DBAPIError.instance(None, None, translated, dbapi.Error)
    assert unavailable(wrapped) is expected


async def test_intake_survives_its_connection_being_ended(
    postgres_store: SQLStore, postgres_url: str
) -> None:
    """Intake keeps connections of its own: one the server (or a proxy, after an idle hour)
    ended is replaced on the spot, and the delivery is stored, not refused."""
    from bot.store import Delivery, NewJob

    def job() -> NewJob:
        return NewJob(kind="event", payload="{}", max_attempts=3)

    await postgres_store.migrate()
    first = await postgres_store.accept_delivery(Delivery("github", "k-1", "x"), job())
    assert first.job_id is not None
    pids = await _kept_pids(postgres_store)  # intake's connections (others share the server)
    assert pids

    def terminate(conn: sa.Connection) -> None:
        for pid in pids:
            conn.execute(sa.text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid})

    await postgres_store.run_sql(terminate)
    again = await postgres_store.accept_delivery(Delivery("github", "k-2", "x"), job())
    assert again.job_id is not None and not again.duplicate
    assert await postgres_store.seen_delivery("github", "k-2")
    new_pids = await _kept_pids(postgres_store)
    assert new_pids and not new_pids & pids


async def _kept_pids(store: SQLStore) -> set[int]:
    """The server pids of the connections intake keeps, once the store's NOTIFY of the jobs
    queued (on one of them) is done."""
    if store._db._announcing is not None:
        await store._db._announcing
    pids = set()
    for kept in store._db._kept:
        raw = await kept.get_raw_connection()
        pids.add(int(raw.driver_connection.get_server_pid()))  # type: ignore[union-attr]
    return pids


async def test_a_job_s_payload_is_compressed_with_lz4_where_the_server_has_it(
    postgres_store: SQLStore,
) -> None:
    """Intake stores each delivery's whole body: pglz compressing it cost more CPU than the
    rest of the insert (bench.webhooks, PostgreSQL)."""

    def methods(conn: sa.Connection) -> list[str]:
        statement = "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
        return list(conn.execute(sa.text(statement)).scalar() or [])

    if "lz4" not in await postgres_store.run_sql(methods):
        pytest.skip("this PostgreSQL server was built without LZ4")
    await postgres_store.migrate()

    def compression(conn: sa.Connection) -> str:
        statement = (
            "SELECT attcompression::text FROM pg_attribute"
            " WHERE attrelid = 'jobs'::regclass AND attname = 'payload'"
        )
        return str(conn.execute(sa.text(statement)).scalar_one())

    assert await postgres_store.run_sql(compression) == "l"


async def test_intake_and_completion_need_no_type_lookup_on_a_new_connection(
    postgres_store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg knows text[] by itself and looks every other array type up in the server's
    catalog on each new connection's first use (four round trips and a recursive query over
    pg_type, 9-14 ms here, and tens of milliseconds under load): a burst that grows the pool
    paid that once per connection. Intake and completion send their arrays as text[]: no
    lookup; the numbers arrive as sent (a float's text is exact)."""
    looked_up: list[object] = []
    original = asyncpg.Connection._introspect_types

    async def introspect(self: asyncpg.Connection, typeoids: Any, timeout: Any) -> Any:
        looked_up.append(sorted(typeoids))
        return await original(self, typeoids, timeout)

    monkeypatch.setattr(asyncpg.Connection, "_introspect_types", introspect)
    await postgres_store.migrate()
    at = 1_790_000_000.123456789
    kind = f"intake-{uuid.uuid4().hex[:12]}"  # the session's database is shared: jobs of its own
    accepted = await asyncio.gather(
        *(
            postgres_store.accept_delivery(
                Delivery("github", f"{kind}-{n}", "pull_request.opened"),
                NewJob(kind, f"payload-{n}", max_attempts=3 + n, run_at=at + n),
            )
            for n in range(3)
        )
    )
    ids = [a.job_id for a in accepted if a.job_id is not None]
    assert len(ids) == 3
    claimed = await postgres_store.claim("w", limit=0, lanes={kind: 3}, lease_seconds=60)
    assert sorted(j.id for j in claimed) == sorted(ids)
    assert {(j.payload, j.max_attempts, j.run_at) for j in claimed} == {
        (f"payload-{n}", 3 + n, at + n) for n in range(3)
    }
    assert (
        await asyncio.gather(*(postgres_store.complete(j.id, "w") for j in claimed)) == [True] * 3
    )
    assert not await postgres_store.complete(claimed[0].id, "w")  # done already
    assert looked_up == []


# --- Jobs queued by another process wake a listening worker (issue 20) --------------------------


async def test_a_job_another_process_queues_wakes_a_listening_worker_at_once(
    postgres_store: SQLStore, postgres_url: str
) -> None:
    """A worker in a process of its own (`arbiter worker`) claims what a web process queued
    when it is queued, not at its next poll: here the poll never comes within the test."""
    from bot.store import Delivery, Job, NewJob
    from bot.worker import Worker, WorkerOptions

    await postgres_store.migrate()
    web = SQLStore(postgres_url)  # the other process: it tells this worker nothing itself
    await web.open()
    ran: list[str] = []
    done = asyncio.Event()

    async def run(job: Job) -> None:  # (jobs other tests left in this database run too)
        ran.append(job.payload)
        if {"queued", "delivered"} <= set(ran):
            done.set()

    options = WorkerOptions(max_jobs=2, job_timeout=5, lease_seconds=5, poll_interval=3600)
    worker = Worker(postgres_store, run, options)
    worker.start()
    try:
        await asyncio.sleep(0.3)  # listening, and waiting out an hour's poll
        await web.enqueue(NewJob(kind="event", payload="queued", max_attempts=1))
        # A delivery takes intake's own path (one statement, its own connection).
        job = NewJob(kind="event", payload="delivered", max_attempts=1)
        await web.accept_delivery(Delivery("github", f"d-{uuid.uuid4()}", "push"), job)
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        await worker.stop()
        await web.close()
    assert ran.count("queued") == ran.count("delivered") == 1


async def test_listening_for_jobs_resumes_after_its_connection_is_ended(
    postgres_store: SQLStore, postgres_url: str
) -> None:
    """The server (or a proxy) ends the listening connection: the store listens again on a
    new one, says so once (what was queued meanwhile), and the next job wakes it again."""
    from bot.store import NewJob

    await postgres_store.migrate()
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    async def woken_after(seen: int) -> int:
        """The wakes so far, once there are more than `seen`."""
        async with asyncio.timeout(10):
            while wakes <= seen:
                await asyncio.sleep(0.01)
        return wakes

    def listening(conn: sa.Connection) -> list[int]:
        statement = (
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'LISTEN%arbiter_jobs%'"
        )
        return [int(pid) for pid in conn.execute(sa.text(statement)).scalars()]

    def terminate(pid: int) -> Callable[[sa.Connection], object]:
        statement = sa.text("SELECT pg_terminate_backend(:p, 5000)")
        return lambda conn: conn.execute(statement, {"p": pid})

    watching = asyncio.create_task(postgres_store.watch_jobs(wake))
    try:
        seen = await woken_after(0)  # listening: what was queued before is looked at once
        (pid,) = await postgres_store.run_sql(listening)
        await postgres_store.enqueue(NewJob(kind="event", payload="1", max_attempts=1))
        seen = await woken_after(seen)
        await postgres_store.run_sql(terminate(pid))
        seen = await woken_after(seen)  # listening on a new connection
        (new_pid,) = await postgres_store.run_sql(listening)
        assert new_pid != pid
        await postgres_store.enqueue(NewJob(kind="event", payload="2", max_attempts=1))
        await woken_after(seen)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert not await postgres_store.run_sql(listening)  # its connection closed with it


async def test_overflow_connections_are_reused_while_busy_and_closed_once_idle(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More calls at once than DATABASE_POOL_SIZE: the overflow connections they open serve the
    next burst too (SQLAlchemy's own pool closed each on its return, so every burst opened new
    server sessions), and are closed once they have been idle LINGER_SECONDS."""
    monkeypatch.setattr(sql_pool, "LINGER_SECONDS", 0.5)
    store = SQLStore(postgres_url, pool_size=1, max_overflow=3)
    await store.open()

    async def burst() -> set[int]:
        """Four calls holding a connection each at the same time; their servers' pids."""

        def held(conn: sa.Connection) -> int:
            pid = _backend_pid(conn)
            conn.execute(sa.text("SELECT pg_sleep(0.5)"))  # long enough to overlap, loaded or not
            return pid

        return set(await asyncio.gather(*(store.run_sql(held) for _ in range(4))))

    def live(pids: set[int]) -> Callable[[sa.Connection], set[int]]:
        def query(conn: sa.Connection) -> set[int]:
            rows = conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": list(pids)},
            )
            return {int(pid) for pid in rows.scalars()}

        return query

    try:
        first = await burst()
        assert len(first) == 4  # one pooled and three overflow connections
        usage = store.pool_usage()
        assert usage is not None and (usage.in_use, usage.idle, usage.limit) == (0, 4, 4)
        assert await burst() == first  # the same sessions again: none closed, none opened
        await asyncio.sleep(0.8)
        # Idle past the linger: the next call closes the overflow, keeps the pooled one.
        (kept,) = {await store.run_sql(_backend_pid)}
        assert kept in first
        other = SQLStore(postgres_url)
        await other.open()
        try:
            async with asyncio.timeout(10):  # a closed session's server process exits soon after
                while await other.run_sql(live(first)) != {kept}:
                    await asyncio.sleep(0.05)
        finally:
            await other.close()
        usage = store.pool_usage()
        assert usage is not None and (usage.in_use, usage.idle) == (0, 1)
    finally:
        await store.close()


def _holding(seconds: float, holds: asyncio.Event | None = None) -> Callable[[sa.Connection], int]:
    """A transaction that holds its connection `seconds` (telling `holds` once it has one)."""

    def held(conn: sa.Connection) -> int:
        pid = _backend_pid(conn)
        if holds is not None:
            holds.set()
        conn.execute(sa.text("SELECT pg_sleep(:s)"), {"s": seconds})
        return pid

    return held


async def test_a_call_that_finds_every_connection_out_waits_for_one_before_opening_one(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every connection busy, one more call waits up to GROW_AFTER_SECONDS for one to come back
    before it opens an overflow connection (a new server session): in a burst, one comes back
    within a round trip or two, sooner than a new one is opened."""
    monkeypatch.setattr(sql_pool, "GROW_AFTER_SECONDS", 5.0)
    store = SQLStore(postgres_url, pool_size=1, max_overflow=3)
    await store.open()
    try:
        pid = await store.run_sql(_backend_pid)
        holds = asyncio.Event()
        first = asyncio.create_task(store.run_sql(_holding(0.3, holds)))
        await holds.wait()
        second = await store.run_sql(_backend_pid)  # the pool's one connection is out
        assert await first == pid
        assert second == pid  # the same server session, back from `first`: none opened
        engine = store._db._async_engine
        assert engine is not None
        pool: Any = engine.pool
        assert pool.overflow() == 0  # the pool's one connection, and no other
    finally:
        await store.close()


async def test_a_transaction_takes_a_connection_statements_keep_before_opening_one(
    postgres_url: str,
) -> None:
    """`rows` keeps its connection between statements; a transaction that finds none idle in
    the pool is given that one back instead of opening an overflow connection."""
    store = SQLStore(postgres_url, pool_size=1, max_overflow=3)
    await store.open()
    try:
        (row,) = await store._db.rows(_PLAIN_PID, {"yes": True})
        assert len(store._db._held) == 1  # kept for the next statement
        assert await store.run_sql(_backend_pid) == row["pid"]  # the same session
        assert store._db._held == []
        engine = store._db._async_engine
        assert engine is not None
        pool: Any = engine.pool
        assert pool.overflow() == 0
        (again,) = await store._db.rows(_PLAIN_PID, {"yes": True})
        assert again["pid"] == row["pid"]
    finally:
        await store.close()


async def test_a_pool_made_anew_keeps_giving_the_kept_connection_back(postgres_url: str) -> None:
    """`engine.dispose()` replaces the pool with a new one of its class (SQLAlchemy's
    `recreate`): the new one still takes the connection `rows` keeps before opening another."""
    store = SQLStore(postgres_url, pool_size=1, max_overflow=3)
    await store.open()
    try:
        engine = store._db._async_engine
        assert engine is not None
        await engine.dispose()
        (row,) = await store._db.rows(_PLAIN_PID, {"yes": True})
        assert await store.run_sql(_backend_pid) == row["pid"]
        pool: Any = engine.pool
        assert pool.overflow() == 0
    finally:
        await store.close()


async def test_overflow_connections_are_opened_one_at_a_time(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls that keep every connection busy still make the pool grow, but one new connection at
    a time: a burst does not open the whole overflow at once, each new session costing both
    sides while a returned connection would have served sooner."""
    monkeypatch.setattr(sql_pool, "GROW_AFTER_SECONDS", 0.01)
    store = SQLStore(postgres_url, pool_size=1, max_overflow=3)
    await store.open()
    opening = [0, 0]  # now, at most

    def slow_connect(*_: Any) -> None:
        """A connection that takes 0.2 s to open (a TLS handshake away), counted."""
        opening[0] += 1
        opening[1] = max(opening)
        try:
            await_(asyncio.sleep(0.2))
        finally:
            opening[0] -= 1

    try:
        own = await store.run_sql(_backend_pid)
        engine = store._db._async_engine
        assert engine is not None
        sa.event.listen(engine.sync_engine, "connect", slow_connect)
        async with asyncio.timeout(20):
            pids = await asyncio.gather(*(store.run_sql(_holding(0.5)) for _ in range(4)))
        assert own in pids
        assert len(set(pids)) >= 3  # the pool grew while its connections stayed busy …
        assert opening[1] == 1  # … a connection at a time
    finally:
        await store.close()


async def test_calls_waiting_on_a_connection_that_fails_to_open_fail_too_and_none_hangs(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's one connection busy and the server refusing new sessions: the call opening
    one and those waiting for its turn all fail as StoreUnavailable (none waits on), and once
    the server takes sessions again the pool grows as before."""
    monkeypatch.setattr(sql_pool, "GROW_AFTER_SECONDS", 0.01)
    store = SQLStore(postgres_url, pool_size=1, max_overflow=3)
    await store.open()
    refusing = True

    def refused(*_: Any) -> None:
        if refusing:
            await_(asyncio.sleep(0.1))
            raise ConnectionRefusedError("the server takes no new session")

    try:
        await store.run_sql(_backend_pid)  # the pool's own, opened before the refusals
        engine = store._db._async_engine
        assert engine is not None
        sa.event.listen(engine.sync_engine, "connect", refused)
        holds = asyncio.Event()
        busy = asyncio.create_task(store.run_sql(_holding(1.0, holds)))
        await holds.wait()
        async with asyncio.timeout(10):
            outcomes = await asyncio.gather(
                *(store.run_sql(_backend_pid) for _ in range(3)), return_exceptions=True
            )
        assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
        refusing = False
        async with asyncio.timeout(10):
            pids = await asyncio.gather(*(store.run_sql(_holding(0.2)) for _ in range(2)))
        assert len(set(pids)) == 2  # grew again: nothing was left counted as opening
        await busy
    finally:
        await store.close()


async def test_a_claim_looks_jobs_up_by_key_however_many_finished_jobs_are_kept(
    postgres_store: SQLStore, postgres_url: str
) -> None:
    """The claim's candidates are chosen in a subquery; the jobs it updates are then found by
    primary key. `id IN (…) OR id IN (…)` (the shape with a lane) was planned as a scan of every
    row of the table, finished jobs included: 3.1 ms a claim with 20,000 kept."""
    await reset_sql_schema(postgres_store)  # no job of another test's in the way
    await postgres_store.migrate()
    kept = 5000

    def finished(conn: sa.Connection) -> None:
        conn.execute(
            sa.text(
                "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at,"
                " created_at, updated_at) SELECT 'kept-finished', '{}', 'done', 1, 4, 1, 1, 1"
                " FROM generate_series(1, :n)"
            ),
            {"n": kept},
        )

    await postgres_store.run_sql(finished)
    driver = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await driver.execute("ANALYZE jobs")
        statement, params = sql_queue._claim_bound(
            "postgresql", "w", 1, 30, 2e9, {"event": 2}, {"event": 3}
        )
        plain = sql_engine.PlainSQL.compile(statement, PGDialect_asyncpg())
        assert plain is not None
        plan = await driver.fetchval("EXPLAIN (FORMAT JSON) " + plain.sql, *plain.arguments(params))
        nodes, found = [json.loads(plan)[0]["Plan"]], []
        while nodes:
            node = nodes.pop()
            found.append((node["Node Type"], node.get("Relation Name"), node.get("Index Name")))
            nodes.extend(node.get("Plans", []))
        assert ("Seq Scan", "jobs", None) not in found, found
        assert ("Index Scan", "jobs", "pk_jobs") in found, found
        # … and it claims what it did.
        queued = await postgres_store.enqueue(NewJob(kind="event", payload="{}"))
        claimed = await postgres_store.claim("w", limit=1, lease_seconds=30, lanes={"event": 2})
        assert [job.id for job in claimed] == [queued.job_id]
    finally:
        await driver.execute("DELETE FROM jobs WHERE kind IN ('kept-finished', 'event')")
        await driver.close()
