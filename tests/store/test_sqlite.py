"""SQLite specifics: operations arriving together share one transaction, each in a savepoint."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from bot.store import Delivery, Job, NewJob, StoreUnavailable, sqlite_plain
from bot.store.base import ReviewStart, UsageRecord
from bot.store.sql import SQLStore
from bot.store.sql_records import output_per_call_statement
from tests.conftest import fixture_bytes


def _half_done(conn: sa.Connection) -> None:
    """Writes a usage row, then fails: nothing of it may be kept."""
    conn.execute(
        sa.text(
            "INSERT INTO usage (at, kind, input_tokens, output_tokens, cost_usd)"
            " VALUES (1, 'review', 1, 1, 1.0)"
        )
    )
    raise ValueError("changed my mind")


async def test_one_failing_operation_does_not_fail_those_sharing_its_transaction(
    sqlite_store: SQLStore,
) -> None:
    def broken(conn: sa.Connection) -> object:
        return conn.execute(sa.text("SELECT * FROM no_such_table")).all()

    results = await asyncio.gather(
        sqlite_store.enqueue(NewJob(kind="event", payload="a")),
        sqlite_store.run_sql(broken),
        sqlite_store.enqueue(NewJob(kind="event", payload="b")),
        return_exceptions=True,
    )
    assert isinstance(results[1], StoreUnavailable)
    assert "no such table" in str(results[1])
    assert sorted(j.payload for j in await sqlite_store.list_jobs()) == ["a", "b"]


async def test_a_failed_operation_leaves_nothing_behind(sqlite_store: SQLStore) -> None:
    results = await asyncio.gather(
        sqlite_store.run_sql(_half_done),
        sqlite_store.enqueue(NewJob(kind="event", payload="kept")),
        return_exceptions=True,
    )
    assert isinstance(results[0], ValueError)
    assert await sqlite_store.spent_since(0) == 0.0  # rolled back to its savepoint
    assert [j.payload for j in await sqlite_store.list_jobs()] == ["kept"]


async def test_many_concurrent_writes_all_land(sqlite_store: SQLStore) -> None:
    await asyncio.gather(
        *(sqlite_store.enqueue(NewJob(kind="event", payload=str(i))) for i in range(200))
    )
    assert (await sqlite_store.job_counts())["queued"] == 200


@pytest.mark.parametrize("alone", [True, False])
async def test_database_errors_surface_as_store_unavailable(
    sqlite_store: SQLStore, alone: bool
) -> None:
    def broken(conn: sa.Connection) -> object:
        return conn.execute(sa.text("SELECT nope FROM nowhere")).all()

    with pytest.raises(StoreUnavailable, match="sqlite store"):
        await sqlite_store._run(broken, alone=alone)


async def test_the_database_and_its_wal_files_are_private_whatever_the_umask(
    tmp_path: Path,
) -> None:
    # It holds reviewed code (the model cache) and every review: 0600, like the secrets.
    path = tmp_path / "data" / "arbiter.db"
    old_umask = os.umask(0o022)  # the usual one, under which files come out 0644
    try:
        store = SQLStore(f"sqlite+aiosqlite:///{path}")
        await store.open()
        try:
            await store.migrate()
            await store.enqueue(NewJob(kind="event", payload="a"))  # the WAL files exist now
            files = sorted(p.name for p in path.parent.iterdir())
            assert files == ["arbiter.db", "arbiter.db-shm", "arbiter.db-wal"]
            for name in files:
                assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
        finally:
            await store.close()
    finally:
        os.umask(old_umask)


async def test_a_database_left_readable_by_an_older_release_is_made_private(
    tmp_path: Path,
) -> None:
    path = tmp_path / "arbiter.db"
    first = SQLStore(f"sqlite+aiosqlite:///{path}")
    await first.open()
    await first.migrate()
    await first.close()
    for leftover in (path, path.with_name("arbiter.db-wal")):
        leftover.touch()
        leftover.chmod(0o644)
    again = SQLStore(f"sqlite+aiosqlite:///{path}")
    await again.open()
    try:
        await again.enqueue(NewJob(kind="event", payload="b"))
        for name in ("arbiter.db", "arbiter.db-wal", "arbiter.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        assert [j.payload for j in await again.list_jobs()] == ["b"]
    finally:
        await again.close()


async def test_the_wal_reaches_the_database_file_without_a_commit_waiting_for_it(
    tmp_path: Path,
) -> None:
    """Commits no longer checkpoint (wal_autocheckpoint=0 on the store's connections); the
    store's own checkpointer moves the WAL into the database file while it runs."""
    import sqlite3

    path = tmp_path / "arbiter.db"
    store = SQLStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    try:
        await store.migrate()
        autocheckpoint = await store.run_sql(
            lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        )
        assert autocheckpoint == 0
        await store.enqueue(NewJob(kind="event", payload="checkpointed", max_attempts=1))

        def in_the_file_alone() -> bool:
            # immutable=1 reads the database file as it is, ignoring the WAL.
            with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as conn:
                try:
                    row = conn.execute("SELECT count(*) FROM jobs WHERE payload = 'checkpointed'")
                except sqlite3.OperationalError:  # the schema is not in the file yet
                    return False
                return bool(row.fetchone()[0])

        for _ in range(200):  # the checkpointer runs twice a second
            if await asyncio.to_thread(in_the_file_alone):
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(in_the_file_alone)
    finally:
        await store.close()


async def test_a_review_s_lookups_do_not_wait_for_another_writer(
    sqlite_store: SQLStore, tmp_path: Path
) -> None:
    """Another process holds the write lock (a long transaction): the store's reads still
    answer, with what was committed before; its writes wait for the lock."""
    await sqlite_store.update_pr_state("github", "o/r", 7, last_reviewed_head="a" * 40)
    other = sqlite3.connect(tmp_path / "arbiter.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE pr_states SET last_reviewed_head = 'b' WHERE number = 7")
        async with asyncio.timeout(2):  # busy_timeout is 10 s: a read that waited would fail
            state = await sqlite_store.pr_state("github", "o/r", 7)
            assert state.last_reviewed_head == "a" * 40
            assert await sqlite_store.findings_for("github", "o/r", 7) == []
        write = asyncio.create_task(sqlite_store.enqueue(NewJob(kind="event", payload="x")))
        await asyncio.sleep(0.3)
        assert not write.done()  # the writer waits for the lock, as it must
        other.execute("COMMIT")
        await write
    finally:
        other.close()
    # Once committed, the other process's change is what a read sees.
    assert (await sqlite_store.pr_state("github", "o/r", 7)).last_reviewed_head == "b"


async def test_a_read_runs_without_a_transaction_around_it(sqlite_store: SQLStore) -> None:
    """A read is one statement: SQLite runs it as a transaction of its own, so the reading
    connection sends no BEGIN and COMMIT around it. A write still runs in one."""

    def in_transaction(conn: sa.Connection) -> bool:
        conn.execute(sa.text("SELECT 1"))
        dbapi = conn.connection.dbapi_connection
        assert isinstance(dbapi, sqlite3.Connection)
        return dbapi.in_transaction

    assert await sqlite_store._db.read(in_transaction) is False
    assert await sqlite_store.run_sql(in_transaction) is True
    await sqlite_store.update_pr_state("github", "o/r", 9, last_reviewed_head="c" * 40)
    # A read sees the write committed before it.
    assert (await sqlite_store.pr_state("github", "o/r", 9)).last_reviewed_head == "c" * 40


async def test_a_batch_with_a_failing_operation_keeps_the_others_once(
    sqlite_store: SQLStore,
) -> None:
    """Operations queued behind a commit in flight share the next transaction: one that fails
    after writing leaves nothing, and every other lands exactly once."""

    def slow(conn: sa.Connection) -> None:
        time.sleep(0.3)  # holds the writer: what comes meanwhile is written together

    def counted(conn: sa.Connection) -> int:
        return int(conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())

    first = asyncio.create_task(sqlite_store.run_sql(slow))
    await asyncio.sleep(0.05)
    results = await asyncio.gather(
        sqlite_store.enqueue(NewJob(kind="event", payload="a")),
        sqlite_store.run_sql(_half_done),
        sqlite_store.enqueue(NewJob(kind="event", payload="b")),
        sqlite_store.run_sql(counted),
        return_exceptions=True,
    )
    await first
    assert isinstance(results[1], ValueError)
    assert results[3] == 2  # the two enqueues before it, in the same transaction
    assert await sqlite_store.spent_since(0) == 0.0
    assert sorted(j.payload for j in await sqlite_store.list_jobs()) == ["a", "b"]


# --- Job payloads --------------------------------------------------------------------------------


def _id(job: Job) -> int:
    return job.id


def _stored_payloads(database: Path) -> list[tuple[str, int]]:
    """Each job's payload as SQLite holds it: its type and its size in bytes."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT typeof(payload), length(CAST(payload AS BLOB)) FROM jobs")
        return [(kind, int(size)) for kind, size in rows.fetchall()]


async def test_a_webhook_s_body_is_kept_compressed_and_every_path_reads_it_back_whole(
    tmp_path: Path,
) -> None:
    body = fixture_bytes("github/webhooks/pull_request/opened.payload.json").decode()
    assert len(body) > 4 * sqlite_plain.PACKED_FROM_CHARS
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/arbiter.db")
    await store.open()
    try:
        await store.migrate()
        # Intake's plain-sqlite3 batch, SQLAlchemy's keyed enqueue, and a short payload.
        await store.accept_delivery(
            Delivery("github", "d1", "pull_request.opened"),
            NewJob(kind="event", payload=body, delivery_id="d1"),
        )
        await store.enqueue(NewJob(kind="review", payload=body + " ", key="github:r#1"))
        await store.enqueue(NewJob(kind="event", payload="short"))
        stored = _stored_payloads(tmp_path / "arbiter.db")
        assert [kind for kind, _ in stored] == ["blob", "blob", "text"]
        assert all(size < len(body) / 4 for _, size in stored[:2])  # ~8× smaller
        claimed = await store.claim("worker", limit=10, lease_seconds=30)
        assert [job.payload for job in sorted(claimed, key=_id)] == [body, body + " ", "short"]
        listed = sorted(await store.list_jobs(), key=_id)
        assert [job.payload for job in listed] == [body, body + " ", "short"]
    finally:
        await store.close()


async def test_a_payload_an_older_release_wrote_as_text_is_read_as_it_is(
    sqlite_store: SQLStore, tmp_path: Path
) -> None:
    long_text = json.dumps({"x": "y" * (2 * sqlite_plain.PACKED_FROM_CHARS)})
    with sqlite3.connect(tmp_path / "arbiter.db") as conn:
        conn.execute(
            "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, created_at,"
            " updated_at) VALUES ('event', ?, 'queued', 0, 3, 0, 0, 0)",
            (long_text,),
        )
    (job,) = await sqlite_store.claim("worker", limit=10, lease_seconds=30)
    assert job.payload == long_text


async def test_an_unreadable_payload_fails_its_own_job_not_every_claim(
    sqlite_store: SQLStore, tmp_path: Path
) -> None:
    await sqlite_store.enqueue(NewJob(kind="event", payload="before"))
    with sqlite3.connect(tmp_path / "arbiter.db") as conn:
        conn.execute(
            "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, created_at,"
            " updated_at) VALUES ('event', ?, 'queued', 0, 3, 0, 0, 0)",
            (b"not an lz4 frame" * 200,),
        )
    await sqlite_store.enqueue(NewJob(kind="event", payload="after"))
    claimed = sorted(await sqlite_store.claim("worker", limit=10, lease_seconds=30), key=_id)
    assert [job.payload[:22] for job in claimed] == ["before", "unreadable job payload", "after"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(claimed[1].payload)  # so the job fails on it, and is parked with the reason


async def test_a_model_s_recent_reviews_are_read_through_an_index(
    sqlite_store: SQLStore, tmp_path: Path
) -> None:
    """Every review reads its model's latest reviews; without an index of its own that read
    scans the reviews back from the newest, all of them for a model used rarely or not yet."""
    statement = output_per_call_statement(100).params(model="a-model-never-used")
    sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with sqlite3.connect(tmp_path / "arbiter.db") as conn:
        plan = " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
    assert "USING INDEX ix_reviews_model_id" in plan, plan
    assert await sqlite_store.output_per_call("a-model-never-used") == []


async def test_the_store_s_threads_keep_their_connections_across_transactions(
    sqlite_store: SQLStore,
) -> None:
    """Each SQLite thread keeps one connection: a transaction is a BEGIN and a COMMIT on it,
    not a checkout from the pool and a reset on the way back."""
    await sqlite_store.pr_state("github", "o/r", 1)  # the reader's connection, made once
    engines = [sqlite_store._db._sqlite_engine]
    if sqlite_store._db._reader is not None:
        engines.append(sqlite_store._db._reader.engine)
    checkouts: list[object] = []
    for engine in engines:
        assert engine is not None
        sa.event.listen(engine, "checkout", lambda *args: checkouts.append(args))
    for n in range(10):
        await sqlite_store.enqueue(NewJob(kind="event", payload=f"p{n}", max_attempts=1))
        await sqlite_store.pr_state("github", "o/r", n)
        await sqlite_store._run(lambda conn: conn.execute(sa.text("SELECT 1")).scalar())
    await asyncio.gather(*(sqlite_store.record_usage(_usage(n)) for n in range(10)))
    assert checkouts == []
    assert await sqlite_store.spent_since(0) == pytest.approx(4.5)


def _usage(n: int) -> UsageRecord:
    return UsageRecord("review", 1, 1, n / 10)


async def test_a_locked_database_fails_the_call_and_the_next_one_goes_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Another process holding the write lock past the busy timeout fails the call as
    StoreUnavailable; the thread's kept connection is left in no transaction, so the next call
    (alone or batched) writes once the lock is free."""
    monkeypatch.setattr(sqlite_plain, "BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "arbiter.db"
    store = SQLStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        await store.migrate()
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.enqueue(NewJob(kind="event", payload="refused", max_attempts=1))
        with pytest.raises(StoreUnavailable, match="locked"):
            await store._run(_half_done, alone=True)
        holder.execute("ROLLBACK")
        job = await store.enqueue(NewJob(kind="event", payload="taken", max_attempts=1))
        await asyncio.gather(store.record_usage(_usage(1)), store.record_usage(_usage(2)))
        assert job.job_id is not None
        assert [j.payload for j in await store.list_jobs()] == ["taken"]
        assert await store.spent_since(0) == pytest.approx(0.3)
    finally:
        holder.close()
        await store.close()


async def test_a_connection_the_driver_gave_up_on_is_replaced(sqlite_store: SQLStore) -> None:
    def lose(conn: sa.Connection) -> None:
        conn.invalidate()  # as SQLAlchemy does when the driver reports the connection gone
        raise ValueError("lost")

    with pytest.raises(ValueError, match="lost"):
        await sqlite_store._run(lose, alone=True)
    with pytest.raises(ValueError, match="lost"):
        await sqlite_store._run(lose)
    job = await sqlite_store.enqueue(NewJob(kind="event", payload="after", max_attempts=1))
    assert job.job_id is not None
    assert [j.payload for j in await sqlite_store.list_jobs()] == ["after"]


async def test_the_wal_left_by_a_burst_is_cut_back_once_checkpointed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A burst no checkpoint could finish within grows the WAL; once one has, the next write
    starts the WAL over and cuts its file back to WAL_KEPT_BYTES (SQLite keeps it as large as
    it ever grew otherwise)."""
    monkeypatch.setattr(sqlite_plain, "WAL_KEPT_BYTES", 64 * 1024)
    path = tmp_path / "arbiter.db"
    wal = tmp_path / "arbiter.db-wal"
    store = SQLStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    try:
        await store.migrate()
        big = os.urandom(4096).hex()  # 8 KB that LZ4 cannot shrink

        def burst(conn: sqlite3.Connection) -> None:
            for n in range(200):
                conn.execute(
                    "INSERT INTO llm_cache (key, value, created_at, expires_at)"
                    " VALUES (?, ?, 0, 4e9)",
                    (f"k{n}", big),
                )

        await store._db.in_sqlite(burst)  # one transaction: ~1.6 MB of WAL
        assert wal.stat().st_size > 1024 * 1024
        for _ in range(200):  # the checkpointer runs twice a second
            await asyncio.sleep(0.05)
            await store.enqueue(NewJob(kind="event", payload="after", max_attempts=1))
            if wal.stat().st_size <= 64 * 1024:
                break
        assert wal.stat().st_size <= 64 * 1024
        assert len(await store.list_jobs()) >= 1
    finally:
        await store.close()


# --- Plain statements ----------------------------------------------------------------------------


async def test_a_review_s_store_work_reaches_the_driver_without_sqlalchemy_s_execution(
    sqlite_store: SQLStore,
) -> None:
    """Every statement a review runs (its claim, reads, record, cache, usage, state, completion,
    and the keyed enqueue that queues it) goes to sqlite3 as it is, compiled once: SQLAlchemy
    neither executes it nor begins the transaction around it (a retry's are SQLAlchemy's). What
    comes back is what SQLAlchemy gave: booleans as booleans, the payload unpacked, rows by
    column name."""
    store = sqlite_store
    await store.pr_state("github", "o/r", 1)  # the reading connection, made on first use
    await store.claim("w1", limit=1, lease_seconds=30)  # the first claim sweeps leases
    seen: list[str] = []
    db = store._db
    engines = [db._sqlite_engine, db._reader.engine if db._reader is not None else None]
    for engine in engines:
        assert engine is not None
        sa.event.listen(engine, "before_cursor_execute", lambda *a: seen.append(str(a[2])))
        sa.event.listen(engine, "begin", lambda *a: seen.append("BEGIN (SQLAlchemy)"))
    body = json.dumps({"pull": 1, "text": "x" * 5000})  # packed: long enough for LZ4
    queued = await store.enqueue(
        NewJob(kind="review", payload=body, key="github:o/r#1", max_attempts=3)
    )
    again = await store.enqueue(
        NewJob(kind="review", payload=body, key="github:o/r#1", max_attempts=3)
    )
    assert again.replaced == (queued.job_id,)
    (job,) = await store.claim("w1", limit=1, lease_seconds=30)
    assert (job.id, job.payload, job.attempts) == (again.job_id, body, 1)
    await store.update_pr_state("github", "o/r", 1, full_requested=True)
    state = await store.pr_state("github", "o/r", 1)
    assert state.full_requested is True and state.paused is False
    assert await store.findings_for("github", "o/r", 1) == []
    assert await store.cache_get("k") is None
    record = await store.start_review(
        ReviewStart("github", "o/r", 1, "a" * 40, "full", job_id=job.id)
    )
    assert (record.job_id, record.head_sha, record.resumed) == (job.id, "a" * 40, False)
    await asyncio.gather(
        store.cache_put("k", "answer", ttl_seconds=60),
        store.record_usage(UsageRecord("review", 10, 2, 0.5, review_id=record.id)),
        store.update_review(record.id, state="done", outcome="success", calls=1),
        store.update_pr_state("github", "o/r", 1, last_reviewed_head="a" * 40),
    )
    assert await store.cache_get("k") == "answer"
    assert await store.complete(job.id, "w1") is True
    assert await store.complete(job.id, "w1") is False  # done already: not the worker's now
    assert seen == [], seen
    reviewed = await store.get_review(record.id)
    assert reviewed is not None and (reviewed.state, reviewed.outcome) == ("done", "success")
    assert (await store.pr_state("github", "o/r", 1)).last_reviewed_head == "a" * 40
    assert await store.spent_since(0) == pytest.approx(0.5)
    assert {j.id: j.state for j in await store.list_jobs()} == {
        queued.job_id: "cancelled",
        again.job_id: "done",
    }
    assert db._sqlite_engine is not None
    assert _stored_payloads(Path(str(db._sqlite_engine.url.database)))[0][0] == "blob"
    # A retry of the job takes its review back (through SQLAlchemy: a retry is rare).
    resumed = await store.start_review(
        ReviewStart("github", "o/r", 1, "a" * 40, "full", job_id=job.id)
    )
    assert (resumed.id, resumed.resumed) == (record.id, True)


async def test_a_plain_write_refused_by_the_database_fails_alone_as_sqlalchemy_raises_it(
    sqlite_store: SQLStore,
) -> None:
    """A plain statement the database refuses raises SQLAlchemy's error (its class by the
    driver's), not sqlite3's; the writes sharing its transaction land once, and the refused one
    leaves nothing."""
    from bot.store.schema import usage

    db = sqlite_store._db
    insert = sa.insert(usage).values(
        at=sa.bindparam("at", type_=sa.Float),
        kind=sa.bindparam("kind", type_=sa.String),
        input_tokens=sa.bindparam("tokens", type_=sa.Integer),
        output_tokens=sa.bindparam("tokens", type_=sa.Integer),
        cost_usd=sa.bindparam("cost", type_=sa.Float),
    )

    def row(kind: str | None, cost: float) -> dict[str, object]:
        return {"at": 1.0, "kind": kind, "tokens": 1, "cost": cost}

    def slow(conn: sa.Connection) -> None:
        time.sleep(0.3)  # holds the writer: what comes meanwhile is written together

    first = asyncio.create_task(sqlite_store.run_sql(slow))
    await asyncio.sleep(0.05)
    results = await asyncio.gather(
        db.rows(insert, row("review", 0.25), write=True),
        db.rows(insert, row(None, 100.0), write=True),  # kind is NOT NULL
        db.rows(insert, row("review", 0.5), write=True),
        return_exceptions=True,
    )
    await first
    assert results[0] == [] and results[2] == []
    assert isinstance(results[1], sa.exc.IntegrityError)
    assert isinstance(results[1].orig, sqlite3.IntegrityError)
    assert await sqlite_store.spent_since(0) == pytest.approx(0.75)
    with pytest.raises(sa.exc.IntegrityError):  # alone, too
        await db.rows(insert, row(None, 100.0), write=True)
    assert await sqlite_store.spent_since(0) == pytest.approx(0.75)
