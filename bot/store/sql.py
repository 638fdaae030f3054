"""The Store on SQL databases through SQLAlchemy Core: SQLite by default, PostgreSQL.

Every operation is a plain function over a SQLAlchemy `Connection`, run as one transaction:
- PostgreSQL: on the async engine (asyncpg), through `AsyncConnection.run_sync`. Jobs are
  claimed with `FOR UPDATE SKIP LOCKED`; same-key enqueues take an advisory lock.
- SQLite: on one connection owned by one thread, one hop per transaction. (Through aiosqlite,
  every statement was a hop through the event loop, and under load that cost more than the
  SQL.) WAL mode, and every transaction `BEGIN IMMEDIATE`, so one writer at a time across
  processes too. Deliveries and completions that arrive while a commit is in flight are
  written together in the next one (`batching.GroupCommit`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.metrics import PoolUsage
from bot.store import migrations
from bot.store.base import (
    EXCHANGE_UPDATABLE,
    JOB_STATES,
    REVIEW_UPDATABLE,
    DayTotals,
    Delivery,
    Enqueued,
    ExchangeRecord,
    ExchangeStart,
    FindingRecord,
    Installation,
    InstallationState,
    Job,
    JobState,
    NewJob,
    PullRequestState,
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
from bot.store.schema import (
    deliveries,
    exchanges,
    findings,
    installation_repositories,
    installations,
    jobs,
    llm_cache,
    pr_states,
    reviews,
    usage,
)

T = TypeVar("T")
LEASE_SWEEP_INTERVAL = 1.0
LEASE_EXPIRED = "lease expired: the worker running this job stopped before finishing"
_DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, OSError, TimeoutError)


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
        self.backend = "sqlite" if url.startswith("sqlite") else "postgresql"
        self._pool_size = pool_size
        self._max_overflow = max_overflow
        self._clock = clock
        self._async_engine: AsyncEngine | None = None
        self._sqlite_engine: Engine | None = None
        self._sqlite_thread: ThreadPoolExecutor | None = None
        self._last_sweep: dict[str, float] = {}  # by claiming worker: its sweep spares its jobs
        self._deliveries = GroupCommit(self._accept_batch)
        self._completions = GroupCommit(self._complete_batch)
        self._operations = GroupCommit(self._run_together)

    # --- Connection --------------------------------------------------------------------------

    async def open(self) -> None:
        if self._async_engine is not None or self._sqlite_engine is not None:
            return
        if self.backend == "sqlite":
            self._sqlite_engine = _sqlite_engine(self.url)
            self._sqlite_thread = ThreadPoolExecutor(1, thread_name_prefix="arbiter-sqlite")
        else:
            self._async_engine = create_async_engine(
                self.url,
                pool_size=self._pool_size,
                max_overflow=self._max_overflow,
                pool_pre_ping=True,
                pool_recycle=1800,
            )

    def pool_usage(self) -> PoolUsage | None:
        """The PostgreSQL connection pool now, for /metrics (None on SQLite: one thread)."""
        pool = self._async_engine.pool if self._async_engine is not None else None
        if not isinstance(pool, sa.pool.QueuePool):
            return None
        return PoolUsage(
            in_use=pool.checkedout(),
            idle=pool.checkedin(),
            limit=pool.size() + self._max_overflow,
        )

    async def close(self) -> None:
        await self._deliveries.drain()
        await self._completions.drain()
        await self._operations.drain()
        if self._async_engine is not None:
            await self._async_engine.dispose()
            self._async_engine = None
        if self._sqlite_engine is not None and self._sqlite_thread is not None:
            engine, thread = self._sqlite_engine, self._sqlite_thread
            await asyncio.get_running_loop().run_in_executor(thread, engine.dispose)
            thread.shutdown(wait=True)
            self._sqlite_engine, self._sqlite_thread = None, None

    async def _run(self, operation: Callable[[Connection], T], *, alone: bool = False) -> T:
        """Run `operation` in a transaction; database failures surface as StoreUnavailable.

        On SQLite, operations that arrive while a commit is in flight share the next
        transaction, each in a savepoint of its own (so one that fails fails alone); `alone`
        runs it in a transaction of its own (migrations, and work that is already a batch).
        """
        try:
            if self._sqlite_engine is not None and self._sqlite_thread is not None:
                if not alone:
                    outcome: _Outcome[T] = await self._operations.submit(operation)
                    return outcome.unwrap()
                engine = self._sqlite_engine
                return await asyncio.get_running_loop().run_in_executor(
                    self._sqlite_thread, _in_transaction, engine, operation
                )
            if self._async_engine is None:
                raise RuntimeError("the store is not open: call `await store.open()` first")
            async with self._async_engine.begin() as conn:
                return await conn.run_sync(operation)
        except _DB_ERRORS as exc:
            raise StoreUnavailable(f"{self.backend} store: {_short(exc)}") from exc

    async def _run_together(
        self, operations: list[Callable[[Connection], Any]]
    ) -> list[_Outcome[Any]]:
        if self._sqlite_engine is None or self._sqlite_thread is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        return await asyncio.get_running_loop().run_in_executor(
            self._sqlite_thread, _in_one_transaction, self._sqlite_engine, operations
        )

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

    # --- Deliveries and jobs -----------------------------------------------------------------

    async def accept_delivery(self, delivery: Delivery, job: NewJob) -> Enqueued:
        if self.backend == "sqlite":
            return await self._deliveries.submit((delivery, job))
        now = self._clock()
        return await self._run(lambda conn: _accept_one(conn, delivery, job, now))

    async def _accept_batch(self, items: list[tuple[Delivery, NewJob]]) -> list[Enqueued]:
        now = self._clock()
        return await self._run(lambda conn: _accept_many(conn, items, now), alone=True)

    async def enqueue(self, job: NewJob) -> Enqueued:
        now = self._clock()
        return await self._run(lambda conn: _enqueue(conn, job, now))

    async def claim(self, worker_id: str, *, limit: int, lease_seconds: float) -> list[Job]:
        if limit <= 0:
            return []
        now = self._clock()
        # Leases are seconds long: looking for expired ones once a second is often enough.
        last = self._last_sweep.get(worker_id, float("-inf"))
        sweep = now - last >= LEASE_SWEEP_INTERVAL or now < last
        if sweep:
            self._last_sweep[worker_id] = now
        return await self._run(
            lambda conn: _claim(conn, worker_id, limit, lease_seconds, now, sweep)
        )

    async def renew_leases(
        self, worker_id: str, job_ids: Iterable[int], lease_seconds: float
    ) -> int:
        ids = list(job_ids)
        if not ids:
            return 0
        now = self._clock()
        statement = (
            sa.update(jobs)
            .where(jobs.c.id.in_(ids), jobs.c.worker_id == worker_id, jobs.c.state == "running")
            .values(lease_until=now + lease_seconds, updated_at=now)
        )
        return await self._run(lambda conn: int(conn.execute(statement).rowcount))

    async def complete(self, job_id: int, worker_id: str) -> bool:
        if self.backend == "sqlite":
            return await self._completions.submit((job_id, worker_id))
        (done,) = await self._complete_batch([(job_id, worker_id)])
        return done

    async def _complete_batch(self, items: list[tuple[int, str]]) -> list[bool]:
        now = self._clock()
        return await self._run(lambda conn: _complete_many(conn, items, now), alone=True)

    async def _finish(self, job_id: int, worker_id: str, **values: Any) -> bool:
        values.setdefault("updated_at", self._clock())
        statement = (
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.state == "running")
            .values(worker_id=None, lease_until=None, **values)
        )
        return await self._run(lambda conn: bool(conn.execute(statement).rowcount))

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
        # The attempt was never made: give it back (never below zero).
        attempts = sa.case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0)
        extra = {} if note is None else {"last_error": note}
        return await self._finish(
            job_id,
            worker_id,
            state="queued",
            attempts=attempts,
            run_at=self._clock() + delay,
            **extra,
        )

    async def cancel_queued(self, key: str, reason: str) -> list[int]:
        now = self._clock()
        statement = (
            sa.update(jobs)
            .where(jobs.c.key == key, jobs.c.state == "queued")
            .values(state="cancelled", last_error=reason, finished_at=now, updated_at=now)
            .returning(jobs.c.id)
        )
        return await self._run(lambda conn: sorted(conn.execute(statement).scalars()))

    async def requeue(self, job_id: int) -> bool:
        now = self._clock()
        statement = (
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state.in_(["dead", "cancelled"]))
            .values(state="queued", attempts=0, run_at=now, finished_at=None, updated_at=now)
        )
        return await self._run(lambda conn: bool(conn.execute(statement).rowcount))

    async def get_job(self, job_id: int) -> Job | None:
        statement = sa.select(jobs).where(jobs.c.id == job_id)

        def read(conn: Connection) -> Job | None:
            row = conn.execute(statement).mappings().first()
            return _job(row) if row else None

        return await self._run(read)

    async def list_jobs(
        self, *, state: JobState | None = None, kind: str | None = None, limit: int = 100
    ) -> list[Job]:
        statement = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if state is not None:
            statement = statement.where(jobs.c.state == state)
        if kind is not None:
            statement = statement.where(jobs.c.kind == kind)
        return await self._run(
            lambda conn: [_job(row) for row in conn.execute(statement).mappings()]
        )

    async def job_counts(self) -> dict[str, int]:
        statement = sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)

        def count(conn: Connection) -> dict[str, int]:
            counts: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
            counts.update({str(state): int(n) for state, n in conn.execute(statement)})
            return counts

        return await self._run(count)

    async def seen_delivery(self, platform: str, delivery_id: str) -> bool:
        statement = sa.select(deliveries.c.delivery_id).where(
            deliveries.c.platform == platform, deliveries.c.delivery_id == delivery_id
        )
        return await self._run(lambda conn: conn.execute(statement).first() is not None)

    async def purge(self, *, max_age: float) -> int:
        now = self._clock()
        older_than = now - max_age

        def purge(conn: Connection) -> int:
            gone = conn.execute(sa.delete(deliveries).where(deliveries.c.received_at < older_than))
            done = conn.execute(
                sa.delete(jobs).where(
                    jobs.c.state.in_(["done", "cancelled"]), jobs.c.finished_at < older_than
                )
            )
            expired = conn.execute(sa.delete(llm_cache).where(llm_cache.c.expires_at < now))
            return int(gone.rowcount) + int(done.rowcount) + int(expired.rowcount)

        return await self._run(purge)

    # --- LLM response cache ------------------------------------------------------------------

    async def cache_get(self, key: str) -> str | None:
        statement = sa.select(llm_cache.c.value).where(
            llm_cache.c.key == key, llm_cache.c.expires_at > self._clock()
        )
        value = await self._run(lambda conn: conn.execute(statement).scalar_one_or_none())
        return None if value is None else str(value)

    async def cache_put(self, key: str, value: str, *, ttl_seconds: float) -> None:
        now = self._clock()
        row = {"value": value, "created_at": now, "expires_at": now + ttl_seconds}
        statement = (
            _insert(self.backend, llm_cache)
            .values(key=key, **row)
            .on_conflict_do_update(index_elements=["key"], set_=row)
        )
        await self._run(lambda conn: conn.execute(statement))

    # --- Reviews, findings, pull-request state, usage ------------------------------------------

    async def start_review(self, start: ReviewStart) -> ReviewRecord:
        now = self._clock()

        def begin(conn: Connection) -> ReviewRecord:
            if start.job_id is not None:
                row = (
                    conn.execute(
                        sa.select(reviews)
                        .where(reviews.c.job_id == start.job_id)
                        .order_by(reviews.c.id.desc())
                        .limit(1)
                    )
                    .mappings()
                    .first()
                )
                if row is not None:
                    conn.execute(
                        sa.update(reviews)
                        .where(reviews.c.id == row["id"])
                        .values(
                            head_sha=start.head_sha,
                            base_sha=start.base_sha,
                            mode=start.mode,
                            state="running",
                        )
                    )
                    return _review(_read_review(conn, int(row["id"])))
            review_id = conn.execute(
                sa.insert(reviews)
                .values(
                    platform=start.platform,
                    repo=start.repo,
                    number=start.number,
                    job_id=start.job_id,
                    delivery_id=start.delivery_id,
                    head_sha=start.head_sha,
                    base_sha=start.base_sha,
                    mode=start.mode,
                    state="running",
                    calls=0,
                    cached_calls=0,
                    input_tokens=0,
                    output_tokens=0,
                    cost_usd=0.0,
                    findings=0,
                    dropped=0,
                    created_at=now,
                )
                .returning(reviews.c.id)
            ).scalar_one()
            return _review(_read_review(conn, int(review_id)))

        return await self._run(begin)

    async def update_review(self, review_id: int, **changes: Any) -> None:
        unknown = set(changes) - REVIEW_UPDATABLE
        if unknown:
            raise ValueError(f"not review columns that may change: {sorted(unknown)}")
        values = dict(changes)
        for column in ("severity_counts", "not_reviewed"):
            if column in values and values[column] is not None:
                values[column] = json.dumps(values[column])
        statement = sa.update(reviews).where(reviews.c.id == review_id).values(**values)
        await self._run(lambda conn: conn.execute(statement))

    async def get_review(self, review_id: int) -> ReviewRecord | None:
        def read(conn: Connection) -> ReviewRecord | None:
            row = _read_review(conn, review_id)
            return _review(row) if row is not None else None

        return await self._run(read)

    async def list_reviews(
        self,
        *,
        platform: str | None = None,
        repo: str | None = None,
        number: int | None = None,
        limit: int = 100,
    ) -> list[ReviewRecord]:
        statement = sa.select(reviews).order_by(reviews.c.id.desc()).limit(limit)
        for column, value in (("platform", platform), ("repo", repo), ("number", number)):
            if value is not None:
                statement = statement.where(reviews.c[column] == value)
        return await self._run(
            lambda conn: [_review(row) for row in conn.execute(statement).mappings()]
        )

    async def record_findings(
        self,
        review_id: int,
        platform: str,
        repo: str,
        number: int,
        records: Iterable[FindingRecord],
    ) -> int:
        now = self._clock()
        rows = [
            {
                "review_id": review_id,
                "platform": platform,
                "repo": repo,
                "number": number,
                "fingerprint": f.fingerprint,
                "path": f.path,
                "line": f.line,
                "start_line": f.start_line,
                "severity": f.severity,
                "category": f.category,
                "title": f.title,
                "body": f.body,
                "confidence": f.confidence,
                "posted": f.posted,
                "created_at": now,
            }
            for f in {f.fingerprint: f for f in records}.values()
        ]
        if not rows:
            return 0
        statement = (
            _insert(self.backend, findings)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["platform", "repo", "number", "fingerprint"])
        )
        return await self._run(lambda conn: int(conn.execute(statement).rowcount))

    async def findings_for(
        self, platform: str, repo: str, number: int, *, review_id: int | None = None
    ) -> list[FindingRecord]:
        statement = (
            sa.select(findings)
            .where(findings.c.platform == platform, findings.c.repo == repo)
            .where(findings.c.number == number)
            .order_by(findings.c.id)
        )
        if review_id is not None:
            statement = statement.where(findings.c.review_id == review_id)

        def read(conn: Connection) -> list[FindingRecord]:
            return [
                FindingRecord(
                    fingerprint=row["fingerprint"],
                    path=row["path"],
                    line=int(row["line"]),
                    start_line=row["start_line"],
                    severity=row["severity"],
                    category=row["category"],
                    title=row["title"],
                    body=row["body"],
                    confidence=float(row["confidence"]),
                    posted=bool(row["posted"]),
                )
                for row in conn.execute(statement).mappings()
            ]

        return await self._run(read)

    async def pr_state(self, platform: str, repo: str, number: int) -> PullRequestState:
        statement = sa.select(pr_states).where(
            pr_states.c.platform == platform,
            pr_states.c.repo == repo,
            pr_states.c.number == number,
        )

        def read(conn: Connection) -> PullRequestState:
            row = conn.execute(statement).mappings().first()
            return _pr_state(platform, repo, number, row)

        return await self._run(read)

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
        now = self._clock()
        given = {
            "last_reviewed_head": last_reviewed_head,
            "paused": paused,
            "full_requested": full_requested,
        }
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        changes["updated_at"] = now
        initial = {"paused": False, "full_requested": False, **changes}
        statement = (
            _insert(self.backend, pr_states)
            .values(platform=platform, repo=repo, number=number, **initial)
            .on_conflict_do_update(index_elements=["platform", "repo", "number"], set_=changes)
            .returning(*pr_states.c)
        )

        def upsert(conn: Connection) -> PullRequestState:
            row = conn.execute(statement).mappings().first()
            return _pr_state(platform, repo, number, row)

        return await self._run(upsert)

    async def record_usage(self, record: UsageRecord) -> None:
        statement = sa.insert(usage).values(
            at=self._clock(),
            kind=record.kind,
            platform=record.platform,
            repo=record.repo,
            number=record.number,
            model=record.model,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            cost_usd=record.cost_usd,
            review_id=record.review_id,
        )
        await self._run(lambda conn: conn.execute(statement))

    async def spent_since(self, since: float) -> float:
        statement = sa.select(sa.func.coalesce(sa.func.sum(usage.c.cost_usd), 0.0)).where(
            usage.c.at >= since
        )
        return await self._run(lambda conn: float(conn.execute(statement).scalar_one()))

    # --- Exchanges ---------------------------------------------------------------------------

    async def start_exchange(self, start: ExchangeStart) -> ExchangeRecord:
        row = {
            "platform": start.platform,
            "delivery_id": start.delivery_id,
            "repo": start.repo,
            "number": start.number,
            "comment_id": start.comment_id,
            "thread": start.thread,
            "path": start.path,
            "line": start.line,
            "author": start.author,
            "kind": start.kind,
            "command": start.command,
            "question": start.question,
            "outcome": "pending",
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
            "created_at": self._clock(),
        }
        insert = (
            _insert(self.backend, exchanges)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["platform", "delivery_id"])
        )
        read = sa.select(exchanges).where(
            exchanges.c.platform == start.platform, exchanges.c.delivery_id == start.delivery_id
        )

        def begin(conn: Connection) -> ExchangeRecord:
            conn.execute(insert)
            return _exchange(conn.execute(read).mappings().one())

        return await self._run(begin)

    async def update_exchange(self, exchange_id: int, **changes: Any) -> None:
        unknown = set(changes) - EXCHANGE_UPDATABLE
        if unknown:
            raise ValueError(f"not exchange columns that may change: {sorted(unknown)}")
        if not changes:
            return
        statement = sa.update(exchanges).where(exchanges.c.id == exchange_id).values(**changes)
        await self._run(lambda conn: conn.execute(statement))

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
        statement = sa.select(exchanges).order_by(exchanges.c.id.desc()).limit(limit)
        given = (("platform", platform), ("repo", repo), ("number", number), ("author", author))
        for column, value in given:
            if value is not None:
                statement = statement.where(exchanges.c[column] == value)
        if since is not None:
            statement = statement.where(exchanges.c.created_at >= since)
        return await self._run(
            lambda conn: [_exchange(row) for row in conn.execute(statement).mappings()]
        )

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
        statement = sa.select(sa.func.count()).where(
            exchanges.c.platform == platform,
            exchanges.c.repo == repo,
            exchanges.c.number == number,
            exchanges.c.author == author,
            exchanges.c.created_at >= since,
            exchanges.c.outcome.in_(list(outcomes)),
        )
        if through_id is not None:
            statement = statement.where(exchanges.c.id <= through_id)
        return await self._run(lambda conn: int(conn.execute(statement).scalar_one()))

    # --- Installations -----------------------------------------------------------------------

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
        now = self._clock()
        changes = {
            "account": account,
            "account_type": account_type,
            "state": state,
            "repository_selection": repository_selection,
            "updated_at": now,
        }
        statement = (
            _insert(self.backend, installations)
            .values(platform=platform, installation_id=installation_id, created_at=now, **changes)
            .on_conflict_do_update(index_elements=["platform", "installation_id"], set_=changes)
        )
        names = None if repositories is None else list(repositories)

        def upsert(conn: Connection) -> None:
            conn.execute(statement)
            if names is not None:
                conn.execute(
                    sa.delete(installation_repositories).where(
                        installation_repositories.c.platform == platform,
                        installation_repositories.c.installation_id == installation_id,
                    )
                )
                _add_repos(conn, self.backend, platform, installation_id, names, now)

        await self._run(upsert)

    async def set_installation_state(
        self, platform: str, installation_id: int, state: InstallationState
    ) -> bool:
        statement = (
            sa.update(installations)
            .where(
                installations.c.platform == platform,
                installations.c.installation_id == installation_id,
            )
            .values(state=state, updated_at=self._clock())
        )
        return await self._run(lambda conn: bool(conn.execute(statement).rowcount))

    async def add_repositories(
        self, platform: str, installation_id: int, repositories: Iterable[str]
    ) -> None:
        names, now = list(repositories), self._clock()
        await self._run(
            lambda conn: _add_repos(conn, self.backend, platform, installation_id, names, now)
        )

    async def remove_repositories(
        self, platform: str, installation_id: int, repositories: Iterable[str]
    ) -> None:
        names = list(repositories)
        if not names:
            return
        statement = sa.delete(installation_repositories).where(
            installation_repositories.c.platform == platform,
            installation_repositories.c.installation_id == installation_id,
            installation_repositories.c.repo.in_(names),
        )
        await self._run(lambda conn: conn.execute(statement))

    async def get_installation(self, platform: str, installation_id: int) -> Installation | None:
        found = await self._run(
            lambda conn: _installations(
                conn,
                installations.c.platform == platform,
                installations.c.installation_id == installation_id,
            )
        )
        return found[0] if found else None

    async def list_installations(self, platform: str | None = None) -> list[Installation]:
        where = [] if platform is None else [installations.c.platform == platform]
        return await self._run(lambda conn: _installations(conn, *where))

    # --- Operator views (the dashboard's API) ------------------------------------------------

    async def find_reviews(self, query: ReviewQuery) -> list[ReviewRecord]:
        statement = sa.select(reviews).order_by(reviews.c.id.desc()).limit(query.limit)
        for column, value in (
            ("platform", query.platform),
            ("repo", query.repo),
            ("outcome", query.outcome),
        ):
            if value is not None:
                statement = statement.where(reviews.c[column] == value)
        if query.since is not None:
            statement = statement.where(reviews.c.created_at >= query.since)
        if query.before_id is not None:
            statement = statement.where(reviews.c.id < query.before_id)
        return await self._run(
            lambda conn: [_review(row) for row in conn.execute(statement).mappings()]
        )

    async def review_activity(self, since: float) -> ReviewActivity:
        return await self._run(lambda conn: _review_activity(conn, since))

    async def repo_activity(self) -> list[RepoActivity]:
        last = sa.func.max(reviews.c.created_at)
        statement = (
            sa.select(
                reviews.c.platform,
                reviews.c.repo,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(reviews.c.cost_usd), 0.0),
                sa.func.coalesce(sa.func.sum(reviews.c.findings), 0),
                last,
            )
            .group_by(reviews.c.platform, reviews.c.repo)
            .order_by(last.desc(), reviews.c.platform, reviews.c.repo)
        )

        def read(conn: Connection) -> list[RepoActivity]:
            return [
                RepoActivity(
                    platform=str(platform),
                    repo=str(repo),
                    reviews=int(n),
                    cost_usd=float(cost),
                    findings=int(found),
                    last_review_at=float(at),
                )
                for platform, repo, n, cost, found, at in conn.execute(statement)
            ]

        return await self._run(read)


# --- The SQL, one transaction's worth at a time --------------------------------------------------


def _utc_day(conn: Connection, seconds: Any) -> Any:
    """The UTC day number of a UNIX-seconds column, floor(seconds / 86400), in each dialect."""
    if conn.dialect.name == "postgresql":
        return sa.cast(sa.func.floor(seconds / 86400), sa.BigInteger)
    return sa.cast(seconds / 86400, sa.Integer)  # truncation is floor for times after 1970


def _review_activity(conn: Connection, since: float) -> ReviewActivity:
    started = reviews.c.created_at >= since
    review_day = _utc_day(conn, reviews.c.created_at).label("day")
    per_day: dict[int, int] = {
        int(day): int(n)
        for day, n in conn.execute(
            sa.select(review_day, sa.func.count()).where(started).group_by(review_day)
        )
    }
    usage_day = _utc_day(conn, usage.c.at).label("day")
    spent: dict[int, tuple[float, int, int]] = {
        int(day): (float(cost), int(tokens_in), int(tokens_out))
        for day, cost, tokens_in, tokens_out in conn.execute(
            sa.select(
                usage_day,
                sa.func.sum(usage.c.cost_usd),
                sa.func.sum(usage.c.input_tokens),
                sa.func.sum(usage.c.output_tokens),
            )
            .where(usage.c.at >= since)
            .group_by(usage_day)
        )
    }
    days = tuple(
        DayTotals(day, per_day.get(day, 0), *spent.get(day, (0.0, 0, 0)))
        for day in sorted(per_day.keys() | spent.keys())
    )
    outcomes: dict[str, int] = {
        str(outcome or "unfinished"): int(n)
        for outcome, n in conn.execute(
            sa.select(reviews.c.outcome, sa.func.count()).where(started).group_by(reviews.c.outcome)
        )
    }
    calls, cached = conn.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(reviews.c.calls), 0),
            sa.func.coalesce(sa.func.sum(reviews.c.cached_calls), 0),
        ).where(started)
    ).one()
    severities: dict[str, int] = {
        str(severity): int(n)
        for severity, n in conn.execute(
            sa.select(findings.c.severity, sa.func.count())
            .select_from(findings.join(reviews, findings.c.review_id == reviews.c.id))
            .where(started)
            .group_by(findings.c.severity)
        )
    }
    durations = tuple(
        float(d)
        for d in conn.execute(
            sa.select(reviews.c.duration_seconds)
            .where(started, reviews.c.state == "done", reviews.c.duration_seconds.is_not(None))
            .order_by(reviews.c.duration_seconds)
        ).scalars()
    )
    return ReviewActivity(
        days=days,
        outcomes=outcomes,
        calls=int(calls),
        cached_calls=int(cached),
        findings_by_severity=severities,
        durations=durations,
    )


def _in_transaction(engine: Engine, operation: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return operation(conn)


@dataclass(frozen=True)
class _Outcome(Generic[T]):
    """What one operation of a shared transaction came to: its value, or its error."""

    value: T | None = None
    error: Exception | None = None

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        return cast(T, self.value)


def _in_one_transaction(
    engine: Engine, operations: list[Callable[[Connection], Any]]
) -> list[_Outcome[Any]]:
    if len(operations) == 1:  # no savepoint needed for one
        try:
            return [_Outcome(_in_transaction(engine, operations[0]))]
        except _DB_ERRORS:
            raise
        except Exception as exc:
            return [_Outcome(error=exc)]
    outcomes: list[_Outcome[Any]] = []
    with engine.begin() as conn:
        for operation in operations:
            try:
                with conn.begin_nested():
                    outcomes.append(_Outcome(operation(conn)))
            except Exception as exc:
                outcomes.append(_Outcome(error=exc))
    return outcomes


def _insert(backend: str, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    return (sqlite.insert if backend == "sqlite" else postgresql.insert)(table)


def _accept_one(conn: Connection, delivery: Delivery, job: NewJob, now: float) -> Enqueued:
    inserted = conn.execute(
        _insert(conn.dialect.name, deliveries)
        .values(
            platform=delivery.platform,
            delivery_id=delivery.delivery_id,
            event=delivery.event,
            received_at=now,
        )
        .on_conflict_do_nothing()
    )
    if inserted.rowcount == 0:
        return Enqueued(job_id=None, duplicate=True)
    return _enqueue(conn, job, now)


def _accept_many(
    conn: Connection, items: list[tuple[Delivery, NewJob]], now: float
) -> list[Enqueued]:
    """Several deliveries in three statements. SQLite only: its BEGIN IMMEDIATE holds the write
    lock from the start, so nobody inserts between the SELECT and the INSERT."""
    found = conn.execute(
        sa.select(deliveries.c.platform, deliveries.c.delivery_id).where(
            deliveries.c.delivery_id.in_({d.delivery_id for d, _ in items})
        )
    )
    seen = {(platform, delivery_id) for platform, delivery_id in found}
    results: list[Enqueued] = [Enqueued(job_id=None, duplicate=True)] * len(items)
    fresh: list[int] = []
    for index, (delivery, _) in enumerate(items):
        if (delivery.platform, delivery.delivery_id) not in seen:
            seen.add((delivery.platform, delivery.delivery_id))
            fresh.append(index)
    if not fresh:
        return results
    conn.execute(
        sa.insert(deliveries),
        [
            {
                "platform": items[i][0].platform,
                "delivery_id": items[i][0].delivery_id,
                "event": items[i][0].event,
                "received_at": now,
            }
            for i in fresh
        ],
    )
    plain = [i for i in fresh if items[i][1].key is None]
    for i in fresh:
        if items[i][1].key is not None:  # coalescing needs the one-by-one path
            results[i] = _enqueue(conn, items[i][1], now)
    if plain:
        ids = conn.execute(
            sa.insert(jobs).returning(jobs.c.id, sort_by_parameter_order=True),
            [_job_row(items[i][1], now) for i in plain],
        ).scalars()
        for i, job_id in zip(plain, ids, strict=True):
            results[i] = Enqueued(job_id=job_id)
    return results


def _enqueue(conn: Connection, job: NewJob, now: float) -> Enqueued:
    if job.key is not None and conn.dialect.name == "postgresql":
        # Two enqueues of one key must not both miss each other's queued job.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": job.key})
    job_id = conn.execute(sa.insert(jobs).returning(jobs.c.id), _job_row(job, now)).scalar_one()
    replaced: tuple[int, ...] = ()
    if job.key is not None:
        rows = conn.execute(
            sa.update(jobs)
            .where(jobs.c.key == job.key, jobs.c.state == "queued", jobs.c.id != job_id)
            .values(
                state="cancelled",
                last_error=f"superseded by job {job_id}",
                finished_at=now,
                updated_at=now,
            )
            .returning(jobs.c.id)
        )
        replaced = tuple(sorted(rows.scalars()))
    return Enqueued(job_id=job_id, replaced=replaced)


def _sweep_expired_leases(conn: Connection, now: float, claimer: str) -> None:
    """Jobs whose worker stopped renewing: queued again, or dead if that was the last attempt.

    The claiming worker's own jobs are left alone: it is alive (it is claiming), so a lease of
    its that ran out means a late heartbeat, not a dead worker, and running the job a second
    time beside the first would be wrong."""
    expired = sa.and_(
        jobs.c.state == "running", jobs.c.lease_until < now, jobs.c.worker_id != claimer
    )
    conn.execute(
        sa.update(jobs)
        .where(expired, jobs.c.attempts >= jobs.c.max_attempts)
        .values(
            state="dead",
            last_error=sa.func.coalesce(jobs.c.last_error + "\n", "") + LEASE_EXPIRED,
            worker_id=None,
            lease_until=None,
            finished_at=now,
            updated_at=now,
        )
    )
    conn.execute(
        sa.update(jobs)
        .where(expired)
        .values(
            state="queued",
            last_error=LEASE_EXPIRED,
            worker_id=None,
            lease_until=None,
            run_at=now,
            updated_at=now,
        )
    )


def _claim_statement(*, skip_locked: bool) -> sa.Update:
    """Claim up to :limit queued jobs that are due and whose key has no job running.

    Built once: the hot path binds parameters to it instead of building SQL per claim.
    Only queued jobs are candidates, which the (state, run_at) index answers in order however
    many finished jobs the table holds.
    """
    now = sa.bindparam("now", type_=sa.Float)
    cand, busy, first = jobs.alias("cand"), jobs.alias("busy"), jobs.alias("first")
    key_free = ~sa.exists().where(
        busy.c.key == cand.c.key, busy.c.state == "running", busy.c.lease_until >= now
    )
    # Of a key's due jobs, only the oldest may be taken: a retried job and the newer one that
    # queued behind it must not both run (one claim, or two at once, could take both).
    first_of_key = cand.c.id == (
        sa.select(sa.func.min(first.c.id))
        .where(first.c.key == cand.c.key, first.c.state == "queued", first.c.run_at <= now)
        .scalar_subquery()
    )
    candidates = (
        sa.select(cand.c.id)
        .where(
            cand.c.state == "queued",
            cand.c.run_at <= now,
            sa.or_(cand.c.key.is_(None), sa.and_(key_free, first_of_key)),
        )
        .order_by(cand.c.run_at, cand.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    if skip_locked:
        candidates = candidates.with_for_update(skip_locked=True)
    return (
        sa.update(jobs)
        .where(jobs.c.id.in_(candidates.scalar_subquery()))
        .values(
            state="running",
            attempts=jobs.c.attempts + 1,
            worker_id=sa.bindparam("claimer", type_=sa.String),
            lease_until=sa.bindparam("lease", type_=sa.Float),
            started_at=now,
            updated_at=now,
        )
        .returning(*jobs.c)
    )


_CLAIM = {False: _claim_statement(skip_locked=False), True: _claim_statement(skip_locked=True)}

_FINISHED_AT = sa.bindparam("finished", type_=sa.Float)
_COMPLETE = (
    sa.update(jobs)
    .where(
        jobs.c.id.in_(sa.bindparam("ids", expanding=True)),
        jobs.c.worker_id == sa.bindparam("owner", type_=sa.String),
        jobs.c.state == "running",
    )
    .values(
        state="done",
        worker_id=None,
        lease_until=None,
        finished_at=_FINISHED_AT,
        updated_at=_FINISHED_AT,
    )
    .returning(jobs.c.id)
)


def _claim(
    conn: Connection, worker_id: str, limit: int, lease_seconds: float, now: float, sweep: bool
) -> list[Job]:
    if sweep:
        _sweep_expired_leases(conn, now, worker_id)
    statement = _CLAIM[conn.dialect.name == "postgresql"]
    rows = conn.execute(
        statement,
        {"now": now, "limit": limit, "claimer": worker_id, "lease": now + lease_seconds},
    )
    return sorted((_job(row) for row in rows.mappings()), key=lambda j: (j.run_at, j.id))


def _complete_many(conn: Connection, items: list[tuple[int, str]], now: float) -> list[bool]:
    done: set[int] = set()
    for worker_id in {w for _, w in items}:
        ids = [job_id for job_id, w in items if w == worker_id]
        rows = conn.execute(_COMPLETE, {"ids": ids, "owner": worker_id, "finished": now})
        done.update(rows.scalars())
    return [job_id in done for job_id, _ in items]


def _add_repos(
    conn: Connection,
    backend: str,
    platform: str,
    installation_id: int,
    repositories: list[str],
    now: float,
) -> None:
    rows = [
        {"platform": platform, "installation_id": installation_id, "repo": r, "added_at": now}
        for r in dict.fromkeys(repositories)
    ]
    if rows:
        conn.execute(
            _insert(backend, installation_repositories).values(rows).on_conflict_do_nothing()
        )


def _installations(conn: Connection, *where: sa.ColumnElement[bool]) -> list[Installation]:
    rows = conn.execute(
        sa.select(installations)
        .where(*where)
        .order_by(installations.c.platform, installations.c.installation_id)
    ).mappings()
    found = list(rows)
    repos = conn.execute(
        sa.select(installation_repositories).order_by(installation_repositories.c.repo)
    ).mappings()
    by_key: dict[tuple[str, int], list[str]] = {}
    for repo in repos:
        by_key.setdefault((repo["platform"], repo["installation_id"]), []).append(repo["repo"])
    return [
        Installation(
            platform=row["platform"],
            installation_id=int(row["installation_id"]),
            account=row["account"],
            account_type=row["account_type"],
            state=row["state"],
            repository_selection=row["repository_selection"],
            repositories=tuple(by_key.get((row["platform"], row["installation_id"]), ())),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        for row in found
    ]


def _read_review(conn: Connection, review_id: int) -> Any:
    return conn.execute(sa.select(reviews).where(reviews.c.id == review_id)).mappings().first()


def _review(row: Any) -> ReviewRecord:
    return ReviewRecord(
        id=int(row["id"]),
        platform=row["platform"],
        repo=row["repo"],
        number=int(row["number"]),
        head_sha=row["head_sha"],
        base_sha=row["base_sha"],
        mode=row["mode"],
        state=row["state"],
        outcome=row["outcome"],
        reason=row["reason"],
        job_id=row["job_id"],
        delivery_id=row["delivery_id"],
        model=row["model"],
        calls=int(row["calls"]),
        cached_calls=int(row["cached_calls"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cost_usd=float(row["cost_usd"]),
        findings=int(row["findings"]),
        severity_counts=json.loads(row["severity_counts"]) if row["severity_counts"] else {},
        not_reviewed=json.loads(row["not_reviewed"]) if row["not_reviewed"] else [],
        dropped=int(row["dropped"]),
        posted_review_id=row["posted_review_id"],
        url=row["url"],
        duration_seconds=row["duration_seconds"],
        created_at=float(row["created_at"]),
        finished_at=row["finished_at"],
    )


def _pr_state(platform: str, repo: str, number: int, row: Any) -> PullRequestState:
    if row is None:
        return PullRequestState(platform, repo, number)
    return PullRequestState(
        platform,
        repo,
        number,
        last_reviewed_head=row["last_reviewed_head"],
        paused=bool(row["paused"]),
        full_requested=bool(row["full_requested"]),
    )


def _exchange(row: Any) -> ExchangeRecord:
    return ExchangeRecord(
        id=int(row["id"]),
        platform=row["platform"],
        delivery_id=row["delivery_id"],
        repo=row["repo"],
        number=int(row["number"]),
        comment_id=row["comment_id"],
        thread=row["thread"],
        path=row["path"],
        line=row["line"],
        author=row["author"],
        kind=row["kind"],
        command=row["command"],
        question=row["question"],
        outcome=row["outcome"],
        answer=row["answer"],
        confidence=row["confidence"],
        reply_id=row["reply_id"],
        model=row["model"],
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cost_usd=float(row["cost_usd"]),
        created_at=float(row["created_at"]),
        finished_at=row["finished_at"],
    )


def _job_row(job: NewJob, now: float) -> dict[str, Any]:
    return {
        "kind": job.kind,
        "key": job.key,
        "payload": job.payload,
        "state": "queued",
        "attempts": 0,
        "max_attempts": job.max_attempts,
        "run_at": job.run_at if job.run_at is not None else now,
        "delivery_id": job.delivery_id,
        "created_at": now,
        "updated_at": now,
    }


def _job(row: Any) -> Job:
    progress = row["progress"]
    return Job(
        id=int(row["id"]),
        kind=row["kind"],
        key=row["key"],
        payload=row["payload"],
        state=row["state"],
        attempts=int(row["attempts"]),
        max_attempts=int(row["max_attempts"]),
        run_at=float(row["run_at"]),
        lease_until=row["lease_until"],
        worker_id=row["worker_id"],
        last_error=row["last_error"],
        progress=json.loads(progress) if progress else {},
        delivery_id=row["delivery_id"],
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).splitlines()
    return text[0] if text else type(exc).__name__


def _sqlite_engine(url: str) -> Engine:
    """A synchronous engine on the stdlib driver, used from the store's one SQLite thread."""
    parsed = sa.engine.make_url(url).set(drivername="sqlite")
    database = parsed.database
    memory = database in (None, "", ":memory:")
    if not memory and database is not None:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        parsed, poolclass=sa.pool.SingletonThreadPool if memory else sa.pool.QueuePool
    )

    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN, so it can be BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that later writes can fail with
        # "database is locked" at once instead of waiting for the other writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
