"""What only the MongoDB store has: its indexes, recovery of a half-written delivery, delivery
records that expire by date, and how it is chosen and connected. Runs on the server of
ARBITER_TEST_MONGODB_URL when set, otherwise on the stand-in (see `mongo_standin.py`)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient

from bot.store import Delivery, NewJob, StoreUnavailable, make_store
from bot.store.mongo import MongoStore
from bot.store.mongo_schema import DELIVERIES, HEAD, INDEXES, JOBS, as_date
from config.settings import load_settings
from tests.conftest import FakeClock
from tests.store.conftest import Backend, mongodb_param

on_mongodb = pytest.mark.parametrize("backend", [mongodb_param()], indirect=True)


def _job(payload: str = "{}") -> NewJob:
    return NewJob(kind="event", payload=payload)


def _mongo(backend: Backend) -> MongoStore:
    store = backend.opened[0]
    assert isinstance(store, MongoStore)
    return store


@on_mongodb
async def test_every_index_is_created_at_start(backend: Backend) -> None:
    store = _mongo(backend)
    for collection, specs in INDEXES.items():
        cursor = await store.database[collection].list_indexes()
        present = {index["name"]: index async for index in cursor}
        for spec in specs:
            index = present[spec.name]
            assert list(dict(index["key"]).items()) == spec.keys
            assert bool(index.get("unique")) == bool(spec.options.get("unique"))
            assert index.get("expireAfterSeconds") == spec.options.get("expireAfterSeconds")
            partial = spec.options.get("partialFilterExpression")
            assert index.get("partialFilterExpression") == partial
    ttl = {
        (c, s.name)
        for c, specs in INDEXES.items()
        for s in specs
        if "expireAfterSeconds" in s.options
    }
    assert ttl == {("deliveries", "delivery_ttl"), ("llm_cache", "cache_ttl")}


@on_mongodb
async def test_a_missing_index_puts_the_schema_behind_until_migrate(backend: Backend) -> None:
    store = _mongo(backend)
    assert (await store.schema_status()).current == HEAD
    await store.database[JOBS].drop_index("job_claim")
    status = await store.schema_status()
    assert not status.up_to_date and status.current == "partial (missing jobs.job_claim)"
    assert await store.migrate() == ["jobs.job_claim"]
    assert (await store.schema_status()).up_to_date
    assert await store.migrate() == []


@on_mongodb
async def test_a_delivery_whose_job_was_never_written_gets_it_when_delivered_again(
    backend: Backend, clock: FakeClock
) -> None:
    """The process died between recording the delivery and writing its job (nothing was
    answered, so the platform delivers again)."""
    store = _mongo(backend)
    await store.database[DELIVERIES].insert_one(
        {
            "platform": "github",
            "delivery_id": "half",
            "event": "pull_request.opened",
            "received_at": clock.now,
            "expires_at": as_date(clock.now + 3600),
            "job_id": 41,
        }
    )
    again = await store.accept_delivery(Delivery("github", "half", "x"), _job("the payload"))
    assert again.duplicate
    job = await store.get_job(41)
    assert job is not None and (job.state, job.payload) == ("queued", "the payload")
    assert await store.accept_delivery(Delivery("github", "half", "x"), _job()) == again
    assert [j.id for j in await store.list_jobs()] == [41]


@on_mongodb
async def test_a_delivery_record_is_forgotten_when_its_date_passes(
    backend: Backend, clock: FakeClock
) -> None:
    """Deliveries expire by TTL; until the server's TTL monitor deletes them, reads ignore
    them, and the same delivery id is accepted as new."""
    ttl_store = await backend.open(delivery_ttl_seconds=60)
    assert isinstance(ttl_store, MongoStore)
    first = await ttl_store.accept_delivery(Delivery("gitlab", "d", "x"), _job())
    assert await ttl_store.seen_delivery("gitlab", "d")
    clock.advance(61)
    assert not await ttl_store.seen_delivery("gitlab", "d")
    again = await ttl_store.accept_delivery(Delivery("gitlab", "d", "x"), _job())
    assert not again.duplicate and again.job_id not in (None, first.job_id)
    assert await ttl_store.seen_delivery("gitlab", "d")
    assert await ttl_store.database[DELIVERIES].count_documents({}) == 1


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("mongodb://db.internal:27017/reviews", "reviews"),
        ("mongodb+srv://u:p@cluster0.example.net/arbiter_prod?retryWrites=true", "arbiter_prod"),
        ("mongodb://db.internal:27017", "arbiter"),
    ],
)
def test_mongodb_urls_make_a_mongo_store(url: str, database: str) -> None:
    store = make_store(load_settings(database_url=url))  # not opened: nothing resolved yet
    assert isinstance(store, MongoStore) and store.backend == "mongodb"
    assert store.database_name == database


async def test_an_unreachable_server_is_reported_as_unavailable() -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:9/arbiter", serverSelectionTimeoutMS=200
    )
    store = MongoStore("mongodb://127.0.0.1:9/arbiter", client=client)
    try:
        with pytest.raises(StoreUnavailable, match="mongodb store"):
            await store.open()
    finally:
        await client.close()


def test_every_call_that_reaches_the_server_says_unavailable_when_it_cannot() -> None:
    """Each of the Store's calls on MongoDB turns a lost connection into StoreUnavailable (as
    the SQL store does), so callers wait an outage out: only those that reach no server, or
    report it their own way, are left as they are."""
    import inspect

    from bot.store.base import Store

    own_way = {"open", "close", "watch_jobs"}  # open says it itself; the others ask nothing
    calls = [name for name, f in vars(Store).items() if inspect.iscoroutinefunction(f)]
    assert len(calls) > 50
    unguarded = [n for n in calls if not hasattr(getattr(MongoStore, n), "__wrapped__")]
    assert sorted(unguarded) == sorted(own_way)
