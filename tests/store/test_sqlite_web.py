"""The web-only process's store on SQLite (bot/store/sqlite_web.py): intake, health, metrics and
the schema check on plain sqlite3, the rest on the full SQL store, one database between them."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.store import Delivery, NewJob, StoreUnavailable, make_store, sqlite_plain
from bot.store.base import UsageRecord
from bot.store.revisions import scripted_head
from bot.store.sql import SQLStore
from bot.store.sqlite_plain import file_database
from bot.store.sqlite_web import DELEGATED, WebStore
from config.settings import load_settings
from tests.conftest import FakeClock


@pytest.fixture
async def both(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[WebStore, SQLStore]]:
    """A migrated database, a WebStore on it and a SQLStore (a worker's) on it."""
    url = f"sqlite+aiosqlite:///{tmp_path}/web.db"
    sql = SQLStore(url, clock=clock)
    await sql.open()
    await sql.migrate()
    database = file_database(url)
    assert database is not None
    web = WebStore(url, database, clock=clock)
    await web.open()
    try:
        yield web, sql
    finally:
        await web.close()
        await sql.close()


def _event(n: int) -> NewJob:
    return NewJob(kind="event", payload=f"payload-{n}", delivery_id=f"d{n}")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///relative/web.db",
        "sqlite+aiosqlite:///relative/web.db",
        "sqlite:////tmp/absolute/web.db",
        "sqlite+aiosqlite:///./dotted/../web.db",
    ],
)
def test_it_opens_the_file_sqlalchemy_opens(url: str) -> None:
    engine = sa.create_engine(sa.engine.make_url(url).set(drivername="sqlite"))
    (args,), _ = engine.dialect.create_connect_args(engine.url)
    assert file_database(url) == args


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:web.db?mode=memory&cache=shared&uri=true",
        "sqlite:///~/web.db",
        "sqlite:///web%20db.db",
        "postgresql+asyncpg://postgres@127.0.0.1/test",
    ],
)
def test_anything_but_a_plain_file_keeps_the_sql_store(url: str) -> None:
    assert file_database(url) is None
    if url.startswith("sqlite"):
        assert isinstance(make_store(load_settings(database_url=url), web_only=True), SQLStore)


def test_only_a_web_only_process_gets_it(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path}/web.db")
    assert isinstance(make_store(settings, web_only=True), WebStore)
    assert isinstance(make_store(settings), SQLStore)


async def test_deliveries_land_once_and_the_workers_store_claims_them(
    both: tuple[WebStore, SQLStore],
) -> None:
    web, sql = both
    # 30 deliveries, each sent twice at once: one job each, the rest are duplicates.
    results = await asyncio.gather(
        *(
            web.accept_delivery(Delivery("github", f"d{n % 30}", "pull_request.opened"), _event(n))
            for n in range(60)
        )
    )
    jobs = [r.job_id for r in results if r.job_id is not None]
    assert len(jobs) == 30 and len(set(jobs)) == 30
    assert sum(r.duplicate for r in results) == 30
    assert await sql.seen_delivery("github", "d7")
    claimed = await sql.claim("worker", limit=100, lease_seconds=30)
    assert sorted(j.id for j in claimed) == sorted(jobs)
    assert not web.full_store_open  # intake needed none of it


async def test_counts_and_spend_are_the_sql_stores(both: tuple[WebStore, SQLStore]) -> None:
    web, sql = both
    for n in range(5):
        await sql.enqueue(_event(n))
    claimed = await sql.claim("worker", limit=3, lease_seconds=30)
    await sql.complete(claimed[0].id, "worker")
    await sql.bury(claimed[1].id, "worker", error="no")
    await sql.record_usage(UsageRecord("review", 10, 5, 0.25))
    await sql.record_usage(UsageRecord("followup", 10, 5, 0.5))

    assert await web.job_counts() == await sql.job_counts()
    assert (await web.job_counts())["queued"] == 2
    assert await web.spent_since(0) == await sql.spent_since(0) == 0.75
    assert await web.spent_since(4e9) == 0.0
    await web.ping()
    assert not web.full_store_open


async def test_a_current_schema_needs_no_full_store_and_a_new_one_is_migrated(
    tmp_path: Path, both: tuple[WebStore, SQLStore]
) -> None:
    web, _ = both
    assert await web.migrate() == []
    status = await web.schema_status()
    assert status.current == status.head == scripted_head() and status.up_to_date
    assert not web.full_store_open

    url = f"sqlite:///{tmp_path}/fresh/new.db"
    database = file_database(url)
    assert database is not None
    fresh = WebStore(url, database)
    await fresh.open()
    try:
        assert (await fresh.schema_status()).current is None
        applied = await fresh.migrate()  # Alembic's work, through the full store
        assert applied[-1] == scripted_head()
        assert fresh.full_store_open
        assert (await fresh.schema_status()).up_to_date
    finally:
        await fresh.close()
    assert oct(os.stat(database).st_mode & 0o777) == "0o600"


async def test_everything_else_goes_to_the_full_store_on_the_same_database(
    both: tuple[WebStore, SQLStore],
) -> None:
    web, sql = both
    queued = await web.accept_delivery(Delivery("github", "d1", "pull_request.opened"), _event(1))
    assert not web.full_store_open
    listed = await web.list_jobs()
    assert [j.id for j in listed] == [queued.job_id]
    assert web.full_store_open
    keyed = await web.accept_delivery(
        Delivery("github", "d2", "issue_comment.created"),
        NewJob(kind="event", payload="p", key="same-key"),
    )
    assert keyed.job_id is not None
    assert {j.id for j in await sql.list_jobs()} == {queued.job_id, keyed.job_id}
    with pytest.raises(AttributeError):
        web.no_such_operation  # noqa: B018
    assert "list_jobs" in DELEGATED and "accept_delivery" not in DELEGATED


async def test_a_locked_database_is_unavailable_not_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, both: tuple[WebStore, SQLStore]
) -> None:
    monkeypatch.setattr(sqlite_plain, "BUSY_TIMEOUT_MS", 50)
    url = f"sqlite:///{tmp_path}/web.db"
    database = file_database(url)
    assert database is not None
    impatient = WebStore(url, database)
    await impatient.open()
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's writer
        with pytest.raises(StoreUnavailable, match="locked"):
            await impatient.accept_delivery(Delivery("github", "d9", "ping"), _event(9))
        holder.execute("ROLLBACK")
        accepted = await impatient.accept_delivery(Delivery("github", "d9", "ping"), _event(9))
        assert accepted.job_id is not None and not accepted.duplicate  # nothing half-written
    finally:
        holder.close()
        await impatient.close()


def _batch_allowed() -> bool:
    """Whether this kernel lets a thread make itself SCHED_BATCH (a sandbox may not)."""
    import threading

    allowed: list[bool] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
            allowed.append(True)
        except OSError:
            allowed.append(False)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return allowed == [True]


@pytest.mark.skipif(
    not hasattr(os, "SCHED_BATCH") or not _batch_allowed(),
    reason="SCHED_BATCH is Linux's, and this sandbox refuses it (the threads then run as before)",
)
async def test_intake_s_writer_and_the_checkpoints_yield_to_the_event_loop(
    both: tuple[WebStore, SQLStore],
) -> None:
    """The web store's writer and both stores' checkpointers run SCHED_BATCH; the SQL store's
    writer and reader (a review's every step waits on them) and the event loop's thread keep
    the default policy."""
    import threading

    web, sql = both
    before = os.sched_getscheduler(0)
    await web.accept_delivery(Delivery("github", "d1", "pull_request.opened"), _event(1))
    await sql.enqueue(_event(2))
    assert await sql.spent_since(0) == 0  # a read: the reader thread
    for _ in range(100):  # the checkpointers' threads start on their first turn (0.5 s)
        started = {t.name for t in threading.enumerate() if t.name.startswith("arbiter-sqlite")}
        if sum("checkpoint" in name for name in started) == 2:
            break
        await asyncio.sleep(0.05)
    web_writer = web._thread
    assert web_writer is not None
    web_writer_id = await web_writer.run(threading.get_native_id)
    policies = sorted(
        (t.name.rsplit("_", 1)[0], t.native_id == web_writer_id, os.sched_getscheduler(t.native_id))
        for t in threading.enumerate()
        if t.name.startswith("arbiter-sqlite") and t.native_id is not None
    )
    assert policies == [
        ("arbiter-sqlite", False, before),
        ("arbiter-sqlite", True, os.SCHED_BATCH),
        ("arbiter-sqlite-checkpoint", False, os.SCHED_BATCH),
        ("arbiter-sqlite-checkpoint", False, os.SCHED_BATCH),
        ("arbiter-sqlite-read", False, before),
    ]
    assert os.sched_getscheduler(0) == before != os.SCHED_BATCH
