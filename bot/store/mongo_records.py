"""The MongoDB store's records: reviews, findings, pull-request state, usage, exchanges,
installations and the operator views, as plain functions over the database.

Each write is one single-document operation, or inserts that a unique index keeps single
(a finding per fingerprint and pull request, a review per job, an exchange per delivery).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from bot.store.base import (
    EXCHANGE_UPDATABLE,
    REVIEW_UPDATABLE,
    ExchangeRecord,
    ExchangeStart,
    FindingRecord,
    Installation,
    InstallationState,
    PullRequestState,
    RepoActivity,
    ReviewActivity,
    ReviewQuery,
    ReviewRecord,
    ReviewStart,
    UsageRecord,
)
from bot.store.mongo_schema import (
    COUNTERS,
    EXCHANGES,
    FINDINGS,
    INSTALLATIONS,
    PR_STATES,
    REVIEWS,
    USAGE,
    Doc,
    installation_id_of,
    pr_state_id,
)
from bot.store.records import (
    check_updatable,
    day_totals,
    finding_row,
    new_exchange_row,
    new_review_row,
    to_exchange,
    to_finding,
    to_installation,
    to_pr_state,
    to_review,
    usage_row,
)

Database = AsyncDatabase[Doc]
T = TypeVar("T")
DUPLICATE_KEY = 11000


async def next_ids(db: Database, counter: str, count: int = 1) -> range:
    """`count` fresh integer ids, increasing in the order they were asked for."""
    doc = await db[COUNTERS].find_one_and_update(
        {"_id": counter},
        {"$inc": {"seq": count}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:  # pragma: no cover - an upsert returning AFTER always has a document
        raise RuntimeError(f"counter {counter!r} was not created")
    last = int(doc["seq"])
    return range(last - count + 1, last + 1)


async def upsert(write: Callable[[], Awaitable[T]]) -> T:
    """An upsert racing another upsert of the same _id can fail with a duplicate key on
    servers that do not retry it themselves; the second try finds the document and updates."""
    try:
        return await write()
    except DuplicateKeyError:
        return await write()


def _only(fields: dict[str, Any]) -> Doc:
    """The filters that were given (None means "any")."""
    return {name: value for name, value in fields.items() if value is not None}


# --- Reviews -------------------------------------------------------------------------------------


async def start_review(db: Database, start: ReviewStart, now: float) -> ReviewRecord:
    if start.job_id is not None:
        found = await _resume_review(db, start)
        if found is not None:
            return found
    (review_id,) = await next_ids(db, REVIEWS)
    document: Doc = {"_id": review_id, **new_review_row(start, now)}
    if start.job_id is not None:  # absent, not null: the unique index covers set ones only
        document["job_id"] = start.job_id
    try:
        await db[REVIEWS].insert_one(document)
    except DuplicateKeyError:
        # Another worker started this job's review at the same moment: that one it is.
        found = await _resume_review(db, start)
        if found is None:
            raise
        return found
    return to_review(document, "_id")


async def _resume_review(db: Database, start: ReviewStart) -> ReviewRecord | None:
    doc = await db[REVIEWS].find_one_and_update(
        {"job_id": start.job_id},
        {
            "$set": {
                "head_sha": start.head_sha,
                "base_sha": start.base_sha,
                "mode": start.mode,
                "state": "running",
            }
        },
        return_document=ReturnDocument.AFTER,
    )
    return replace(to_review(doc, "_id"), resumed=True) if doc is not None else None


async def update_review(db: Database, review_id: int, changes: dict[str, Any]) -> None:
    check_updatable(changes, REVIEW_UPDATABLE, "review")
    if changes:
        await db[REVIEWS].update_one({"_id": review_id}, {"$set": changes})


async def get_review(db: Database, review_id: int) -> ReviewRecord | None:
    doc = await db[REVIEWS].find_one({"_id": review_id})
    return to_review(doc, "_id") if doc is not None else None


async def list_reviews(db: Database, query: Doc, limit: int) -> list[ReviewRecord]:
    cursor = db[REVIEWS].find(_only(query)).sort("_id", -1).limit(limit)
    return [to_review(doc, "_id") async for doc in cursor]


async def output_per_call(db: Database, model: str, limit: int) -> list[int]:
    cursor = (
        db[REVIEWS]
        .find({"model": model, "calls": {"$gt": 0}}, {"output_tokens": 1, "calls": 1})
        .sort("_id", -1)
        .limit(limit)
    )
    return [int(doc.get("output_tokens") or 0) // int(doc["calls"]) async for doc in cursor]


async def find_reviews(db: Database, query: ReviewQuery) -> list[ReviewRecord]:
    where = _only({"platform": query.platform, "repo": query.repo, "outcome": query.outcome})
    if query.since is not None:
        where["created_at"] = {"$gte": query.since}
    if query.before_id is not None:
        where["_id"] = {"$lt": query.before_id}
    cursor = db[REVIEWS].find(where).sort("_id", -1).limit(query.limit)
    return [to_review(doc, "_id") async for doc in cursor]


# --- Findings ------------------------------------------------------------------------------------


async def record_findings(
    db: Database,
    review_id: int,
    pull_request: tuple[str, str, int],
    records: Iterable[FindingRecord],
    now: float,
) -> int:
    unique = list({f.fingerprint: f for f in records}.values())
    if not unique:
        return 0
    ids = await next_ids(db, FINDINGS, len(unique))  # keeps findings in recorded order
    documents = [
        {"_id": finding_id, **finding_row(review_id, pull_request, f, now)}
        for finding_id, f in zip(ids, unique, strict=True)
    ]
    try:
        result = await db[FINDINGS].insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        # Fingerprints already known on this pull request are kept as they were.
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
        return int(exc.details.get("nInserted", 0))
    return len(result.inserted_ids)


async def findings_for(
    db: Database, platform: str, repo: str, number: int, review_id: int | None
) -> list[FindingRecord]:
    query = _only({"platform": platform, "repo": repo, "number": number, "review_id": review_id})
    return [to_finding(doc) async for doc in db[FINDINGS].find(query).sort("_id", 1)]


# --- Pull-request state and usage ----------------------------------------------------------------


async def pr_state(db: Database, platform: str, repo: str, number: int) -> PullRequestState:
    doc = await db[PR_STATES].find_one({"_id": pr_state_id(platform, repo, number)})
    return to_pr_state(platform, repo, number, doc)


async def update_pr_state(
    db: Database, pull_request: tuple[str, str, int], given: dict[str, Any], now: float
) -> PullRequestState:
    changes: Doc = {**_only(given), "updated_at": now}
    defaults = {"last_reviewed_head": None, "paused": False, "full_requested": False}
    update: Doc = {"$set": changes}
    initial = {k: v for k, v in defaults.items() if k not in changes}
    if initial:  # an empty operator is an error on older servers
        update["$setOnInsert"] = initial
    key = pr_state_id(*pull_request)
    doc = await upsert(
        lambda: db[PR_STATES].find_one_and_update(
            {"_id": key}, update, upsert=True, return_document=ReturnDocument.AFTER
        )
    )
    return to_pr_state(*pull_request, doc)


async def record_usage(db: Database, record: UsageRecord, now: float) -> None:
    await db[USAGE].insert_one(usage_row(record, now))


async def spent_since(db: Database, since: float) -> float:
    cursor = await db[USAGE].aggregate(
        [
            {"$match": {"at": {"$gte": since}}},
            {"$group": {"_id": None, "total": {"$sum": "$cost_usd"}}},
        ]
    )
    totals = [float(doc["total"]) async for doc in cursor]
    return totals[0] if totals else 0.0


# --- Exchanges -----------------------------------------------------------------------------------


async def start_exchange(db: Database, start: ExchangeStart, now: float) -> ExchangeRecord:
    one = {"platform": start.platform, "delivery_id": start.delivery_id}
    found = await db[EXCHANGES].find_one(one)
    if found is not None:  # a retried job: the record as it is
        return to_exchange(found, "_id")
    (exchange_id,) = await next_ids(db, EXCHANGES)
    document: Doc = {"_id": exchange_id, **new_exchange_row(start, now)}
    try:
        await db[EXCHANGES].insert_one(document)
    except DuplicateKeyError:
        found = await db[EXCHANGES].find_one(one)  # started at the same moment elsewhere
        if found is None:
            raise
        return to_exchange(found, "_id")
    return to_exchange(document, "_id")


async def update_exchange(db: Database, exchange_id: int, changes: dict[str, Any]) -> None:
    check_updatable(changes, EXCHANGE_UPDATABLE, "exchange")
    if changes:
        await db[EXCHANGES].update_one({"_id": exchange_id}, {"$set": changes})


async def list_exchanges(
    db: Database, filters: dict[str, Any], since: float | None, limit: int
) -> list[ExchangeRecord]:
    query = _only(filters)
    if since is not None:
        query["created_at"] = {"$gte": since}
    cursor = db[EXCHANGES].find(query).sort("_id", -1).limit(limit)
    return [to_exchange(doc, "_id") async for doc in cursor]


async def count_exchanges(
    db: Database,
    pull_request: tuple[str, str, int],
    author: str,
    since: float,
    outcomes: Collection[str],
    through_id: int | None = None,
) -> int:
    platform, repo, number = pull_request
    query: dict[str, Any] = {
        "platform": platform,
        "repo": repo,
        "number": number,
        "author": author,
        "created_at": {"$gte": since},
        "outcome": {"$in": list(outcomes)},
    }
    if through_id is not None:
        query["_id"] = {"$lte": through_id}
    return await db[EXCHANGES].count_documents(query)


# --- Installations -------------------------------------------------------------------------------
# One document per installation, its repositories an array inside it: every change is a
# single-document update. A document without `account` only holds repositories added before
# the installation itself was recorded, and is not an installation yet.

INSTALLED = {"account": {"$exists": True}}


async def upsert_installation(
    db: Database,
    platform: str,
    installation_id: int,
    fields: dict[str, Any],
    repositories: Iterable[str] | None,
    now: float,
) -> None:
    changes: Doc = {
        "platform": platform,
        "installation_id": installation_id,
        **fields,
        "updated_at": now,
    }
    if repositories is not None:
        changes["repositories"] = list(dict.fromkeys(repositories))
    key = installation_id_of(platform, installation_id)
    update = {"$set": changes, "$min": {"created_at": now}}
    await upsert(lambda: db[INSTALLATIONS].update_one({"_id": key}, update, upsert=True))


async def set_installation_state(
    db: Database, platform: str, installation_id: int, state: InstallationState, now: float
) -> bool:
    result = await db[INSTALLATIONS].update_one(
        {"_id": installation_id_of(platform, installation_id), **INSTALLED},
        {"$set": {"state": state, "updated_at": now}},
    )
    return result.matched_count == 1


async def add_repositories(
    db: Database, platform: str, installation_id: int, repositories: Iterable[str]
) -> None:
    names = list(dict.fromkeys(repositories))
    if not names:
        return
    key = installation_id_of(platform, installation_id)
    update = {
        "$addToSet": {"repositories": {"$each": names}},
        "$setOnInsert": {"platform": platform, "installation_id": installation_id},
    }
    await upsert(lambda: db[INSTALLATIONS].update_one({"_id": key}, update, upsert=True))


async def remove_repositories(
    db: Database, platform: str, installation_id: int, repositories: Iterable[str]
) -> None:
    names = list(repositories)
    if names:
        await db[INSTALLATIONS].update_one(
            {"_id": installation_id_of(platform, installation_id)},
            {"$pull": {"repositories": {"$in": names}}},
        )


def _installation(doc: Doc) -> Installation:
    return to_installation(doc, sorted(doc.get("repositories") or ()))


async def get_installation(
    db: Database, platform: str, installation_id: int
) -> Installation | None:
    doc = await db[INSTALLATIONS].find_one(
        {"_id": installation_id_of(platform, installation_id), **INSTALLED}
    )
    return _installation(doc) if doc is not None else None


async def list_installations(db: Database, platform: str | None) -> list[Installation]:
    query = {**INSTALLED, **_only({"platform": platform})}
    cursor = db[INSTALLATIONS].find(query).sort([("platform", 1), ("installation_id", 1)])
    return [_installation(doc) async for doc in cursor]


# --- Operator views ------------------------------------------------------------------------------


def _utc_day(field: str) -> Doc:
    """floor(seconds / 86400): the UTC day number, as the SQL store computes it."""
    return {"$floor": {"$divide": [f"${field}", 86400]}}


async def _grouped(db: Database, collection: str, pipeline: list[Doc]) -> list[Doc]:
    cursor = await db[collection].aggregate(pipeline)
    return [doc async for doc in cursor]


async def review_activity(db: Database, since: float) -> ReviewActivity:
    started = {"$match": {"created_at": {"$gte": since}}}
    per_day = {
        int(doc["_id"]): int(doc["n"])
        for doc in await _grouped(
            db,
            REVIEWS,
            [started, {"$group": {"_id": _utc_day("created_at"), "n": {"$sum": 1}}}],
        )
    }
    spent = {
        int(doc["_id"]): (float(doc["cost"]), int(doc["tokens_in"]), int(doc["tokens_out"]))
        for doc in await _grouped(
            db,
            USAGE,
            [
                {"$match": {"at": {"$gte": since}}},
                {
                    "$group": {
                        "_id": _utc_day("at"),
                        "cost": {"$sum": "$cost_usd"},
                        "tokens_in": {"$sum": "$input_tokens"},
                        "tokens_out": {"$sum": "$output_tokens"},
                    }
                },
            ],
        )
    }
    by_outcome = await _grouped(
        db,
        REVIEWS,
        [
            started,
            {
                "$group": {
                    "_id": {"$ifNull": ["$outcome", "unfinished"]},
                    "n": {"$sum": 1},
                    "calls": {"$sum": "$calls"},
                    "cached": {"$sum": "$cached_calls"},
                }
            },
        ],
    )
    review_ids: list[int] = []
    durations: list[float] = []
    async for doc in db[REVIEWS].find(
        {"created_at": {"$gte": since}}, {"state": 1, "duration_seconds": 1}
    ):
        review_ids.append(int(doc["_id"]))
        if doc.get("state") == "done" and doc.get("duration_seconds") is not None:
            durations.append(float(doc["duration_seconds"]))
    severities = {
        str(doc["_id"]): int(doc["n"])
        for doc in await _grouped(
            db,
            FINDINGS,
            [
                {"$match": {"review_id": {"$in": review_ids}}},
                {"$group": {"_id": "$severity", "n": {"$sum": 1}}},
            ],
        )
    }
    return ReviewActivity(
        days=day_totals(per_day, spent),
        outcomes={str(doc["_id"]): int(doc["n"]) for doc in by_outcome},
        calls=sum(int(doc["calls"]) for doc in by_outcome),
        cached_calls=sum(int(doc["cached"]) for doc in by_outcome),
        findings_by_severity=severities,
        durations=tuple(sorted(durations)),
    )


async def repo_activity(db: Database) -> list[RepoActivity]:
    groups = await _grouped(
        db,
        REVIEWS,
        [
            {
                "$group": {
                    "_id": {"platform": "$platform", "repo": "$repo"},
                    "reviews": {"$sum": 1},
                    "cost": {"$sum": "$cost_usd"},
                    "findings": {"$sum": "$findings"},
                    "last": {"$max": "$created_at"},
                }
            },
        ],
    )
    activity = [
        RepoActivity(
            platform=str(doc["_id"]["platform"]),
            repo=str(doc["_id"]["repo"]),
            reviews=int(doc["reviews"]),
            cost_usd=float(doc["cost"]),
            findings=int(doc["findings"]),
            last_review_at=float(doc["last"]),
        )
        for doc in groups
    ]
    return sorted(activity, key=lambda a: (-a.last_review_at, a.platform, a.repo))
