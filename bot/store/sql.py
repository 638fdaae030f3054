"""The Store on SQL databases through SQLAlchemy Core (async): SQLite by default, PostgreSQL.

SQLite runs in WAL mode with every transaction `BEGIN IMMEDIATE` (one writer at a time, across
processes too) over a single pooled connection per process. PostgreSQL claims jobs with
`FOR UPDATE SKIP LOCKED` and serializes same-key enqueues with an advisory lock.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from bot.store import migrations
from bot.store.base import (
    JOB_STATES,
    Delivery,
    Enqueued,
    Installation,
    InstallationState,
    Job,
    JobState,
    NewJob,
    SchemaStatus,
    StoreUnavailable,
)
from bot.store.schema import deliveries, installation_repositories, installations, jobs, llm_cache

LEASE_EXPIRED = "lease expired: the worker running this job stopped before finishing"


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
        self._engine: AsyncEngine | None = None

    # --- Connection --------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        return self._engine

    async def open(self) -> None:
        if self._engine is not None:
            return
        if self.backend == "sqlite":
            self._engine = _sqlite_engine(self.url)
        else:
            self._engine = create_async_engine(
                self.url,
                pool_size=self._pool_size,
                max_overflow=self._max_overflow,
                pool_pre_ping=True,
                pool_recycle=1800,
            )

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; database failures surface as StoreUnavailable."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"{self.backend} store: {_short(exc)}") from exc

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(5):
                async with self._tx() as conn:
                    await conn.execute(sa.text("SELECT 1"))
        except TimeoutError as exc:
            raise StoreUnavailable(f"{self.backend} store did not answer within 5 s") from exc

    # --- Schema ------------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        async with self._tx() as conn:
            return await conn.run_sync(migrations.upgrade)

    async def schema_status(self) -> SchemaStatus:
        async with self._tx() as conn:
            current = await conn.run_sync(migrations.current_revision)
        return SchemaStatus(current=current, head=migrations.head_revision())

    # --- Deliveries and jobs -----------------------------------------------------------------

    async def accept_delivery(self, delivery: Delivery, job: NewJob) -> Enqueued:
        now = self._clock()
        async with self._tx() as conn:
            inserted = await conn.execute(
                self._insert(deliveries)
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
            return await self._enqueue(conn, job, now)

    async def enqueue(self, job: NewJob) -> Enqueued:
        now = self._clock()
        async with self._tx() as conn:
            return await self._enqueue(conn, job, now)

    async def _enqueue(self, conn: AsyncConnection, job: NewJob, now: float) -> Enqueued:
        if job.key is not None and self.backend == "postgresql":
            # Two enqueues of one key must not both miss each other's queued job.
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": job.key}
            )
        job_id = (
            await conn.execute(
                sa.insert(jobs)
                .values(
                    kind=job.kind,
                    key=job.key,
                    payload=job.payload,
                    state="queued",
                    attempts=0,
                    max_attempts=job.max_attempts,
                    run_at=job.run_at if job.run_at is not None else now,
                    delivery_id=job.delivery_id,
                    created_at=now,
                    updated_at=now,
                )
                .returning(jobs.c.id)
            )
        ).scalar_one()
        replaced: tuple[int, ...] = ()
        if job.key is not None:
            rows = await conn.execute(
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

    async def claim(self, worker_id: str, *, limit: int, lease_seconds: float) -> list[Job]:
        if limit <= 0:
            return []
        now = self._clock()
        async with self._tx() as conn:
            await conn.execute(
                sa.update(jobs)
                .where(
                    jobs.c.state == "running",
                    jobs.c.lease_until < now,
                    jobs.c.attempts >= jobs.c.max_attempts,
                )
                .values(
                    state="dead",
                    last_error=sa.func.coalesce(jobs.c.last_error + "\n", "") + LEASE_EXPIRED,
                    worker_id=None,
                    lease_until=None,
                    finished_at=now,
                    updated_at=now,
                )
            )
            cand, busy = jobs.alias("cand"), jobs.alias("busy")
            key_free = ~sa.exists().where(
                busy.c.key == cand.c.key,
                busy.c.state == "running",
                busy.c.lease_until >= now,
            )
            candidates = (
                sa.select(cand.c.id)
                .where(
                    sa.or_(
                        sa.and_(cand.c.state == "queued", cand.c.run_at <= now),
                        sa.and_(cand.c.state == "running", cand.c.lease_until < now),
                    ),
                    sa.or_(cand.c.key.is_(None), key_free),
                )
                .order_by(cand.c.run_at, cand.c.id)
                .limit(limit)
            )
            if self.backend == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            rows = await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id.in_(candidates.scalar_subquery()))
                .values(
                    state="running",
                    attempts=jobs.c.attempts + 1,
                    worker_id=worker_id,
                    lease_until=now + lease_seconds,
                    last_error=sa.case(
                        (jobs.c.state == "running", LEASE_EXPIRED), else_=jobs.c.last_error
                    ),
                    started_at=now,
                    updated_at=now,
                )
                .returning(*jobs.c)
            )
            claimed = [_job(row) for row in rows.mappings()]
        claimed.sort(key=lambda j: (j.run_at, j.id))
        return claimed

    async def renew_leases(
        self, worker_id: str, job_ids: Iterable[int], lease_seconds: float
    ) -> int:
        ids = list(job_ids)
        if not ids:
            return 0
        now = self._clock()
        async with self._tx() as conn:
            result = await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id.in_(ids), jobs.c.worker_id == worker_id, jobs.c.state == "running")
                .values(lease_until=now + lease_seconds, updated_at=now)
            )
            return int(result.rowcount)

    async def _finish(self, job_id: int, worker_id: str, **values: Any) -> bool:
        now = self._clock()
        values.setdefault("updated_at", now)
        async with self._tx() as conn:
            result = await conn.execute(
                sa.update(jobs)
                .where(
                    jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.state == "running"
                )
                .values(worker_id=None, lease_until=None, **values)
            )
            return bool(result.rowcount)

    async def complete(self, job_id: int, worker_id: str) -> bool:
        return await self._finish(job_id, worker_id, state="done", finished_at=self._clock())

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

    async def release(self, job_id: int, worker_id: str) -> bool:
        return await self._finish(
            job_id,
            worker_id,
            state="queued",
            attempts=sa.func.max(jobs.c.attempts - 1, 0)
            if self.backend == "sqlite"
            else sa.func.greatest(jobs.c.attempts - 1, 0),
            run_at=self._clock(),
        )

    async def cancel_queued(self, key: str, reason: str) -> list[int]:
        now = self._clock()
        async with self._tx() as conn:
            rows = await conn.execute(
                sa.update(jobs)
                .where(jobs.c.key == key, jobs.c.state == "queued")
                .values(state="cancelled", last_error=reason, finished_at=now, updated_at=now)
                .returning(jobs.c.id)
            )
            return sorted(rows.scalars())

    async def requeue(self, job_id: int) -> bool:
        now = self._clock()
        async with self._tx() as conn:
            result = await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state.in_(["dead", "cancelled"]))
                .values(
                    state="queued",
                    attempts=0,
                    run_at=now,
                    finished_at=None,
                    updated_at=now,
                )
            )
            return bool(result.rowcount)

    async def get_job(self, job_id: int) -> Job | None:
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).mappings()
            found = row.first()
        return _job(found) if found else None

    async def list_jobs(
        self, *, state: JobState | None = None, kind: str | None = None, limit: int = 100
    ) -> list[Job]:
        query = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(jobs.c.state == state)
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        async with self._tx() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_job(row) for row in rows]

    async def job_counts(self) -> dict[str, int]:
        async with self._tx() as conn:
            rows = await conn.execute(
                sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)
            )
            counts: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
            counts.update({str(state): int(n) for state, n in rows})
        return counts

    async def seen_delivery(self, platform: str, delivery_id: str) -> bool:
        async with self._tx() as conn:
            row = await conn.execute(
                sa.select(deliveries.c.delivery_id).where(
                    deliveries.c.platform == platform, deliveries.c.delivery_id == delivery_id
                )
            )
            return row.first() is not None

    async def purge(self, *, max_age: float) -> int:
        older_than = self._clock() - max_age
        async with self._tx() as conn:
            gone = await conn.execute(
                sa.delete(deliveries).where(deliveries.c.received_at < older_than)
            )
            done = await conn.execute(
                sa.delete(jobs).where(
                    jobs.c.state.in_(["done", "cancelled"]), jobs.c.finished_at < older_than
                )
            )
            expired = await conn.execute(
                sa.delete(llm_cache).where(llm_cache.c.expires_at < self._clock())
            )
            return int(gone.rowcount) + int(done.rowcount) + int(expired.rowcount)

    # --- LLM response cache ------------------------------------------------------------------

    async def cache_get(self, key: str) -> str | None:
        async with self._tx() as conn:
            row = await conn.execute(
                sa.select(llm_cache.c.value).where(
                    llm_cache.c.key == key, llm_cache.c.expires_at > self._clock()
                )
            )
            value = row.scalar_one_or_none()
        return None if value is None else str(value)

    async def cache_put(self, key: str, value: str, *, ttl_seconds: float) -> None:
        now = self._clock()
        statement = self._insert(llm_cache).values(
            key=key, value=value, created_at=now, expires_at=now + ttl_seconds
        )
        statement = statement.on_conflict_do_update(
            index_elements=["key"],
            set_={"value": value, "created_at": now, "expires_at": now + ttl_seconds},
        )
        async with self._tx() as conn:
            await conn.execute(statement)

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
        statement = self._insert(installations).values(
            platform=platform,
            installation_id=installation_id,
            account=account,
            account_type=account_type,
            state=state,
            repository_selection=repository_selection,
            created_at=now,
            updated_at=now,
        )
        statement = statement.on_conflict_do_update(
            index_elements=["platform", "installation_id"],
            set_={
                "account": account,
                "account_type": account_type,
                "state": state,
                "repository_selection": repository_selection,
                "updated_at": now,
            },
        )
        async with self._tx() as conn:
            await conn.execute(statement)
            if repositories is not None:
                await conn.execute(
                    sa.delete(installation_repositories).where(
                        installation_repositories.c.platform == platform,
                        installation_repositories.c.installation_id == installation_id,
                    )
                )
                await self._add_repos(conn, platform, installation_id, repositories, now)

    async def _add_repos(
        self,
        conn: AsyncConnection,
        platform: str,
        installation_id: int,
        repositories: Iterable[str],
        now: float,
    ) -> None:
        rows = [
            {"platform": platform, "installation_id": installation_id, "repo": r, "added_at": now}
            for r in dict.fromkeys(repositories)
        ]
        if rows:
            await conn.execute(
                self._insert(installation_repositories).values(rows).on_conflict_do_nothing()
            )

    async def set_installation_state(
        self, platform: str, installation_id: int, state: InstallationState
    ) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(
                sa.update(installations)
                .where(
                    installations.c.platform == platform,
                    installations.c.installation_id == installation_id,
                )
                .values(state=state, updated_at=self._clock())
            )
            return bool(result.rowcount)

    async def add_repositories(
        self, platform: str, installation_id: int, repositories: Iterable[str]
    ) -> None:
        async with self._tx() as conn:
            await self._add_repos(conn, platform, installation_id, repositories, self._clock())

    async def remove_repositories(
        self, platform: str, installation_id: int, repositories: Iterable[str]
    ) -> None:
        names = list(repositories)
        if not names:
            return
        async with self._tx() as conn:
            await conn.execute(
                sa.delete(installation_repositories).where(
                    installation_repositories.c.platform == platform,
                    installation_repositories.c.installation_id == installation_id,
                    installation_repositories.c.repo.in_(names),
                )
            )

    async def get_installation(self, platform: str, installation_id: int) -> Installation | None:
        found = await self._installations(
            installations.c.platform == platform,
            installations.c.installation_id == installation_id,
        )
        return found[0] if found else None

    async def list_installations(self, platform: str | None = None) -> list[Installation]:
        if platform is None:
            return await self._installations()
        return await self._installations(installations.c.platform == platform)

    async def _installations(self, *where: sa.ColumnElement[bool]) -> list[Installation]:
        async with self._tx() as conn:
            rows = (
                (
                    await conn.execute(
                        sa.select(installations)
                        .where(*where)
                        .order_by(installations.c.platform, installations.c.installation_id)
                    )
                )
                .mappings()
                .all()
            )
            repos = (
                (
                    await conn.execute(
                        sa.select(installation_repositories).order_by(
                            installation_repositories.c.repo
                        )
                    )
                )
                .mappings()
                .all()
            )
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
            for row in rows
        ]

    # --- Helpers -----------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT."""
        return (sqlite.insert if self.backend == "sqlite" else postgresql.insert)(table)


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


def _sqlite_engine(url: str) -> AsyncEngine:
    database = sa.engine.make_url(url).database
    memory = database in (None, "", ":memory:")
    if not memory and database is not None:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if memory:
        engine = create_async_engine(url, poolclass=StaticPool)
    else:
        # One connection per process: SQLite has one writer anyway, and this keeps the
        # process's own transactions from contending for the file lock.
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)

    @sa_event.listens_for(engine.sync_engine, "connect")
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

    @sa_event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that later writes can fail with
        # "database is locked" at once instead of waiting for the other writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
