"""The Store on SQL databases through SQLAlchemy Core: SQLite by default, PostgreSQL.

`SQLStore` reads the clock and hands each operation to the module that holds its SQL:
`sql_queue` (deliveries and jobs) or `sql_records` (everything else); `sql_engine` runs it as
one transaction. On SQLite, deliveries and completions that arrive while a commit is in
flight are written together in the next one (`batching.GroupCommit`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.metrics import PoolUsage
from bot.store import migrations, sql_queue, sql_records, sql_recovery
from bot.store.base import (
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
from bot.store.batching import GroupCommit
from bot.store.leases import LeaseSweeps
from bot.store.noted import RecentlyNoted
from bot.store.sql_engine import INTAKE_CONNECTIONS, SQLDatabase

T = TypeVar("T")
# PostgreSQL's channel of queued jobs: the store notifies it after each commit that queued some.
JOBS_CHANNEL = "arbiter_jobs"


class SQLStore:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._db = SQLDatabase(url, pool_size=pool_size, max_overflow=max_overflow)
        self.backend = self._db.backend
        self._clock = clock
        self._sweeps = LeaseSweeps()
        self._noted = RecentlyNoted(clock)
        # SQLite has one writer; PostgreSQL commits several batches at once, one per connection.
        in_flight = 1 if self._db.backend == "sqlite" else INTAKE_CONNECTIONS
        self._deliveries = GroupCommit(self._accept_batch, in_flight=in_flight)
        self._completions = GroupCommit(self._complete_batch)

    # --- Connection --------------------------------------------------------------------------

    async def open(self) -> None:
        await self._db.open()

    def pool_usage(self) -> PoolUsage | None:
        """The PostgreSQL connection pool now, for /metrics (None on SQLite: one thread)."""
        return self._db.pool_usage()

    async def close(self) -> None:
        await self._deliveries.drain()
        await self._completions.drain()
        await self._db.close()

    async def _run(self, operation: Callable[[Connection], T], *, alone: bool = False) -> T:
        return await self._db.run(operation, alone=alone)

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(5):
                await self._run(lambda conn: conn.execute(sa.text("SELECT 1")).scalar())
        except TimeoutError as exc:
            raise StoreUnavailable(f"{self.backend} store did not answer within 5 s") from exc

    async def run_sql(self, operation: Callable[[Connection], T]) -> T:
        """Run a function over a SQLAlchemy Connection in one transaction (tests, tools)."""
        return await self._run(operation)

    # --- Schema ------------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        return await self._run(migrations.upgrade, alone=True)

    async def schema_status(self) -> SchemaStatus:
        current = await self._run(migrations.current_revision, alone=True)
        return SchemaStatus(current=current, head=migrations.head_revision())

    # --- Deliveries and jobs (sql_queue) -----------------------------------------------------

    async def accept_delivery(self, delivery: Delivery, job: NewJob) -> Enqueued:
        return await self._deliveries.submit((delivery, job))

    async def _accept_batch(self, items: list[tuple[Delivery, NewJob]]) -> list[Enqueued]:
        accepted = await sql_queue.accept_batch(self._db, items, self._clock())
        if any(a.job_id is not None for a in accepted):
            self._announce()
        return accepted

    async def enqueue(self, job: NewJob) -> Enqueued:
        enqueued = await sql_queue.enqueue(self._db, job, self._clock())
        self._announce()
        return enqueued

    def _announce(self) -> None:
        """Jobs were queued: PostgreSQL tells the workers of other processes (`watch_jobs`);
        SQLite's share one process with whatever enqueues, which tells them (Worker.notify)."""
        if self._db.backend == "postgresql":
            self._db.announce(JOBS_CHANNEL)

    async def watch_jobs(self, wake: Callable[[], None]) -> None:
        if self._db.backend == "postgresql":  # what `_announce` sends
            await self._db.listen(JOBS_CHANNEL, wake)

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
        lanes = dict(lanes or {})
        if limit <= 0 and not any(n > 0 for n in lanes.values()):
            return []
        now = self._clock()
        sweep = self._sweeps.due(worker_id, now)
        return await sql_queue.claim(
            self._db,
            worker_id,
            max(limit, 0),
            lease_seconds,
            now,
            sweep,
            holding=sorted(holding),
            lanes=lanes,
            deep=dict(deep or {}),
        )

    async def renew_leases(
        self, worker_id: str, job_ids: Iterable[int], lease_seconds: float
    ) -> list[int]:
        ids = list(job_ids)
        if not ids:
            return []
        return await sql_queue.renew_leases(self._db, worker_id, ids, lease_seconds, self._clock())

    async def complete(self, job_id: int, worker_id: str) -> bool:
        if self.backend == "sqlite":
            return await self._completions.submit((job_id, worker_id))
        (done,) = await self._complete_batch([(job_id, worker_id)])
        return done

    async def _complete_batch(self, items: list[tuple[int, str]]) -> list[bool]:
        return await sql_queue.complete_batch(self._db, items, self._clock())

    async def _finish(self, job_id: int, worker_id: str, **values: Any) -> bool:
        values.setdefault("updated_at", self._clock())
        return await sql_queue.finish(self._db, job_id, worker_id, values)

    async def retry_later(
        self,
        job_id: int,
        worker_id: str,
        *,
        error: str,
        delay: float,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        extra = {} if progress is None else {"progress": json.dumps(progress)}
        return await self._finish(
            job_id,
            worker_id,
            state="queued",
            run_at=self._clock() + delay,
            last_error=error,
            **extra,
        )

    async def bury(
        self, job_id: int, worker_id: str, *, error: str, progress: dict[str, Any] | None = None
    ) -> bool:
        extra = {} if progress is None else {"progress": json.dumps(progress)}
        return await self._finish(
            job_id, worker_id, state="dead", last_error=error, finished_at=self._clock(), **extra
        )

    async def release(
        self, job_id: int, worker_id: str, *, delay: float = 0.0, note: str | None = None
    ) -> bool:
        extra = {} if note is None else {"last_error": note}
        return await self._finish(
            job_id,
            worker_id,
            state="queued",
            attempts=sql_queue.ATTEMPT_GIVEN_BACK,
            run_at=self._clock() + delay,
            **extra,
        )

    async def cancel_queued(self, key: str, reason: str) -> list[int]:
        return await sql_queue.cancel_queued(self._db, key, reason, self._clock())

    async def requeue(self, job_id: int) -> bool:
        return await sql_queue.requeue(self._db, job_id, self._clock())

    async def get_job(self, job_id: int) -> Job | None:
        return await sql_queue.get_job(self._db, job_id)

    async def list_jobs(
        self, *, state: JobState | None = None, kind: str | None = None, limit: int = 100
    ) -> list[Job]:
        return await sql_queue.list_jobs(self._db, state, kind, limit)

    async def job_counts(self) -> dict[str, int]:
        return await sql_queue.job_counts(self._db)

    async def seen_delivery(self, platform: str, delivery_id: str) -> bool:
        return await sql_queue.seen_delivery(self._db, platform, delivery_id)

    async def purge(self, *, max_age: float) -> int:
        return await sql_queue.purge(self._db, max_age, self._clock())

    # --- LLM response cache (sql_records) ----------------------------------------------------

    async def cache_get(self, key: str) -> str | None:
        return await sql_records.cache_get(self._db, key, self._clock())

    async def cache_put(self, key: str, value: str, *, ttl_seconds: float) -> None:
        await sql_records.cache_put(self._db, key, value, ttl_seconds, self._clock())

    # --- Reviews, findings, pull-request state, usage (sql_records) ----------------------------

    async def start_review(self, start: ReviewStart) -> ReviewRecord:
        return await sql_records.start_review(self._db, start, self._clock())

    async def update_review(self, review_id: int, **changes: Any) -> None:
        await sql_records.update_review(self._db, review_id, changes)

    async def get_review(self, review_id: int) -> ReviewRecord | None:
        return await sql_records.get_review(self._db, review_id)

    async def list_reviews(
        self,
        *,
        platform: str | None = None,
        repo: str | None = None,
        number: int | None = None,
        limit: int = 100,
    ) -> list[ReviewRecord]:
        filters = {"platform": platform, "repo": repo, "number": number}
        return await sql_records.list_reviews(self._db, filters, limit)

    async def output_per_call(self, model: str, *, limit: int = 100) -> list[int]:
        return await sql_records.output_per_call(self._db, model, limit)

    async def record_findings(
        self,
        review_id: int,
        platform: str,
        repo: str,
        number: int,
        records: Iterable[FindingRecord],
    ) -> int:
        return await sql_records.record_findings(
            self._db, review_id, (platform, repo, number), records, self._clock()
        )

    async def findings_for(
        self, platform: str, repo: str, number: int, *, review_id: int | None = None
    ) -> list[FindingRecord]:
        return await sql_records.findings_for(self._db, platform, repo, number, review_id)

    async def pr_state(self, platform: str, repo: str, number: int) -> PullRequestState:
        return await sql_records.pr_state(self._db, platform, repo, number)

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
        return await sql_records.update_pr_state(
            self._db, (platform, repo, number), given, self._clock()
        )

    async def record_usage(self, record: UsageRecord) -> None:
        await sql_records.record_usage(self._db, record, self._clock())

    async def spent_since(self, since: float) -> float:
        return await sql_records.spent_since(self._db, since)

    # --- Exchanges (sql_records) -------------------------------------------------------------

    async def start_exchange(self, start: ExchangeStart) -> ExchangeRecord:
        return await sql_records.start_exchange(self._db, start, self._clock())

    async def update_exchange(self, exchange_id: int, **changes: Any) -> None:
        await sql_records.update_exchange(self._db, exchange_id, changes)

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
        return await sql_records.list_exchanges(self._db, filters, since, limit)

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
        return await sql_records.count_exchanges(
            self._db, (platform, repo, number), author, since, outcomes, through_id
        )

    # --- Installations (sql_records) ---------------------------------------------------------

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
        await sql_records.upsert_installation(
            self._db, platform, installation_id, fields, repositories, self._clock()
        )

    async def set_installation_state(
        self, platform: str, installation_id: int, state: InstallationState
    ) -> bool:
        return await sql_records.set_installation_state(
            self._db, platform, installation_id, state, self._clock()
        )

    async def add_repositories(
        self, platform: str, installation_id: int, repositories: Iterable[str]
    ) -> None:
        await sql_records.add_repositories(
            self._db, platform, installation_id, repositories, self._clock()
        )

    async def remove_repositories(
        self, platform: str, installation_id: int, repositories: Iterable[str]
    ) -> None:
        await sql_records.remove_repositories(self._db, platform, installation_id, repositories)

    async def get_installation(self, platform: str, installation_id: int) -> Installation | None:
        return await sql_records.get_installation(self._db, platform, installation_id)

    async def list_installations(self, platform: str | None = None) -> list[Installation]:
        return await sql_records.list_installations(self._db, platform)

    # --- Operator views (the dashboard's API) ------------------------------------------------

    async def find_reviews(self, query: ReviewQuery) -> list[ReviewRecord]:
        return await sql_records.find_reviews(self._db, query)

    async def review_activity(self, since: float) -> ReviewActivity:
        return await sql_records.review_activity(self._db, since)

    async def repo_activity(self) -> list[RepoActivity]:
        return await sql_records.repo_activity(self._db)

    # --- Recovery: passes, watermarks, redeliveries, repositories seen (sql_recovery) ---------

    async def acquire_pass(
        self, name: str, holder: str, *, lease_seconds: float, last_finished_before: float
    ) -> bool:
        return await sql_recovery.acquire_pass(
            self._db, name, holder, lease_seconds, last_finished_before, self._clock()
        )

    async def renew_pass(self, name: str, holder: str, *, lease_seconds: float) -> bool:
        return await sql_recovery.renew_pass(self._db, name, holder, lease_seconds, self._clock())

    async def finish_pass(
        self, name: str, holder: str, *, summary: dict[str, Any], added: int
    ) -> bool:
        return await sql_recovery.finish_pass(self._db, name, holder, summary, added, self._clock())

    async def release_pass(self, name: str, holder: str) -> None:
        await sql_recovery.release_pass(self._db, name, holder)

    async def pass_runs(self) -> list[PassRun]:
        return await sql_recovery.pass_runs(self._db)

    async def get_watermark(self, name: str) -> str | None:
        return await sql_recovery.get_watermark(self._db, name)

    async def set_watermark(self, name: str, value: str) -> None:
        await sql_recovery.set_watermark(self._db, name, value, self._clock())

    async def seen_deliveries(self, platform: str, delivery_ids: Collection[str]) -> set[str]:
        return await sql_recovery.seen_deliveries(self._db, platform, delivery_ids)

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
        return await sql_recovery.claim_redelivery(
            self._db, (platform, guid), attempt_id, source, max_attempts, stale_after, self._clock()
        )

    async def settle_redelivery(
        self,
        platform: str,
        guid: str,
        attempt_id: int,
        outcome: RedeliveryOutcome,
        *,
        error: str | None = None,
    ) -> None:
        await sql_recovery.settle_redelivery(self._db, (platform, guid), attempt_id, outcome, error)

    async def redelivery_records(
        self, platform: str | None = None, *, limit: int = 100
    ) -> list[RedeliveryRecord]:
        return await sql_recovery.redelivery_records(self._db, platform, limit)

    async def purge_redeliveries(self, *, max_age: float) -> int:
        return await sql_recovery.purge_redeliveries(self._db, max_age, self._clock())

    async def note_repositories(
        self, platform: str, repos: Iterable[str], *, installation_id: int | None = None
    ) -> None:
        due = self._noted.due(platform, repos, installation_id)
        if due:
            await sql_recovery.note_repositories(
                self._db, platform, due, installation_id, self._clock()
            )
            self._noted.noted(platform, due, installation_id)

    async def forget_repository(self, platform: str, repo: str) -> None:
        self._noted.forget(platform, repo)
        await sql_recovery.forget_repository(self._db, platform, repo)

    async def known_repositories(self, platform: str | None = None) -> list[KnownRepository]:
        return await sql_recovery.known(self._db, platform)

    async def open_job_keys(self, keys: Collection[str]) -> set[str]:
        return await sql_recovery.open_job_keys(self._db, keys)
