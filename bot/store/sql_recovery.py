"""The SQL store's recovery records: the background passes' leases and runs, watermarks,
redelivery requests and the repositories seen, as plain functions over the database.

Every decision is one conditional UPDATE (or an INSERT … ON CONFLICT DO NOTHING), so two
processes deciding at once cannot both win: PostgreSQL re-checks the WHERE clause of an
UPDATE that waited for another's row lock, and SQLite runs one writer at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.store.base import KnownRepository, PassRun, RedeliveryOutcome, RedeliveryRecord
from bot.store.recovery_records import (
    summary_text,
    to_known_repository,
    to_pass_run,
    to_redelivery,
)
from bot.store.schema import (
    deliveries,
    jobs,
    known_repositories,
    recovery_passes,
    redeliveries,
    watermarks,
)
from bot.store.sql_engine import SQLDatabase, dialect_insert

IN_CHUNK = 500  # values per IN (…): well under every driver's parameter limit
_p = recovery_passes.c

# --- Passes --------------------------------------------------------------------------------------


async def acquire_pass(
    db: SQLDatabase,
    name: str,
    holder: str,
    lease_seconds: float,
    last_finished_before: float,
    now: float,
) -> bool:
    create = dialect_insert(db.backend, recovery_passes).values(name=name, total=0)
    take = (
        sa.update(recovery_passes)
        .where(
            _p.name == name,
            sa.or_(_p.holder.is_(None), _p.lease_until < now, _p.holder == holder),
            sa.or_(_p.finished_at.is_(None), _p.finished_at < last_finished_before),
        )
        .values(holder=holder, lease_until=now + lease_seconds, started_at=now)
    )

    def run(conn: Connection) -> bool:
        conn.execute(create.on_conflict_do_nothing(index_elements=["name"]))
        return bool(conn.execute(take).rowcount)

    return await db.run(run)


async def renew_pass(
    db: SQLDatabase, name: str, holder: str, lease_seconds: float, now: float
) -> bool:
    statement = (
        sa.update(recovery_passes)
        .where(_p.name == name, _p.holder == holder)
        .values(lease_until=now + lease_seconds)
    )
    return await db.run(lambda conn: bool(conn.execute(statement).rowcount))


async def finish_pass(
    db: SQLDatabase, name: str, holder: str, summary: dict[str, Any], added: int, now: float
) -> bool:
    statement = (
        sa.update(recovery_passes)
        .where(_p.name == name, _p.holder == holder)
        .values(
            holder=None,
            lease_until=None,
            finished_at=now,
            summary=summary_text(summary),
            total=_p.total + added,
        )
    )
    return await db.run(lambda conn: bool(conn.execute(statement).rowcount))


async def release_pass(db: SQLDatabase, name: str, holder: str) -> None:
    statement = (
        sa.update(recovery_passes)
        .where(_p.name == name, _p.holder == holder)
        .values(holder=None, lease_until=None)
    )
    await db.run(lambda conn: conn.execute(statement))


async def pass_runs(db: SQLDatabase) -> list[PassRun]:
    statement = sa.select(recovery_passes).order_by(_p.name)
    return await db.run(lambda conn: [to_pass_run(r) for r in conn.execute(statement).mappings()])


# --- Watermarks ----------------------------------------------------------------------------------


async def get_watermark(db: SQLDatabase, name: str) -> str | None:
    statement = sa.select(watermarks.c.value).where(watermarks.c.name == name)
    value = await db.run(lambda conn: conn.execute(statement).scalar_one_or_none())
    return None if value is None else str(value)


async def set_watermark(db: SQLDatabase, name: str, value: str, now: float) -> None:
    statement = (
        dialect_insert(db.backend, watermarks)
        .values(name=name, value=value, updated_at=now)
        .on_conflict_do_update(index_elements=["name"], set_={"value": value, "updated_at": now})
    )
    await db.run(lambda conn: conn.execute(statement))


# --- Deliveries seen, redelivery requests --------------------------------------------------------


async def seen_deliveries(
    db: SQLDatabase, platform: str, delivery_ids: Collection[str]
) -> set[str]:
    ids = sorted(set(delivery_ids))

    def read(conn: Connection) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), IN_CHUNK):
            statement = sa.select(deliveries.c.delivery_id).where(
                deliveries.c.platform == platform,
                deliveries.c.delivery_id.in_(ids[start : start + IN_CHUNK]),
            )
            found.update(str(v) for v in conn.execute(statement).scalars())
        return found

    return await db.run(read) if ids else set()


async def claim_redelivery(
    db: SQLDatabase,
    key: tuple[str, str],
    attempt_id: int,
    source: str,
    max_attempts: int,
    stale_after: float,
    now: float,
) -> bool:
    platform, guid = key
    r = redeliveries.c
    first = (
        dialect_insert(db.backend, redeliveries)
        .values(
            platform=platform,
            guid=guid,
            source=source,
            attempt_id=attempt_id,
            attempts=1,
            state="requested",
            requested_at=now,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["platform", "guid"])
    )
    again = (
        sa.update(redeliveries)
        .where(
            r.platform == platform,
            r.guid == guid,
            r.attempts < max_attempts,
            r.state != "refused",
            sa.or_(
                r.attempt_id < attempt_id,  # a later attempt failed too
                sa.and_(  # this one's request never got an answer
                    r.attempt_id == attempt_id,
                    r.state == "requested",
                    r.requested_at <= now - stale_after,
                ),
            ),
        )
        .values(
            attempt_id=attempt_id,
            attempts=r.attempts + 1,
            state="requested",
            error=None,
            requested_at=now,
            source=source,
        )
    )

    def run(conn: Connection) -> bool:
        if conn.execute(first).rowcount:
            return True
        return bool(conn.execute(again).rowcount)

    return await db.run(run)


async def settle_redelivery(
    db: SQLDatabase,
    key: tuple[str, str],
    attempt_id: int,
    outcome: RedeliveryOutcome,
    error: str | None,
) -> None:
    platform, guid = key
    r = redeliveries.c
    values: dict[str, Any]
    if outcome == "not_sent":  # the attempt does not count, and may be made at once
        values = {"attempts": r.attempts - 1, "requested_at": 0.0, "error": error}
    else:
        values = {"state": outcome, "error": error}
    statement = (
        sa.update(redeliveries)
        .where(r.platform == platform, r.guid == guid, r.attempt_id == attempt_id)
        .values(**values)
    )
    await db.run(lambda conn: conn.execute(statement))


async def redelivery_records(
    db: SQLDatabase, platform: str | None, limit: int
) -> list[RedeliveryRecord]:
    statement = sa.select(redeliveries).order_by(redeliveries.c.requested_at.desc()).limit(limit)
    if platform is not None:
        statement = statement.where(redeliveries.c.platform == platform)
    return await db.run(lambda conn: [to_redelivery(r) for r in conn.execute(statement).mappings()])


async def purge_redeliveries(db: SQLDatabase, max_age: float, now: float) -> int:
    statement = sa.delete(redeliveries).where(redeliveries.c.created_at < now - max_age)
    return await db.run(lambda conn: int(conn.execute(statement).rowcount))


# --- Repositories seen ---------------------------------------------------------------------------


async def note_repositories(
    db: SQLDatabase, platform: str, repos: Iterable[str], installation_id: int | None, now: float
) -> None:
    names = sorted(set(repos))
    if not names:
        return
    rows = [
        {
            "platform": platform,
            "repo": repo,
            "installation_id": installation_id,
            "first_seen_at": now,
            "last_seen_at": now,
        }
        for repo in names
    ]
    statement = _note_statement(db.backend, installation_id is not None)
    # Each row's upsert is whole by itself: on PostgreSQL no BEGIN and COMMIT around them.
    await db.run_each(lambda conn: conn.execute(statement, rows))


@functools.cache
def _note_statement(backend: str, with_installation: bool) -> Any:
    """The upsert of `note_repositories`, built once (an event's dispatch runs it each time)
    and executed with its rows as parameters."""
    insert = dialect_insert(backend, known_repositories)
    changes: dict[str, Any] = {"last_seen_at": insert.excluded.last_seen_at}
    if with_installation:
        changes["installation_id"] = insert.excluded.installation_id
    return insert.on_conflict_do_update(index_elements=["platform", "repo"], set_=changes)


async def forget_repository(db: SQLDatabase, platform: str, repo: str) -> None:
    k = known_repositories.c
    statement = sa.delete(known_repositories).where(k.platform == platform, k.repo == repo)
    await db.run(lambda conn: conn.execute(statement))


async def known(db: SQLDatabase, platform: str | None) -> list[KnownRepository]:
    k = known_repositories.c
    statement = sa.select(known_repositories).order_by(k.platform, k.repo)
    if platform is not None:
        statement = statement.where(k.platform == platform)
    return await db.run(
        lambda conn: [to_known_repository(r) for r in conn.execute(statement).mappings()]
    )


async def open_job_keys(db: SQLDatabase, keys: Collection[str]) -> set[str]:
    wanted = sorted(set(keys))

    def read(conn: Connection) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(wanted), IN_CHUNK):
            statement = (
                sa.select(jobs.c.key)
                .where(
                    jobs.c.key.in_(wanted[start : start + IN_CHUNK]),
                    jobs.c.state.in_(["queued", "running"]),
                )
                .distinct()
            )
            found.update(str(v) for v in conn.execute(statement).scalars())
        return found

    return await db.run(read) if wanted else set()
