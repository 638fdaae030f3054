"""The store contract runs against every backend: SQLite always, PostgreSQL when configured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store
from bot.store.sql import SQLStore
from tests.conftest import FakeClock, reset_sql_schema


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    else:
        url = request.getfixturevalue("postgres_url")
    sql = SQLStore(url, clock=clock)
    await sql.open()
    if request.param == "postgresql":
        await reset_sql_schema(sql)
    await sql.migrate()
    yield sql
    await sql.close()
