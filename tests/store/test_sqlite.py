"""SQLite specifics: operations arriving together share one transaction, each in a savepoint."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from bot.store import NewJob, StoreUnavailable
from bot.store.sql import SQLStore


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
    def half_done(conn: sa.Connection) -> None:
        conn.execute(
            sa.text(
                "INSERT INTO usage (at, kind, input_tokens, output_tokens, cost_usd)"
                " VALUES (1, 'review', 1, 1, 1.0)"
            )
        )
        raise ValueError("changed my mind")

    results = await asyncio.gather(
        sqlite_store.run_sql(half_done),
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
