"""A stand-in for a MongoDB server: mongomock-motor, shaped like PyMongo's `AsyncMongoClient`.

No MongoDB server can be installed where these tests run, so without ARBITER_TEST_MONGODB_URL
the contract suite runs the Mongo store against mongomock (an in-memory imitation of the
server) through this shim, and the test ids say `mongodb-standin(mongomock)`.

What it proves: the store's queries, updates and indexes (unique, partial unique), and its
multi-step logic, including interleavings when several stores share one stand-in: each
operation first yields to the event loop a few times (0 to 3, from a seeded random sequence:
the same on every run), as a round trip of varying latency would, so other tasks run between
the steps of a multi-step operation and operations finish in another order than they began.

What it does not prove: the server's TTL monitor deleting documents (the store's reads ignore
expired ones by their date, and that is what the tests check); real parallelism (mongomock runs
each operation to completion inside the event loop, so two operations never overlap); network
failures; anything where mongomock and a real server differ (e.g. the store's fallback for a
server that does not name the key of a duplicate). Set ARBITER_TEST_MONGODB_URL to run the same
suite against a real server.

Apart from those yields, the shim only adapts the surface: in PyMongo's async API `aggregate()`
and `list_indexes()` are coroutines that return a cursor, and `close()` is a coroutine; in
mongomock-motor (Motor's shape) they are not.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
from collections.abc import Awaitable, Callable
from typing import Any

from mongomock_motor import AsyncMongoMockClient


class _Cursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def __aiter__(self) -> Any:
        return self._cursor.__aiter__()

    async def to_list(self, length: int | None = None) -> list[Any]:
        items: list[Any] = await self._cursor.to_list(length)
        return items


class StandInCollection:
    def __init__(self, collection: Any, latency: Callable[[], Awaitable[None]]) -> None:
        self._collection = collection
        self._latency = latency

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        async def round_trip(*args: Any, **kwargs: Any) -> Any:
            await self._latency()  # mongomock never yields; a server round trip would
            return await attribute(*args, **kwargs)

        return round_trip

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find(*args, **kwargs)

    async def aggregate(self, pipeline: list[Any], *args: Any, **kwargs: Any) -> _Cursor:
        await self._latency()
        return _Cursor(self._collection.aggregate(pipeline, *args, **kwargs))

    async def list_indexes(self, *args: Any, **kwargs: Any) -> _Cursor:
        await self._latency()
        return _Cursor(self._collection.list_indexes(*args, **kwargs))


class StandInDatabase:
    def __init__(self, database: Any, latency: Callable[[], Awaitable[None]]) -> None:
        self._database = database
        self._latency = latency

    def __getitem__(self, name: str) -> StandInCollection:
        return StandInCollection(self._database[name], self._latency)

    def get_collection(self, name: str) -> StandInCollection:
        return self[name]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)


class StandInClient:
    """What the Mongo store uses of `AsyncMongoClient`, over one in-memory mongomock server."""

    def __init__(self, seed: int = 9) -> None:
        self._client: Any = AsyncMongoMockClient(tz_aware=True)
        self._random = random.Random(seed)

    async def _latency(self) -> None:
        for _ in range(self._random.randint(0, 3)):
            await asyncio.sleep(0)

    def __getitem__(self, name: str) -> StandInDatabase:
        return StandInDatabase(self._client[name], self._latency)

    def get_database(self, name: str) -> StandInDatabase:
        return self[name]

    async def close(self) -> None:
        return None
