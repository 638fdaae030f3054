"""The store contract runs against every backend: SQLite always, PostgreSQL when configured,
and MongoDB: the server of ARBITER_TEST_MONGODB_URL when it is set, otherwise a stand-in
(mongomock behind a shim, see `mongo_standin.py` for what it does and does not prove), whose
test ids say `mongodb-standin(mongomock)`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from pymongo import AsyncMongoClient

from bot.store import Store
from bot.store.mongo import MongoStore
from bot.store.sql import SQLStore
from tests.conftest import FakeClock, reset_sql_schema, run_in_own_loop
from tests.store.mongo_standin import StandInClient

MONGODB_ENV = "ARBITER_TEST_MONGODB_URL"
STANDIN_ID = "mongodb-standin(mongomock)"
T = TypeVar("T")


def mongodb_param() -> Any:
    """The MongoDB backend's parameter: the real server when configured, else the stand-in."""
    if os.environ.get(MONGODB_ENV):
        return pytest.param("mongodb", id="mongodb")
    return pytest.param("mongodb-standin", id=STANDIN_ID)


class Backend:
    """Opens stores on one database: each a separate store object with its own connections,
    as separate processes would have. The first one opened is the test's `store`."""

    def __init__(self, name: str, make: Callable[..., Store]) -> None:
        self.name = name
        self._make = make
        self.opened: list[Store] = []

    async def open(self, **options: Any) -> Store:
        """Another store on the same database; `options` go to its constructor."""
        store = self._make(**options)
        await store.open()
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for store in reversed(self.opened):
            await store.close()


def _run_alone(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop and thread of its own: this session fixture is first requested
    by the async `backend` fixture, inside its running loop."""
    return run_in_own_loop(coroutine)


@pytest.fixture(scope="session")
def mongodb_url() -> Iterator[tuple[str, str]]:
    """A database of its own for this test run on the server of ARBITER_TEST_MONGODB_URL;
    fails, loudly, when the variable is set and the server does not answer."""
    base = os.environ[MONGODB_ENV]
    name = f"arbiter_test_{uuid.uuid4().hex[:12]}"

    async def ping() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            base, serverSelectionTimeoutMS=5000
        )
        try:
            await client[name].command("ping")
        finally:
            await client.close()

    try:
        _run_alone(ping())
    except Exception as exc:
        pytest.fail(f"{MONGODB_ENV} is set but MongoDB is unreachable: {exc}", pytrace=False)
    yield base, name
    _run_alone(_drop_database(base, name))


async def _drop_database(url: str, name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        await client.drop_database(name)
    finally:
        await client.close()


@pytest.fixture(params=["sqlite", "postgresql", mongodb_param()])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Backend]:
    name: str = request.param
    if name in ("sqlite", "postgresql"):
        if name == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
        else:
            url = request.getfixturevalue("postgres_url")
        backend = Backend(name, lambda **options: SQLStore(url, clock=clock, **options))
        sql = cast(SQLStore, await backend.open())
        if name == "postgresql":
            await reset_sql_schema(sql)
        await sql.migrate()
    elif name == "mongodb":
        base, database = request.getfixturevalue("mongodb_url")
        await _drop_database(base, database)  # each test starts from an empty database
        backend = Backend(
            name,
            lambda **options: MongoStore(base, database=database, clock=clock, **options),
        )
        await backend.open()  # creates the indexes
    else:
        # One in-memory server per test, shared by every store the test opens.
        server = cast("AsyncMongoClient[dict[str, Any]]", StandInClient())
        backend = Backend(
            name,
            lambda **options: MongoStore(
                "mongodb://stand-in/arbiter", client=server, clock=clock, **options
            ),
        )
        await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return backend.opened[0]
