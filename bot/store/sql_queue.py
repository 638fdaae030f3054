"""The SQL store's job queue: deliveries seen, jobs enqueued (coalescing by key), claimed with a
lease, renewed, finished, and purged once old.

Claims are one prebuilt UPDATE … RETURNING: on PostgreSQL its candidates are locked with
`FOR UPDATE SKIP LOCKED`, and same-key enqueues take an advisory lock; on SQLite every
transaction holds the write lock from its start (see `sql_engine`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Result

from bot.store.base import JOB_STATES, Delivery, Enqueued, Job, JobState, NewJob
from bot.store.leases import LEASE_EXPIRED
from bot.store.records import new_job_row, to_job
from bot.store.schema import deliveries, jobs, llm_cache
from bot.store.sql_engine import PlainRun, SQLDatabase, SQLiteRun, dialect_insert
from bot.store.sqlite_plain import EVENT_CHARS, accept_many

# What `release` sets: the attempt was never made, so it is given back (never below zero).
ATTEMPT_GIVEN_BACK = sa.case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0)


# --- Deliveries and enqueueing -------------------------------------------------------------------


async def accept(db: SQLDatabase, delivery: Delivery, job: NewJob, now: float) -> Enqueued:
    return await db.run(lambda conn: _accept_one(conn, delivery, job, now))


async def accept_batch(
    db: SQLDatabase, items: list[tuple[Delivery, NewJob]], now: float
) -> list[Enqueued]:
    """Several deliveries at once (the store's group commit): on SQLite in one transaction of
    their own, on PostgreSQL in one statement."""
    if db.backend != "sqlite":
        return await _accept_many_pg(db, items, now)
    if any(job.key is not None for _, job in items):  # coalescing takes SQLAlchemy's path
        return [await accept(db, delivery, job, now) for delivery, job in items]
    return await db.in_sqlite(lambda conn: accept_many(conn, items, now))


# Deliveries and their jobs in one statement and one round trip: the rows come as arrays, the
# deliveries already seen are skipped by ON CONFLICT, and each new one gets a job whose id is
# drawn first, so the answer says which delivery got which job. Every array is sent as text[]
# (numbers as their text, cast by the server): asyncpg has a codec of its own for text[] only,
# and for any other array type it looks the type up in the server's catalog on each new
# connection's first use.
_ACCEPT_PG = """
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[]::int[], $7::text[]::float8[], $8::text[]) WITH ORDINALITY
        AS b(platform, delivery_id, event, kind, payload, max_attempts, run_at, job_delivery_id, n)
), fresh AS (
    INSERT INTO deliveries (platform, delivery_id, event, received_at)
    SELECT platform, delivery_id, event, $9 FROM batch ORDER BY n
    ON CONFLICT DO NOTHING
    RETURNING platform, delivery_id
), numbered AS MATERIALIZED (
    SELECT b.*, nextval(pg_get_serial_sequence('jobs', 'id')) AS job_id
    FROM batch b JOIN fresh f ON f.platform = b.platform AND f.delivery_id = b.delivery_id
), queued AS (
    INSERT INTO jobs (id, kind, key, payload, state, attempts, max_attempts, run_at,
                      delivery_id, created_at, updated_at)
    SELECT job_id, kind, NULL, payload, 'queued', 0, max_attempts, run_at, job_delivery_id,
           $9, $9
    FROM numbered ORDER BY n
)
SELECT n, job_id FROM numbered
"""


async def _accept_many_pg(
    db: SQLDatabase, items: list[tuple[Delivery, NewJob]], now: float
) -> list[Enqueued]:
    """PostgreSQL's group commit; a keyed job (which may replace another) goes one by one."""
    results: list[Enqueued] = [Enqueued(job_id=None, duplicate=True)] * len(items)
    together: list[int] = []
    alone: list[int] = []
    seen: set[tuple[str, str]] = set()
    for index, (delivery, job) in enumerate(items):
        if (delivery.platform, delivery.delivery_id) in seen:
            continue  # the same delivery twice in one batch: the first copy is the one
        seen.add((delivery.platform, delivery.delivery_id))
        (together if job.key is None else alone).append(index)
    if together:
        batch = [items[i] for i in together]
        rows = await db.fetch(
            _ACCEPT_PG,
            [d.platform for d, _ in batch],
            [d.delivery_id for d, _ in batch],
            [d.event[:EVENT_CHARS] for d, _ in batch],
            [j.kind for _, j in batch],
            [j.payload for _, j in batch],
            [str(j.max_attempts) for _, j in batch],
            [repr(float(j.run_at if j.run_at is not None else now)) for _, j in batch],
            [j.delivery_id for _, j in batch],
            now,
        )
        for n, job_id in rows:
            results[together[n - 1]] = Enqueued(job_id=int(job_id))
    for i in alone:
        delivery, job = items[i]
        results[i] = await accept(db, delivery, job, now)
    return results


async def enqueue(db: SQLDatabase, job: NewJob, now: float) -> Enqueued:
    if job.key is not None and db.backend == "postgresql":
        # Every pull request's review is queued this way: its statements go to asyncpg as
        # they are (SQLAlchemy's transaction around them cost 1.8 ms of the event loop's CPU,
        # five times the statements themselves: issue 20).
        return await db.plain_transaction(lambda run: _enqueue_keyed_pg(run, job, now))
    if job.key is not None:
        # … and on SQLite, to the driver, in the group commit's transaction (BEGIN IMMEDIATE:
        # one writer at a time, so no lock is needed for the key).
        return await db.sqlite_plain(lambda run: _enqueue_keyed_sqlite(run, job, now))
    return await db.run(lambda conn: _enqueue(conn, job, now))


async def seen_delivery(db: SQLDatabase, platform: str, delivery_id: str) -> bool:
    statement = sa.select(deliveries.c.delivery_id).where(
        deliveries.c.platform == platform, deliveries.c.delivery_id == delivery_id
    )
    return await db.run(lambda conn: conn.execute(statement).first() is not None)


def _accept_one(conn: Connection, delivery: Delivery, job: NewJob, now: float) -> Enqueued:
    inserted = conn.execute(
        dialect_insert(conn.dialect.name, deliveries)
        .values(
            platform=delivery.platform,
            delivery_id=delivery.delivery_id,
            event=delivery.event[:EVENT_CHARS],
            received_at=now,
        )
        .on_conflict_do_nothing()
    )
    if inserted.rowcount == 0:
        return Enqueued(job_id=None, duplicate=True)
    return _enqueue(conn, job, now)


def _enqueue(conn: Connection, job: NewJob, now: float) -> Enqueued:
    if job.key is not None and conn.dialect.name == "postgresql":
        # Two enqueues of one key must not both miss each other's queued job.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": job.key})
    job_id = conn.execute(sa.insert(jobs).returning(jobs.c.id), new_job_row(job, now)).scalar_one()
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


async def _enqueue_keyed_pg(run: PlainRun, job: NewJob, now: float) -> Enqueued:
    """`_enqueue` of a job with a key, on PostgreSQL, in `plain_transaction`'s transaction."""
    lock, insert, cancel = _keyed_statements()
    # Two enqueues of one key must not both miss each other's queued job: the second waits
    # here for the first's commit, and its next statements see that job.
    await run(lock, {"key": job.key})
    (row,) = await run(insert, new_job_row(job, now))
    job_id = int(row["id"])
    reason = f"superseded by job {job_id}"
    rows = await run(cancel, {"key": job.key, "job_id": job_id, "reason": reason, "now": now})
    return Enqueued(job_id=job_id, replaced=tuple(sorted(int(r["id"]) for r in rows)))


def _enqueue_keyed_sqlite(run: SQLiteRun, job: NewJob, now: float) -> Enqueued:
    """`_enqueue` of a job with a key, on SQLite, in `sqlite_plain`'s transaction."""
    _, insert, cancel = _keyed_statements()
    (row,) = run(insert, new_job_row(job, now))
    job_id = int(row["id"])
    reason = f"superseded by job {job_id}"
    rows = run(cancel, {"key": job.key, "job_id": job_id, "reason": reason, "now": now})
    return Enqueued(job_id=job_id, replaced=tuple(sorted(int(r["id"]) for r in rows)))


@functools.cache
def _keyed_statements() -> tuple[sa.TextClause, sa.Insert, sa.Update]:
    """`_enqueue`'s statements, built once with their values as parameters."""
    key = sa.bindparam("key", type_=sa.String)
    lock = sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))").bindparams(key)
    columns = (
        "kind", "key", "payload", "state", "attempts", "max_attempts", "run_at",
        "delivery_id", "created_at", "updated_at",
    )  # fmt: skip
    insert = (
        sa.insert(jobs)
        .values({name: sa.bindparam(name, type_=jobs.c[name].type) for name in columns})
        .returning(jobs.c.id)
    )
    now = sa.bindparam("now", type_=sa.Float)
    cancel = (
        sa.update(jobs)
        .where(
            jobs.c.key == key,
            jobs.c.state == "queued",
            jobs.c.id != sa.bindparam("job_id", type_=sa.BigInteger),
        )
        .values(
            state="cancelled",
            last_error=sa.bindparam("reason", type_=sa.String),
            finished_at=now,
            updated_at=now,
        )
        .returning(jobs.c.id)
    )
    return lock, insert, cancel


# --- Claims and leases ---------------------------------------------------------------------------


async def claim(
    db: SQLDatabase,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    now: float,
    sweep: bool,
    *,
    holding: list[int],
    lanes: dict[str, int],
    deep: dict[str, int] | None = None,
) -> list[Job]:
    """Up to `limit` due jobs (and `lanes[kind]` more of a kind with a lane of its own, if at
    least `deep[kind]` jobs are due), after (with `sweep`) taking back those whose lease
    expired, but for the claimer's jobs in `holding`. Without the sweep a claim is one
    statement (on PostgreSQL, no transaction block around it: its row locks last as long as
    the statement)."""
    depths = deep or {}
    if sweep:
        return await db.run(
            lambda conn: _claim(
                conn, worker_id, limit, lease_seconds, now, sweep, holding, lanes, depths
            )
        )
    statement, params = _claim_bound(
        db.backend, worker_id, limit, lease_seconds, now, lanes, depths
    )
    return _in_order(await db.rows(statement, params, write=True))


async def renew_leases(
    db: SQLDatabase, worker_id: str, ids: list[int], lease_seconds: float, now: float
) -> list[int]:
    statement = (
        sa.update(jobs)
        .where(jobs.c.id.in_(ids), jobs.c.worker_id == worker_id, jobs.c.state == "running")
        .values(lease_until=now + lease_seconds, updated_at=now)
        .returning(jobs.c.id)
    )
    return await db.run(lambda conn: sorted(conn.execute(statement).scalars()))


def _sweep_expired_leases(conn: Connection, now: float, claimer: str, holding: list[int]) -> None:
    """Jobs whose worker stopped renewing: queued again, or dead if that was the last attempt.

    The claimer's own expired jobs are taken back too (its run ended without an outcome
    recorded, or a claim's answer never reached it), except those it is `holding`: it still
    runs them, and a lease of its that ran out means a late heartbeat, not lost work."""
    expired = sa.and_(jobs.c.state == "running", jobs.c.lease_until < now)
    if holding:
        expired = sa.and_(expired, sa.or_(jobs.c.worker_id != claimer, jobs.c.id.not_in(holding)))
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


def _claim_statement(*, skip_locked: bool, lanes: tuple[str, ...] = ()) -> sa.Update:
    """Claim up to :limit queued jobs that are due and whose key has no job running, and up to
    :lane_<i> more of the kind `lanes[i]` (a lane of its own; the two may pick the same job)
    if at least :deep_<i> jobs are due (a count that stops there: an index range scan).

    Built once per set of lanes: the hot path binds parameters to it instead of building SQL
    per claim. Only queued jobs are candidates, which the (state, run_at) index answers in
    order however many finished jobs the table holds.
    """
    now = sa.bindparam("now", type_=sa.Float)
    cand, busy, first = jobs.alias("cand"), jobs.alias("busy"), jobs.alias("first")
    queue = jobs.alias("queue")
    # Any running job of the key makes it wait, even one past its lease: its worker may still
    # hold it (a late heartbeat); an abandoned one is taken back by the sweep first.
    key_free = ~sa.exists().where(busy.c.key == cand.c.key, busy.c.state == "running")
    # Of a key's due jobs, only the oldest may be taken: a retried job and the newer one that
    # queued behind it must not both run (one claim, or two at once, could take both).
    first_of_key = cand.c.id == (
        sa.select(sa.func.min(first.c.id))
        .where(first.c.key == cand.c.key, first.c.state == "queued", first.c.run_at <= now)
        .scalar_subquery()
    )

    def deep_enough(name: str) -> sa.ColumnElement[bool]:
        """At least :`name` jobs due (0: always)."""
        depth = sa.bindparam(name, type_=sa.Integer)
        due = (
            sa.select(queue.c.id)
            .where(queue.c.state == "queued", queue.c.run_at <= now)
            .limit(depth)
            .subquery()
        )
        return sa.select(sa.func.count()).select_from(due).scalar_subquery() >= depth

    def candidates(
        kind: sa.ColumnElement[bool] | None, limit: str, deep: str | None = None
    ) -> sa.ScalarSelect[Any]:
        chosen = (
            sa.select(cand.c.id)
            .where(
                cand.c.state == "queued",
                cand.c.run_at <= now,
                sa.or_(cand.c.key.is_(None), sa.and_(key_free, first_of_key)),
                *([kind] if kind is not None else []),
                *([deep_enough(deep)] if deep is not None else []),
            )
            .order_by(cand.c.run_at, cand.c.id)
            .limit(sa.bindparam(limit, type_=sa.Integer))
        )
        if skip_locked:
            chosen = chosen.with_for_update(skip_locked=True)
        return chosen.scalar_subquery()

    rest = candidates(None, "limit")
    own = [
        candidates(cand.c.kind == kind, f"lane_{i}", f"deep_{i}") for i, kind in enumerate(lanes)
    ]
    chosen: sa.ColumnElement[bool]
    if skip_locked:
        # PostgreSQL: the chosen ids as one array, looked up by primary key. `id IN (…) OR id
        # IN (…)` was planned as a scan of the whole table, finished jobs included (3.1 ms a
        # claim with 20,000 kept, against 0.7 ms this way: the note of issue 20).
        ids: sa.ColumnElement[Any] = sa.func.array(rest)
        for lane in own:
            ids = ids.op("||")(sa.func.array(lane))
        chosen = jobs.c.id == sa.any_(ids)
    else:
        chosen = sa.or_(jobs.c.id.in_(rest), *(jobs.c.id.in_(lane) for lane in own))
    return (
        sa.update(jobs)
        .where(chosen)
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


_CLAIM: dict[tuple[bool, tuple[str, ...]], sa.Update] = {}


def _claim(
    conn: Connection,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    now: float,
    sweep: bool,
    holding: list[int],
    lanes: dict[str, int],
    deep: dict[str, int],
) -> list[Job]:
    if sweep:
        _sweep_expired_leases(conn, now, worker_id, holding)
    backend = "postgresql" if conn.dialect.name == "postgresql" else "sqlite"
    statement, params = _claim_bound(backend, worker_id, limit, lease_seconds, now, lanes, deep)
    return _claimed(conn.execute(statement, params))


def _claim_bound(
    backend: str,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    now: float,
    lanes: dict[str, int],
    deep: dict[str, int],
) -> tuple[sa.Update, dict[str, Any]]:
    """The claim's statement (built once per backend and set of lanes) and its parameters."""
    kinds = tuple(sorted(lanes))
    shape = (backend == "postgresql", kinds)
    if (statement := _CLAIM.get(shape)) is None:
        statement = _CLAIM.setdefault(shape, _claim_statement(skip_locked=shape[0], lanes=kinds))
    params: dict[str, Any] = {
        "now": now,
        "limit": limit,
        "claimer": worker_id,
        "lease": now + lease_seconds,
    }
    params.update({f"lane_{i}": max(lanes[kind], 0) for i, kind in enumerate(kinds)})
    params.update({f"deep_{i}": max(deep.get(kind, 0), 0) for i, kind in enumerate(kinds)})
    return statement, params


def _claimed(rows: Result[Any]) -> list[Job]:
    return _in_order(cast(Iterable[Mapping[str, Any]], rows.mappings()))


def _in_order(rows: Iterable[Mapping[str, Any]]) -> list[Job]:
    return sorted((to_job(row) for row in rows), key=lambda j: (j.run_at, j.id))


# --- Finishing -----------------------------------------------------------------------------------


async def complete_batch(db: SQLDatabase, items: list[tuple[int, str]], now: float) -> list[bool]:
    """Mark jobs done, each only while it is still its worker's; in a transaction of its own
    (one statement when they are one worker's: on PostgreSQL, no transaction block), but for
    one job's on SQLite, which shares the group commit's (a plain statement, `rows`)."""
    owners = {worker_id for _, worker_id in items}
    if len(owners) == 1:
        (owner,) = owners
        params: dict[str, Any] = {"owner": owner, "finished": now}
        if db.backend == "postgresql":  # one statement for any number of jobs: `= ANY($1)`
            params["ids"] = [str(job_id) for job_id, _ in items]  # text[] (_complete_any)
            rows = await db.rows(_complete_any(), params, write=True)
            done = {int(row["id"]) for row in rows}
        elif len(items) == 1:  # one job (most often): a statement compiled once (`rows`)
            params["id"] = items[0][0]
            done = {int(row["id"]) for row in await db.rows(_COMPLETE_ONE, params, write=True)}
        else:
            params["ids"] = [job_id for job_id, _ in items]
            done = await db.write_one(
                _COMPLETE, params, lambda rows: set(rows.scalars()), alone=True
            )
        return [job_id in done for job_id, _ in items]
    return await db.run(lambda conn: _complete_many(conn, items, now), alone=True)


async def finish(db: SQLDatabase, job_id: int, worker_id: str, values: dict[str, Any]) -> bool:
    """Set `values` on a running job only while it is still this worker's, and end its lease."""
    statement = (
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.state == "running")
        .values(worker_id=None, lease_until=None, **values)
    )
    return await db.run(lambda conn: bool(conn.execute(statement).rowcount))


async def cancel_queued(db: SQLDatabase, key: str, reason: str, now: float) -> list[int]:
    statement = (
        sa.update(jobs)
        .where(jobs.c.key == key, jobs.c.state == "queued")
        .values(state="cancelled", last_error=reason, finished_at=now, updated_at=now)
        .returning(jobs.c.id)
    )
    return await db.run(lambda conn: sorted(conn.execute(statement).scalars()))


async def requeue(db: SQLDatabase, job_id: int, now: float) -> bool:
    statement = (
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state.in_(["dead", "cancelled"]))
        .values(state="queued", attempts=0, run_at=now, finished_at=None, updated_at=now)
    )
    return await db.run(lambda conn: bool(conn.execute(statement).rowcount))


def _complete_statement(chosen: sa.ColumnElement[bool]) -> sa.Update:
    """Jobs `chosen` by their ids (the parameter `ids`) done, while still `owner`'s."""
    finished_at = sa.bindparam("finished", type_=sa.Float)
    return (
        sa.update(jobs)
        .where(
            chosen,
            jobs.c.worker_id == sa.bindparam("owner", type_=sa.String),
            jobs.c.state == "running",
        )
        .values(
            state="done",
            worker_id=None,
            lease_until=None,
            finished_at=finished_at,
            updated_at=finished_at,
        )
        .returning(jobs.c.id)
    )


_COMPLETE = _complete_statement(jobs.c.id.in_(sa.bindparam("ids", expanding=True)))
_COMPLETE_ONE = _complete_statement(jobs.c.id == sa.bindparam("id", type_=sa.BigInteger))


@functools.cache
def _complete_any() -> sa.Update:
    """`_COMPLETE` for PostgreSQL, its jobs an array parameter instead of a list expanded into
    the statement for each call (so it is compiled once: `SQLDatabase.rows`). The ids come as
    text[], cast by the server (see _ACCEPT_PG: no catalog lookup on a new connection)."""
    from sqlalchemy.dialects.postgresql import ARRAY

    ids = sa.cast(sa.bindparam("ids", type_=ARRAY(sa.Text)), ARRAY(sa.BigInteger))
    return _complete_statement(jobs.c.id == sa.any_(ids))


def _complete_many(conn: Connection, items: list[tuple[int, str]], now: float) -> list[bool]:
    done: set[int] = set()
    for worker_id in {w for _, w in items}:
        ids = [job_id for job_id, w in items if w == worker_id]
        rows = conn.execute(_COMPLETE, {"ids": ids, "owner": worker_id, "finished": now})
        done.update(rows.scalars())
    return [job_id in done for job_id, _ in items]


# --- Reading and purging -------------------------------------------------------------------------


async def get_job(db: SQLDatabase, job_id: int) -> Job | None:
    statement = sa.select(jobs).where(jobs.c.id == job_id)

    def read(conn: Connection) -> Job | None:
        row = conn.execute(statement).mappings().first()
        return to_job(row) if row else None

    return await db.run(read)


async def list_jobs(
    db: SQLDatabase, state: JobState | None, kind: str | None, limit: int
) -> list[Job]:
    statement = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
    if state is not None:
        statement = statement.where(jobs.c.state == state)
    if kind is not None:
        statement = statement.where(jobs.c.kind == kind)
    return await db.run(lambda conn: [to_job(row) for row in conn.execute(statement).mappings()])


async def job_counts(db: SQLDatabase) -> dict[str, int]:
    statement = sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)

    def count(conn: Connection) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
        counts.update({str(state): int(n) for state, n in conn.execute(statement)})
        return counts

    return await db.run(count)


async def purge(db: SQLDatabase, max_age: float, now: float) -> int:
    """Forget deliveries and finished jobs older than `max_age`, and expired cache entries."""
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

    return await db.run(purge)
