"""The Store on MongoDB through PyMongo's async API (`AsyncMongoClient`).

No operation needs a multi-document transaction. Each write that decides something is one
atomic single-document operation, usually a compare-and-set on the fields it depends on, and
the server enforces what must never be violated with unique indexes (see `mongo_schema`):
- a delivery is recorded once (unique platform + delivery id); its document names the id of
  its job, so a job that a crashed process never wrote is written when the delivery comes again;
- a job is claimed by one worker (`find_one_and_update` from queued to running), and at most
  one job per key runs at a time (a unique index on the key over running jobs);
- coalescing cancels older queued jobs of the key and, if a newer one was enqueued meanwhile,
  the new job itself: whichever of two concurrent enqueues writes last sees the other;
- ids are integers from a counters collection (`$inc`), so they increase in enqueue order.
Reads ignore documents whose TTL date has passed, before the server's TTL monitor removes them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from bot.store import mongo_records, mongo_recovery
from bot.store.base import (
    JOB_STATES,
    Delivery,
    Enqueued,
    ExchangeRecord,
    ExchangeStart,
    FindingRecord,
    Installation,
    InstallationState,
    Job,
    JobState,
    KnownRepository,
    NewJob,
    PassRun,
    PullRequestState,
    RedeliveryOutcome,
    RedeliveryRecord,
    RepoActivity,
    ReviewActivity,
    ReviewQuery,
    ReviewRecord,
    ReviewStart,
    SchemaStatus,
    StoreUnavailable,
    UsageRecord,
)
from bot.store.leases import LEASE_EXPIRED, LeaseSweeps
from bot.store.mongo_schema import (
    DELIVERIES,
    HEAD,
    INDEXES,
    JOBS,
    LLM_CACHE,
    Doc,
    as_date,
    as_seconds,
    job_document,
)
from bot.store.noted import RecentlyNoted
from bot.store.records import to_job

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_DELIVERY_TTL = 14 * 86400.0
_ASCENDING_JOBS = [("run_at", 1), ("_id", 1)]
_UNSET_LEASE = {"worker_id": None, "lease_until": None}


def _guarded(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Connection failures surface as StoreUnavailable, as they do for the SQL store."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except ConnectionFailure as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreUnavailable(f"mongodb store: {first[:300]}") from exc

    return wrapper


class MongoStore:
    backend = "mongodb"

    def __init__(
        self,
        url: str,
        *,
        client: AsyncMongoClient[Doc] | None = None,
        database: str | None = None,
        pool_size: int = 5,
        max_overflow: int = 10,
        delivery_ttl_seconds: float = DEFAULT_DELIVERY_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`client`: an already built client (tests pass a stand-in); else one is made from
        `url` on `open()`. `database`: else the URL's path, else "arbiter"."""
        self.url = url
        self._client = client
        self._owns_client = client is None
        self.database_name = database or urlsplit(url).path.lstrip("/") or "arbiter"
        self._pool_size = pool_size + max_overflow
        self._delivery_ttl = delivery_ttl_seconds
        self._clock = clock
        self._db: AsyncDatabase[Doc] | None = None
        self._sweeps = LeaseSweeps()
        self._noted = RecentlyNoted(self._clock)

    # --- Connection and indexes --------------------------------------------------------------

    async def open(self) -> None:
        """Connect and create any missing index (indexes are created at start)."""
        if self._db is not None:
            return
        if self._client is None:
            self._client = AsyncMongoClient(
                self.url,
                maxPoolSize=self._pool_size,
                serverSelectionTimeoutMS=5000,
                tz_aware=True,
                appname="arbiter",
            )
        self._db = self._client[self.database_name]
        try:
            await self.migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.close()
            self._client = None
        self._db = None

    @property
    def database(self) -> AsyncDatabase[Doc]:
        """The PyMongo database (tests, tools), as `SQLStore.run_sql` is for SQL."""
        if self._db is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        return self._db

    def _c(self, name: str) -> AsyncCollection[Doc]:
        return self.database[name]

    @_guarded
    async def ping(self) -> None:
        try:
            async with asyncio.timeout(5):
                await self.database.command("ping")
        except TimeoutError as exc:
            raise StoreUnavailable("mongodb store did not answer within 5 s") from exc

    async def _missing_indexes(self) -> list[tuple[str, str]]:
        missing: list[tuple[str, str]] = []
        for collection, specs in INDEXES.items():
            cursor = await self._c(collection).list_indexes()
            present = {index["name"] async for index in cursor}
            missing.extend((collection, s.name) for s in specs if s.name not in present)
        return missing

    @_guarded
    async def migrate(self) -> list[str]:
        """Create the indexes that are missing; their names ("collection.index")."""
        created: list[str] = []
        for collection, name in await self._missing_indexes():
            (spec,) = (s for s in INDEXES[collection] if s.name == name)
            await self._c(collection).create_index(spec.keys, name=spec.name, **spec.options)
            created.append(f"{collection}.{name}")
        return created

    @_guarded
    async def schema_status(self) -> SchemaStatus:
        missing = await self._missing_indexes()
        if not missing:
            return SchemaStatus(current=HEAD, head=HEAD)
        if len(missing) == sum(len(specs) for specs in INDEXES.values()):
            return SchemaStatus(current=None, head=HEAD)
        names = ", ".join(f"{c}.{n}" for c, n in missing)
        return SchemaStatus(current=f"partial (missing {names})", head=HEAD)

    # --- Deliveries and jobs -----------------------------------------------------------------

    @_guarded
    async def accept_delivery(self, delivery: Delivery, job: NewJob) -> Enqueued:
        """Record the delivery (naming its job's id), then write the job.

        Crash between the two: the delivery is recorded without its job, and nothing was
        answered. When the delivery comes again, its job is written under the id it names.
        """
        now = self._clock()
        (job_id,) = await mongo_records.next_ids(self.database, JOBS)
        document = {
            "platform": delivery.platform,
            "delivery_id": delivery.delivery_id,
            "event": delivery.event,
            "received_at": now,
            "expires_at": as_date(now + self._delivery_ttl),
            "job_id": job_id,
        }
        deliveries = self._c(DELIVERIES)
        for _ in range(3):  # an expired record in the way is replaced, or vanishes meanwhile
            try:
                await deliveries.insert_one(dict(document))
            except DuplicateKeyError:
                seen = await deliveries.find_one(
                    {"platform": delivery.platform, "delivery_id": delivery.delivery_id}
                )
                if seen is None:
                    continue  # deleted (TTL, purge) since: try again
                if as_seconds(seen["expires_at"]) > now:
                    await self._write_missing_job(int(seen["job_id"]), job, now)
                    return Enqueued(job_id=None, duplicate=True)
                # Expired but not yet removed by the TTL monitor: forgotten, so take it over.
                taken = await deliveries.update_one(
                    {"_id": seen["_id"], "expires_at": seen["expires_at"]},
                    {"$set": {k: v for k, v in document.items() if k != "delivery_id"}},
                )
                if taken.matched_count == 0:
                    continue
            return await self._write_job(job_id, job, now)
        return Enqueued(job_id=None, duplicate=True)

    async def _write_missing_job(self, job_id: int, job: NewJob, now: float) -> None:
        """A delivery seen again: if its job was never written (the first writer crashed, or
        is still writing), write it now. Both write the same id, so one job exists."""
        if await self._c(JOBS).find_one({"_id": job_id}, {"_id": 1}) is None:
            await self._write_job(job_id, job, now)

    async def _write_job(self, job_id: int, job: NewJob, now: float) -> Enqueued:
        jobs = self._c(JOBS)
        try:
            await jobs.insert_one(job_document(job_id, job, now))
        except DuplicateKeyError:
            # Written by a concurrent copy of the same delivery (same id, same job)?
            if await jobs.find_one({"_id": job_id}, {"_id": 1}) is None:
                raise
        if job.key is None:
            return Enqueued(job_id=job_id)
        return Enqueued(job_id=job_id, replaced=await self._coalesce(job_id, job.key, now))

    @_guarded
    async def enqueue(self, job: NewJob) -> Enqueued:
        now = self._clock()
        (job_id,) = await mongo_records.next_ids(self.database, JOBS)
        return await self._write_job(job_id, job, now)

    async def _coalesce(self, job_id: int, key: str, now: float) -> tuple[int, ...]:
        """The newest job of a key replaces the queued older ones.

        Of two concurrent enqueues of one key, whichever is written last finds the other: an
        older one still queued it cancels; a newer one (any state) means it is itself older.
        """
        jobs = self._c(JOBS)
        replaced: list[int] = []
        older = jobs.find({"key": key, "state": "queued", "_id": {"$lt": job_id}}, {"_id": 1})
        async for doc in older:
            if await self._cancel_if_queued(doc["_id"], f"superseded by job {job_id}", now):
                replaced.append(int(doc["_id"]))
        newer = await jobs.find_one(
            {"key": key, "_id": {"$gt": job_id}}, {"_id": 1}, sort=[("_id", 1)]
        )
        if newer is not None:
            await self._cancel_if_queued(job_id, f"superseded by job {newer['_id']}", now)
        return tuple(sorted(replaced))

    async def _cancel_if_queued(self, job_id: int, reason: str, now: float) -> bool:
        result = await self._c(JOBS).update_one(
            {"_id": job_id, "state": "queued"},
            {
                "$set": {
                    "state": "cancelled",
                    "last_error": reason,
                    "finished_at": now,
                    "updated_at": now,
                }
            },
        )
        return result.matched_count == 1

    async def watch_jobs(self, wake: Callable[[], None]) -> None:
        # A change stream would tell, but it needs a replica set, which a single server is
        # not: MongoDB's workers poll (WORKER_POLL_INTERVAL).
        return None

    @_guarded
    async def claim(
        self,
        worker_id: str,
        *,
        limit: int,
        lease_seconds: float,
        holding: Collection[int] = (),
        lanes: Mapping[str, int] | None = None,
        deep: Mapping[str, int] | None = None,
    ) -> list[Job]:
        """Due queued jobs, oldest first, each taken by one atomic `find_one_and_update`.

        Keys with a running job are left out of the query; a key that starts running between
        that read and the claim is refused by the server's unique index, and skipped.
        """
        lanes = dict(lanes or {})
        if limit <= 0 and not any(n > 0 for n in lanes.values()):
            return []
        now = self._clock()
        if self._sweeps.due(worker_id, now):
            await self._sweep_expired_leases(now, worker_id, holding)
        jobs = self._c(JOBS)
        busy = {
            doc["key"]
            async for doc in jobs.find(
                {"state": "running", "key": {"$type": "string"}}, {"key": 1, "_id": 0}
            )
        }
        claimed: list[Job] = []
        due: Doc = {"state": "queued", "run_at": {"$lte": now}}
        for kind, depth in sorted((deep or {}).items()):
            # A lane that needs a queue this deep, counted as the claim starts (at most that far).
            wanted_here = lanes.get(kind, 0) > 0 and depth > 0
            if wanted_here and await jobs.count_documents(due, limit=depth) < depth:
                lanes[kind] = 0
        wanted: list[tuple[Doc, int]] = [
            ({}, limit),
            *(({"kind": kind}, n) for kind, n in sorted(lanes.items())),
        ]
        for kinds, count in wanted:
            claimed += await self._claim_some(
                jobs, worker_id, now, lease_seconds, busy, kinds, count
            )
        return sorted(claimed, key=lambda j: (j.run_at, j.id))

    async def _claim_some(
        self,
        jobs: AsyncCollection[Doc],
        worker_id: str,
        now: float,
        lease_seconds: float,
        busy: set[str],
        kinds: Doc,
        limit: int,
    ) -> list[Job]:
        """Up to `limit` due queued jobs matching `kinds`, whose keys are not in `busy` (which
        grows with the keys taken)."""
        claimed: list[Job] = []
        refusals = 0
        while len(claimed) < limit:
            query: Doc = {"state": "queued", "run_at": {"$lte": now}, **kinds}
            if busy:
                query["key"] = {"$nin": sorted(busy)}
            try:
                doc = await jobs.find_one_and_update(
                    query,
                    {
                        "$set": {
                            "state": "running",
                            "worker_id": worker_id,
                            "lease_until": now + lease_seconds,
                            "started_at": now,
                            "updated_at": now,
                        },
                        "$inc": {"attempts": 1},
                    },
                    sort=_ASCENDING_JOBS,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError as exc:
                # Another worker started a job of this key since we looked: skip the key.
                refusals += 1
                if refusals > limit + 10:
                    break
                key = (exc.details or {}).get("keyValue", {}).get("key")
                if isinstance(key, str):
                    busy.add(key)
                else:  # an older server that does not say which key: look again
                    busy |= {
                        d["key"]
                        async for d in jobs.find(
                            {"state": "running", "key": {"$type": "string"}}, {"key": 1}
                        )
                    }
                continue
            if doc is None:
                break
            job = to_job(doc, "_id")
            claimed.append(job)
            if job.key is not None:
                busy.add(job.key)
        return claimed

    async def _sweep_expired_leases(
        self, now: float, claimer: str, holding: Collection[int]
    ) -> None:
        """Jobs whose worker stopped renewing: queued again, or dead after the last attempt.

        The claimer's own expired jobs are taken back too (a run that ended without its outcome
        recorded, a claim whose answer was lost), except those it is `holding`: it still runs
        them, so their lease ran out on a late heartbeat. Each job is changed only if it still
        holds the lease that was read (state, worker, expiry), so a renewal or a completion
        that lands in between wins.
        """
        jobs = self._c(JOBS)
        held = set(holding)
        expired = jobs.find({"state": "running", "lease_until": {"$lt": now}})
        async for doc in expired:
            if doc.get("worker_id") == claimer and doc["_id"] in held:
                continue
            same_lease = {
                "_id": doc["_id"],
                "state": "running",
                "worker_id": doc.get("worker_id"),
                "lease_until": doc["lease_until"],
            }
            if int(doc["attempts"]) >= int(doc["max_attempts"]):
                before = doc.get("last_error")
                change: Doc = {
                    "state": "dead",
                    "last_error": (f"{before}\n" if before is not None else "") + LEASE_EXPIRED,
                    "finished_at": now,
                }
            else:
                change = {"state": "queued", "last_error": LEASE_EXPIRED, "run_at": now}
            await jobs.update_one(
                same_lease, {"$set": {**change, **_UNSET_LEASE, "updated_at": now}}
            )

    @_guarded
    async def renew_leases(
        self, worker_id: str, job_ids: Iterable[int], lease_seconds: float
    ) -> list[int]:
        ids = list(job_ids)
        if not ids:
            return []
        now = self._clock()
        mine = {"_id": {"$in": ids}, "worker_id": worker_id, "state": "running"}
        jobs = self._c(JOBS)
        await jobs.update_many(
            mine, {"$set": {"lease_until": now + lease_seconds, "updated_at": now}}
        )
        # Still this worker's after the update: renewed (nobody takes a lease that is alive).
        return sorted([int(doc["_id"]) async for doc in jobs.find(mine, {"_id": 1})])

    async def _finish(self, job_id: int, worker_id: str, update: Doc) -> bool:
        """Change a running job only while it is still this worker's (compare-and-set)."""
        update.setdefault("$set", {}).update(_UNSET_LEASE)
        update["$set"].setdefault("updated_at", self._clock())
        result = await self._c(JOBS).update_one(
            {"_id": job_id, "worker_id": worker_id, "state": "running"}, update
        )
        return result.matched_count == 1

    @_guarded
    async def complete(self, job_id: int, worker_id: str) -> bool:
        now = self._clock()
        return await self._finish(
            job_id, worker_id, {"$set": {"state": "done", "finished_at": now, "updated_at": now}}
        )

    @_guarded
    async def retry_later(
        self,
        job_id: int,
        worker_id: str,
        *,
        error: str,
        delay: float,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        values: Doc = {"state": "queued", "run_at": self._clock() + delay, "last_error": error}
        if progress is not None:
            values["progress"] = json.dumps(progress)
        return await self._finish(job_id, worker_id, {"$set": values})

    @_guarded
    async def bury(
        self, job_id: int, worker_id: str, *, error: str, progress: dict[str, Any] | None = None
    ) -> bool:
        values: Doc = {"state": "dead", "last_error": error, "finished_at": self._clock()}
        if progress is not None:
            values["progress"] = json.dumps(progress)
        return await self._finish(job_id, worker_id, {"$set": values})

    @_guarded
    async def release(
        self, job_id: int, worker_id: str, *, delay: float = 0.0, note: str | None = None
    ) -> bool:
        values: Doc = {"state": "queued", "run_at": self._clock() + delay}
        if note is not None:
            values["last_error"] = note
        # The attempt was never made: give it back. A running job has attempts >= 1 (the
        # claim counted it), so this never goes below zero.
        return await self._finish(job_id, worker_id, {"$set": values, "$inc": {"attempts": -1}})

    @_guarded
    async def cancel_queued(self, key: str, reason: str) -> list[int]:
        now = self._clock()
        cancelled = [
            int(doc["_id"])
            async for doc in self._c(JOBS).find({"key": key, "state": "queued"}, {"_id": 1})
            if await self._cancel_if_queued(doc["_id"], reason, now)
        ]
        return sorted(cancelled)

    @_guarded
    async def requeue(self, job_id: int) -> bool:
        now = self._clock()
        result = await self._c(JOBS).update_one(
            {"_id": job_id, "state": {"$in": ["dead", "cancelled"]}},
            {
                "$set": {
                    "state": "queued",
                    "attempts": 0,
                    "run_at": now,
                    "finished_at": None,
                    "updated_at": now,
                }
            },
        )
        return result.matched_count == 1

    @_guarded
    async def get_job(self, job_id: int) -> Job | None:
        doc = await self._c(JOBS).find_one({"_id": job_id})
        return to_job(doc, "_id") if doc is not None else None

    @_guarded
    async def list_jobs(
        self, *, state: JobState | None = None, kind: str | None = None, limit: int = 100
    ) -> list[Job]:
        query: Doc = {}
        if state is not None:
            query["state"] = state
        if kind is not None:
            query["kind"] = kind
        cursor = self._c(JOBS).find(query).sort("_id", -1).limit(limit)
        return [to_job(doc, "_id") async for doc in cursor]

    @_guarded
    async def job_counts(self) -> dict[str, int]:
        # One indexed count per state: a $group would read every job the store retains.
        jobs = self._c(JOBS)
        return {state: await jobs.count_documents({"state": state}) for state in JOB_STATES}

    @_guarded
    async def seen_delivery(self, platform: str, delivery_id: str) -> bool:
        found = await self._c(DELIVERIES).find_one(
            {
                "platform": platform,
                "delivery_id": delivery_id,
                "expires_at": {"$gt": as_date(self._clock())},
            },
            {"_id": 1},
        )
        return found is not None

    @_guarded
    async def purge(self, *, max_age: float) -> int:
        now = self._clock()
        older_than = now - max_age
        # Deliveries first: a crash in between leaves finished jobs without their delivery
        # (harmless), never a delivery whose job is gone (it would be written again).
        gone = await self._c(DELIVERIES).delete_many(
            {"$or": [{"received_at": {"$lt": older_than}}, {"expires_at": {"$lte": as_date(now)}}]}
        )
        done = await self._c(JOBS).delete_many(
            {"state": {"$in": ["done", "cancelled"]}, "finished_at": {"$lt": older_than}}
        )
        expired = await self._c(LLM_CACHE).delete_many({"expires_at": {"$lt": as_date(now)}})
        return int(gone.deleted_count) + int(done.deleted_count) + int(expired.deleted_count)

    # --- LLM response cache ------------------------------------------------------------------

    @_guarded
    async def cache_get(self, key: str) -> str | None:
        doc = await self._c(LLM_CACHE).find_one(
            {"_id": key, "expires_at": {"$gt": as_date(self._clock())}}, {"value": 1}
        )
        return None if doc is None else str(doc["value"])

    @_guarded
    async def cache_put(self, key: str, value: str, *, ttl_seconds: float) -> None:
        now = self._clock()
        row = {"value": value, "created_at": now, "expires_at": as_date(now + ttl_seconds)}
        await mongo_records.upsert(
            lambda: self._c(LLM_CACHE).update_one({"_id": key}, {"$set": row}, upsert=True)
        )

    # --- Reviews, findings, pull-request state, usage (mongo_records) --------------------------

    @_guarded
    async def start_review(self, start: ReviewStart) -> ReviewRecord:
        return await mongo_records.start_review(self.database, start, self._clock())

    @_guarded
    async def update_review(self, review_id: int, **changes: Any) -> None:
        await mongo_records.update_review(self.database, review_id, changes)

    @_guarded
    async def get_review(self, review_id: int) -> ReviewRecord | None:
        return await mongo_records.get_review(self.database, review_id)

    @_guarded
    async def list_reviews(
        self,
        *,
        platform: str | None = None,
        repo: str | None = None,
        number: int | None = None,
        limit: int = 100,
    ) -> list[ReviewRecord]:
        query = {"platform": platform, "repo": repo, "number": number}
        return await mongo_records.list_reviews(self.database, query, limit)

    @_guarded
    async def output_per_call(self, model: str, *, limit: int = 100) -> list[int]:
        return await mongo_records.output_per_call(self.database, model, limit)

    @_guarded
    async def record_findings(
        self,
        review_id: int,
        platform: str,
        repo: str,
        number: int,
        records: Iterable[FindingRecord],
    ) -> int:
        return await mongo_records.record_findings(
            self.database, review_id, (platform, repo, number), records, self._clock()
        )

    @_guarded
    async def findings_for(
        self, platform: str, repo: str, number: int, *, review_id: int | None = None
    ) -> list[FindingRecord]:
        return await mongo_records.findings_for(self.database, platform, repo, number, review_id)

    @_guarded
    async def pr_state(self, platform: str, repo: str, number: int) -> PullRequestState:
        return await mongo_records.pr_state(self.database, platform, repo, number)

    @_guarded
    async def update_pr_state(
        self,
        platform: str,
        repo: str,
        number: int,
        *,
        last_reviewed_head: str | None = None,
        paused: bool | None = None,
        full_requested: bool | None = None,
    ) -> PullRequestState:
        given = {
            "last_reviewed_head": last_reviewed_head,
            "paused": paused,
            "full_requested": full_requested,
        }
        return await mongo_records.update_pr_state(
            self.database, (platform, repo, number), given, self._clock()
        )

    @_guarded
    async def record_usage(self, record: UsageRecord) -> None:
        await mongo_records.record_usage(self.database, record, self._clock())

    @_guarded
    async def spent_since(self, since: float) -> float:
        return await mongo_records.spent_since(self.database, since)

    # --- Exchanges ---------------------------------------------------------------------------

    @_guarded
    async def start_exchange(self, start: ExchangeStart) -> ExchangeRecord:
        return await mongo_records.start_exchange(self.database, start, self._clock())

    @_guarded
    async def update_exchange(self, exchange_id: int, **changes: Any) -> None:
        await mongo_records.update_exchange(self.database, exchange_id, changes)

    @_guarded
    async def list_exchanges(
        self,
        *,
        platform: str | None = None,
        repo: str | None = None,
        number: int | None = None,
        author: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[ExchangeRecord]:
        filters = {"platform": platform, "repo": repo, "number": number, "author": author}
        return await mongo_records.list_exchanges(self.database, filters, since, limit)

    @_guarded
    async def count_exchanges(
        self,
        platform: str,
        repo: str,
        number: int,
        *,
        author: str,
        since: float,
        outcomes: Collection[str],
        through_id: int | None = None,
    ) -> int:
        return await mongo_records.count_exchanges(
            self.database, (platform, repo, number), author, since, outcomes, through_id
        )

    # --- Installations -----------------------------------------------------------------------

    @_guarded
    async def upsert_installation(
        self,
        platform: str,
        installation_id: int,
        *,
        account: str,
        account_type: str | None = None,
        state: InstallationState = "active",
        repository_selection: str | None = None,
        repositories: Iterable[str] | None = None,
    ) -> None:
        fields = {
            "account": account,
            "account_type": account_type,
            "state": state,
            "repository_selection": repository_selection,
        }
        await mongo_records.upsert_installation(
            self.database, platform, installation_id, fields, repositories, self._clock()
        )

    @_guarded
    async def set_installation_state(
        self, platform: str, installation_id: int, state: InstallationState
    ) -> bool:
        return await mongo_records.set_installation_state(
            self.database, platform, installation_id, state, self._clock()
        )

    @_guarded
    async def add_repositories(
        self, platform: str, installation_id: int, repositories: Iterable[str]
    ) -> None:
        await mongo_records.add_repositories(self.database, platform, installation_id, repositories)

    @_guarded
    async def remove_repositories(
        self, platform: str, installation_id: int, repositories: Iterable[str]
    ) -> None:
        await mongo_records.remove_repositories(
            self.database, platform, installation_id, repositories
        )

    @_guarded
    async def get_installation(self, platform: str, installation_id: int) -> Installation | None:
        return await mongo_records.get_installation(self.database, platform, installation_id)

    @_guarded
    async def list_installations(self, platform: str | None = None) -> list[Installation]:
        return await mongo_records.list_installations(self.database, platform)

    # --- Operator views (the dashboard's API) ------------------------------------------------

    @_guarded
    async def find_reviews(self, query: ReviewQuery) -> list[ReviewRecord]:
        return await mongo_records.find_reviews(self.database, query)

    @_guarded
    async def review_activity(self, since: float) -> ReviewActivity:
        return await mongo_records.review_activity(self.database, since)

    @_guarded
    async def repo_activity(self) -> list[RepoActivity]:
        return await mongo_records.repo_activity(self.database)

    # --- Recovery: passes, watermarks, redeliveries, repositories seen (mongo_recovery) -------

    @_guarded
    async def acquire_pass(
        self, name: str, holder: str, *, lease_seconds: float, last_finished_before: float
    ) -> bool:
        return await mongo_recovery.acquire_pass(
            self.database, name, holder, lease_seconds, last_finished_before, self._clock()
        )

    @_guarded
    async def renew_pass(self, name: str, holder: str, *, lease_seconds: float) -> bool:
        return await mongo_recovery.renew_pass(
            self.database, name, holder, lease_seconds, self._clock()
        )

    @_guarded
    async def finish_pass(
        self, name: str, holder: str, *, summary: dict[str, Any], added: int
    ) -> bool:
        return await mongo_recovery.finish_pass(
            self.database, name, holder, summary, added, self._clock()
        )

    @_guarded
    async def release_pass(self, name: str, holder: str) -> None:
        await mongo_recovery.release_pass(self.database, name, holder)

    @_guarded
    async def pass_runs(self) -> list[PassRun]:
        return await mongo_recovery.pass_runs(self.database)

    @_guarded
    async def get_watermark(self, name: str) -> str | None:
        return await mongo_recovery.get_watermark(self.database, name)

    @_guarded
    async def set_watermark(self, name: str, value: str) -> None:
        await mongo_recovery.set_watermark(self.database, name, value, self._clock())

    @_guarded
    async def seen_deliveries(self, platform: str, delivery_ids: Collection[str]) -> set[str]:
        return await mongo_recovery.seen_deliveries(
            self.database, platform, delivery_ids, self._clock()
        )

    @_guarded
    async def claim_redelivery(
        self,
        platform: str,
        guid: str,
        attempt_id: int,
        *,
        source: str,
        max_attempts: int,
        stale_after: float,
    ) -> bool:
        return await mongo_recovery.claim_redelivery(
            self.database,
            (platform, guid),
            attempt_id,
            source,
            max_attempts,
            stale_after,
            self._clock(),
        )

    @_guarded
    async def settle_redelivery(
        self,
        platform: str,
        guid: str,
        attempt_id: int,
        outcome: RedeliveryOutcome,
        *,
        error: str | None = None,
    ) -> None:
        await mongo_recovery.settle_redelivery(
            self.database, (platform, guid), attempt_id, outcome, error
        )

    @_guarded
    async def redelivery_records(
        self, platform: str | None = None, *, limit: int = 100
    ) -> list[RedeliveryRecord]:
        return await mongo_recovery.redelivery_records(self.database, platform, limit)

    @_guarded
    async def purge_redeliveries(self, *, max_age: float) -> int:
        return await mongo_recovery.purge_redeliveries(self.database, max_age, self._clock())

    @_guarded
    async def note_repositories(
        self, platform: str, repos: Iterable[str], *, installation_id: int | None = None
    ) -> None:
        due = self._noted.due(platform, repos, installation_id)
        if due:
            await mongo_recovery.note_repositories(
                self.database, platform, due, installation_id, self._clock()
            )
            self._noted.noted(platform, due, installation_id)

    @_guarded
    async def forget_repository(self, platform: str, repo: str) -> None:
        self._noted.forget(platform, repo)
        await mongo_recovery.forget_repository(self.database, platform, repo)

    @_guarded
    async def known_repositories(self, platform: str | None = None) -> list[KnownRepository]:
        return await mongo_recovery.known(self.database, platform)

    @_guarded
    async def open_job_keys(self, keys: Collection[str]) -> set[str]:
        return await mongo_recovery.open_job_keys(self.database, keys)
