"""The MongoDB store's recovery records: the background passes' leases and runs, watermarks,
redelivery requests and the repositories seen, as plain functions over the database.

Every decision is one single-document compare-and-set (`update_one` whose filter holds the
condition), or an insert that the `_id` keeps single, as for the SQL store.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from bot.store.base import KnownRepository, PassRun, RedeliveryOutcome, RedeliveryRecord
from bot.store.mongo_records import upsert
from bot.store.mongo_schema import (
    DELIVERIES,
    JOBS,
    KNOWN_REPOSITORIES,
    RECOVERY_PASSES,
    REDELIVERIES,
    WATERMARKS,
    Doc,
    as_date,
)
from bot.store.recovery_records import (
    summary_text,
    to_known_repository,
    to_pass_run,
    to_redelivery,
)

Database = AsyncDatabase[Doc]
_FREE = {"holder": None, "lease_until": None}

# --- Passes --------------------------------------------------------------------------------------


async def acquire_pass(
    db: Database,
    name: str,
    holder: str,
    lease_seconds: float,
    last_finished_before: float,
    now: float,
) -> bool:
    passes = db[RECOVERY_PASSES]
    fresh = {"$setOnInsert": {**_FREE, "finished_at": None, "total": 0}}
    await upsert(lambda: passes.update_one({"_id": name}, fresh, upsert=True))
    taken = await passes.update_one(
        {
            "_id": name,
            "$and": [
                {"$or": [{"holder": None}, {"lease_until": {"$lt": now}}, {"holder": holder}]},
                {"$or": [{"finished_at": None}, {"finished_at": {"$lt": last_finished_before}}]},
            ],
        },
        {"$set": {"holder": holder, "lease_until": now + lease_seconds, "started_at": now}},
    )
    return taken.matched_count == 1


async def renew_pass(
    db: Database, name: str, holder: str, lease_seconds: float, now: float
) -> bool:
    result = await db[RECOVERY_PASSES].update_one(
        {"_id": name, "holder": holder}, {"$set": {"lease_until": now + lease_seconds}}
    )
    return result.matched_count == 1


async def finish_pass(
    db: Database, name: str, holder: str, summary: dict[str, Any], added: int, now: float
) -> bool:
    result = await db[RECOVERY_PASSES].update_one(
        {"_id": name, "holder": holder},
        {
            "$set": {**_FREE, "finished_at": now, "summary": summary_text(summary)},
            "$inc": {"total": added},
        },
    )
    return result.matched_count == 1


async def release_pass(db: Database, name: str, holder: str) -> None:
    await db[RECOVERY_PASSES].update_one({"_id": name, "holder": holder}, {"$set": _FREE})


async def pass_runs(db: Database) -> list[PassRun]:
    cursor = db[RECOVERY_PASSES].find({}).sort("_id", 1)
    return [to_pass_run(doc) async for doc in cursor]


# --- Watermarks ----------------------------------------------------------------------------------


async def get_watermark(db: Database, name: str) -> str | None:
    doc = await db[WATERMARKS].find_one({"_id": name}, {"value": 1})
    return None if doc is None else str(doc["value"])


async def set_watermark(db: Database, name: str, value: str, now: float) -> None:
    change = {"$set": {"value": value, "updated_at": now}}
    await upsert(lambda: db[WATERMARKS].update_one({"_id": name}, change, upsert=True))


# --- Deliveries seen, redelivery requests --------------------------------------------------------


async def seen_deliveries(
    db: Database, platform: str, delivery_ids: Collection[str], now: float
) -> set[str]:
    ids = sorted(set(delivery_ids))
    if not ids:
        return set()
    cursor = db[DELIVERIES].find(
        {"platform": platform, "delivery_id": {"$in": ids}, "expires_at": {"$gt": as_date(now)}},
        {"delivery_id": 1},
    )
    return {str(doc["delivery_id"]) async for doc in cursor}


def _redelivery_id(platform: str, guid: str) -> str:
    return f"{platform}:{guid}"


async def claim_redelivery(
    db: Database,
    key: tuple[str, str],
    attempt_id: int,
    source: str,
    max_attempts: int,
    stale_after: float,
    now: float,
) -> bool:
    platform, guid = key
    collection = db[REDELIVERIES]
    doc_id = _redelivery_id(platform, guid)
    try:
        await collection.insert_one(
            {
                "_id": doc_id,
                "platform": platform,
                "guid": guid,
                "source": source,
                "attempt_id": attempt_id,
                "attempts": 1,
                "state": "requested",
                "error": None,
                "requested_at": now,
                "created_at": now,
            }
        )
        return True
    except DuplicateKeyError:
        pass
    again = await collection.update_one(
        {
            "_id": doc_id,
            "attempts": {"$lt": max_attempts},
            "state": {"$ne": "refused"},
            "$or": [
                {"attempt_id": {"$lt": attempt_id}},  # a later attempt failed too
                {  # this one's request never got an answer
                    "attempt_id": attempt_id,
                    "state": "requested",
                    "requested_at": {"$lte": now - stale_after},
                },
            ],
        },
        {
            "$set": {
                "attempt_id": attempt_id,
                "state": "requested",
                "error": None,
                "requested_at": now,
                "source": source,
            },
            "$inc": {"attempts": 1},
        },
    )
    return again.matched_count == 1


async def settle_redelivery(
    db: Database,
    key: tuple[str, str],
    attempt_id: int,
    outcome: RedeliveryOutcome,
    error: str | None,
) -> None:
    change: Doc
    if outcome == "not_sent":  # the attempt does not count, and may be made at once
        change = {"$set": {"requested_at": 0.0, "error": error}, "$inc": {"attempts": -1}}
    else:
        change = {"$set": {"state": outcome, "error": error}}
    await db[REDELIVERIES].update_one(
        {"_id": _redelivery_id(*key), "attempt_id": attempt_id}, change
    )


async def redelivery_records(
    db: Database, platform: str | None, limit: int
) -> list[RedeliveryRecord]:
    query: Doc = {} if platform is None else {"platform": platform}
    cursor = db[REDELIVERIES].find(query).sort("requested_at", -1).limit(limit)
    return [to_redelivery(doc) async for doc in cursor]


async def purge_redeliveries(db: Database, max_age: float, now: float) -> int:
    result = await db[REDELIVERIES].delete_many({"created_at": {"$lt": now - max_age}})
    return int(result.deleted_count)


# --- Repositories seen ---------------------------------------------------------------------------


async def note_repositories(
    db: Database, platform: str, repos: Iterable[str], installation_id: int | None, now: float
) -> None:
    collection = db[KNOWN_REPOSITORIES]
    for repo in sorted(set(repos)):
        fields: Doc = {"platform": platform, "repo": repo, "last_seen_at": now}
        if installation_id is not None:
            fields["installation_id"] = installation_id
        change = {"$set": fields, "$min": {"first_seen_at": now}}
        write = functools.partial(
            collection.update_one, {"_id": f"{platform}:{repo}"}, change, upsert=True
        )
        await upsert(write)


async def forget_repository(db: Database, platform: str, repo: str) -> None:
    await db[KNOWN_REPOSITORIES].delete_one({"_id": f"{platform}:{repo}"})


async def known(db: Database, platform: str | None) -> list[KnownRepository]:
    query: Doc = {} if platform is None else {"platform": platform}
    cursor = db[KNOWN_REPOSITORIES].find(query).sort([("platform", 1), ("repo", 1)])
    return [to_known_repository(doc) async for doc in cursor]


async def open_job_keys(db: Database, keys: Collection[str]) -> set[str]:
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    cursor = db[JOBS].find(
        {"key": {"$in": wanted}, "state": {"$in": ["queued", "running"]}}, {"key": 1}
    )
    return {str(doc["key"]) async for doc in cursor}
