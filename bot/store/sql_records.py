"""The SQL store's records: reviews, findings, pull-request state, usage, exchanges,
installations, the LLM response cache and the operator views, as plain functions over the
database.

Each builds its statement here and runs it as one transaction (`SQLDatabase.run`); rows become
records through `records`, as the MongoDB store's documents do. The statements every review
makes are built once, with their values as parameters (`_once`): building one from column
expressions costs more of the event loop's CPU than running it on SQLite (issue 20).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Iterable
from dataclasses import replace
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Result

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
from bot.store.schema import (
    exchanges,
    findings,
    installation_repositories,
    installations,
    llm_cache,
    pr_states,
    reviews,
    usage,
)
from bot.store.sql_engine import SQLDatabase, dialect_insert

_once = functools.lru_cache(maxsize=64)  # a statement per shape, executed with parameters


def _bound(table: sa.Table, columns: Iterable[str]) -> dict[str, Any]:
    """`table`'s columns as parameters named `p_<column>` (a parameter may not share its
    column's name in an UPDATE's SET), typed as the columns are."""
    return {name: sa.bindparam(f"p_{name}", type_=table.c[name].type) for name in columns}


def _params(values: dict[str, Any]) -> dict[str, Any]:
    return {f"p_{name}": value for name, value in values.items()}


# --- LLM response cache --------------------------------------------------------------------------


@_once
def _cache_get_statement() -> sa.Select[Any]:
    c = llm_cache.c
    return sa.select(c.value).where(
        c.key == sa.bindparam("key"), c.expires_at > sa.bindparam("now")
    )


async def cache_get(db: SQLDatabase, key: str, now: float) -> str | None:
    rows = await db.rows(_cache_get_statement(), {"key": key, "now": now})
    return str(rows[0]["value"]) if rows else None


@_once
def _cache_put_statement(backend: str) -> Any:
    insert = dialect_insert(backend, llm_cache)
    return insert.values(
        _bound(llm_cache, ("key", "value", "created_at", "expires_at"))
    ).on_conflict_do_update(
        index_elements=["key"],
        set_={name: insert.excluded[name] for name in ("value", "created_at", "expires_at")},
    )


async def cache_put(db: SQLDatabase, key: str, value: str, ttl_seconds: float, now: float) -> None:
    row = {"key": key, "value": value, "created_at": now, "expires_at": now + ttl_seconds}
    await db.rows(_cache_put_statement(db.backend), _params(row), write=True)


# --- Reviews -------------------------------------------------------------------------------------


async def start_review(db: SQLDatabase, start: ReviewStart, now: float) -> ReviewRecord:
    """A job's first attempt inserts its review in one statement (on PostgreSQL without BEGIN
    and COMMIT: four round trips were one); a retry, which finds it there, takes it back."""
    row = {**new_review_row(start, now), "job_id": start.job_id}
    params = _params(row)
    if start.job_id is not None:
        # One job, one review (a job runs in one place at a time: its lease).
        made = await db.rows(_first_review_statement(tuple(row)), params, write=True)
        if made:
            return to_review(made[0])

    def begin(conn: Connection) -> ReviewRecord:
        if start.job_id is None:
            inserted = conn.execute(_insert_statement(reviews, tuple(row), returning=True), params)
            return to_review(inserted.mappings().one())
        # A retry of the job, which finds its review there, takes it back.
        latest = (
            sa.select(reviews.c.id)
            .where(reviews.c.job_id == start.job_id)
            .order_by(reviews.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        again = conn.execute(
            sa.update(reviews)
            .where(reviews.c.id == latest)
            .values(
                head_sha=start.head_sha, base_sha=start.base_sha, mode=start.mode, state="running"
            )
            .returning(*reviews.c)
        )
        return replace(to_review(again.mappings().one()), resumed=True)

    return await db.run_each(begin)


@_once
def _first_review_statement(columns: tuple[str, ...]) -> Any:
    """The review `row` (its columns `columns`, as parameters) inserted unless its job has
    one already; the row it inserted, if any."""
    values = [parameter.label(name) for name, parameter in _bound(reviews, columns).items()]
    unless_started = sa.select(*values).where(
        ~sa.exists().where(reviews.c.job_id == sa.bindparam("p_job_id"))
    )
    return sa.insert(reviews).from_select(list(columns), unless_started).returning(*reviews.c)


async def update_review(db: SQLDatabase, review_id: int, changes: dict[str, Any]) -> None:
    check_updatable(changes, REVIEW_UPDATABLE, "review")
    if not changes:
        return
    values = dict(changes)
    for column in ("severity_counts", "not_reviewed"):
        if column in values and values[column] is not None:
            values[column] = json.dumps(values[column])
    statement = _update_review_statement(tuple(sorted(values)))
    await db.rows(statement, {**_params(values), "review_id": review_id}, write=True)


@_once
def _update_review_statement(columns: tuple[str, ...]) -> sa.Update:
    return (
        sa.update(reviews)
        .where(reviews.c.id == sa.bindparam("review_id"))
        .values(_bound(reviews, columns))
    )


async def get_review(db: SQLDatabase, review_id: int) -> ReviewRecord | None:
    def read(conn: Connection) -> ReviewRecord | None:
        row = _read_review(conn, review_id)
        return to_review(row) if row is not None else None

    return await db.read(read)


async def list_reviews(db: SQLDatabase, filters: dict[str, Any], limit: int) -> list[ReviewRecord]:
    """Newest first; `filters` maps columns to values (None: any)."""
    statement = sa.select(reviews).order_by(reviews.c.id.desc()).limit(limit)
    for column, value in filters.items():
        if value is not None:
            statement = statement.where(reviews.c[column] == value)
    return await _reviews(db, statement)


@_once
def output_per_call_statement(limit: int) -> sa.Select[Any]:
    """The output tokens and calls of the latest `limit` reviews of the model given as the
    parameter `model` (an index of its own answers it, however rarely the model is used)."""
    return (
        sa.select(reviews.c.output_tokens, reviews.c.calls)
        .where(reviews.c.model == sa.bindparam("model"), reviews.c.calls > 0)
        .order_by(reviews.c.id.desc())
        .limit(limit)
    )


async def output_per_call(db: SQLDatabase, model: str, limit: int) -> list[int]:
    rows = await db.rows(output_per_call_statement(limit), {"model": model})
    return [int(row["output_tokens"] or 0) // int(row["calls"]) for row in rows]


async def find_reviews(db: SQLDatabase, query: ReviewQuery) -> list[ReviewRecord]:
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
    return await _reviews(db, statement)


async def _reviews(db: SQLDatabase, statement: sa.Select[Any]) -> list[ReviewRecord]:
    return await db.run(lambda conn: [to_review(row) for row in conn.execute(statement).mappings()])


def _read_review(conn: Connection, review_id: int) -> Any:
    return conn.execute(sa.select(reviews).where(reviews.c.id == review_id)).mappings().first()


# --- Findings ------------------------------------------------------------------------------------


async def record_findings(
    db: SQLDatabase,
    review_id: int,
    pull_request: tuple[str, str, int],
    records: Iterable[FindingRecord],
    now: float,
) -> int:
    rows = [
        finding_row(review_id, pull_request, f, now)
        for f in {f.fingerprint: f for f in records}.values()
    ]
    if not rows:
        return 0
    statement = (
        dialect_insert(db.backend, findings)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["platform", "repo", "number", "fingerprint"])
    )
    # One statement, atomic by itself: on PostgreSQL no BEGIN and COMMIT around it (two round
    # trips fewer between the model's answer and the final status).
    return await db.write_one(statement, None, _rowcount)


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount)  # an INSERT's result is a cursor's


async def findings_for(
    db: SQLDatabase, platform: str, repo: str, number: int, review_id: int | None
) -> list[FindingRecord]:
    statement = _findings_for_statement(review_id is not None)
    params = {"platform": platform, "repo": repo, "number": number, "review_id": review_id}
    return [to_finding(row) for row in await db.rows(statement, params)]


@_once
def _findings_for_statement(of_review: bool) -> sa.Select[Any]:
    c = findings.c
    statement = (
        sa.select(findings)
        .where(c.platform == sa.bindparam("platform"), c.repo == sa.bindparam("repo"))
        .where(c.number == sa.bindparam("number"))
        .order_by(c.id)
    )
    return statement.where(c.review_id == sa.bindparam("review_id")) if of_review else statement


# --- Pull-request state and usage ----------------------------------------------------------------


async def pr_state(db: SQLDatabase, platform: str, repo: str, number: int) -> PullRequestState:
    params = {"platform": platform, "repo": repo, "number": number}
    rows = await db.rows(_pr_state_read(), params)
    return to_pr_state(platform, repo, number, rows[0] if rows else None)


@_once
def _pr_state_read() -> sa.Select[Any]:
    c = pr_states.c
    return sa.select(pr_states).where(
        c.platform == sa.bindparam("platform"),
        c.repo == sa.bindparam("repo"),
        c.number == sa.bindparam("number"),
    )


async def update_pr_state(
    db: SQLDatabase, pull_request: tuple[str, str, int], given: dict[str, Any], now: float
) -> PullRequestState:
    platform, repo, number = pull_request
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    changes["updated_at"] = now
    values = {"paused": False, "full_requested": False, **changes}
    values.update(platform=platform, repo=repo, number=number)
    statement = _pr_state_statement(db.backend, tuple(sorted(changes)))
    rows = await db.rows(statement, values, write=True)
    return to_pr_state(*pull_request, rows[0] if rows else None)


@functools.lru_cache(maxsize=64)
def _pr_state_statement(backend: str, changed: tuple[str, ...]) -> Any:
    """The upsert of `update_pr_state` for one set of changed columns, built once and executed
    with the values as parameters: a new pull request starts unpaused, with what was given."""
    c = pr_states.c
    insert = dialect_insert(backend, pr_states)
    columns = {"platform", "repo", "number", "paused", "full_requested", *changed}
    return (
        insert.values({name: sa.bindparam(name, type_=c[name].type) for name in sorted(columns)})
        .on_conflict_do_update(
            index_elements=["platform", "repo", "number"],
            set_={name: insert.excluded[name] for name in changed},
        )
        .returning(*pr_states.c)
    )


async def record_usage(db: SQLDatabase, record: UsageRecord, now: float) -> None:
    row = usage_row(record, now)
    await db.rows(_insert_statement(usage, tuple(row)), _params(row), write=True)


@_once
def _insert_statement(
    table: sa.Table, columns: tuple[str, ...], *, returning: bool = False
) -> sa.Insert:
    insert = sa.insert(table).values(_bound(table, columns))
    return insert.returning(*table.c) if returning else insert


async def spent_since(db: SQLDatabase, since: float) -> float:
    statement = sa.select(sa.func.coalesce(sa.func.sum(usage.c.cost_usd), 0.0)).where(
        usage.c.at >= since
    )
    return await db.read(lambda conn: float(conn.execute(statement).scalar_one()))


# --- Exchanges -----------------------------------------------------------------------------------


async def start_exchange(db: SQLDatabase, start: ExchangeStart, now: float) -> ExchangeRecord:
    insert = (
        dialect_insert(db.backend, exchanges)
        .values(**new_exchange_row(start, now))
        .on_conflict_do_nothing(index_elements=["platform", "delivery_id"])
    )
    read = sa.select(exchanges).where(
        exchanges.c.platform == start.platform, exchanges.c.delivery_id == start.delivery_id
    )

    def begin(conn: Connection) -> ExchangeRecord:
        conn.execute(insert)
        return to_exchange(conn.execute(read).mappings().one())

    return await db.run(begin)


async def update_exchange(db: SQLDatabase, exchange_id: int, changes: dict[str, Any]) -> None:
    check_updatable(changes, EXCHANGE_UPDATABLE, "exchange")
    if not changes:
        return
    statement = sa.update(exchanges).where(exchanges.c.id == exchange_id).values(**changes)
    await db.run(lambda conn: conn.execute(statement))


async def list_exchanges(
    db: SQLDatabase, filters: dict[str, Any], since: float | None, limit: int
) -> list[ExchangeRecord]:
    """Newest first; `filters` maps columns to values (None: any)."""
    statement = sa.select(exchanges).order_by(exchanges.c.id.desc()).limit(limit)
    for column, value in filters.items():
        if value is not None:
            statement = statement.where(exchanges.c[column] == value)
    if since is not None:
        statement = statement.where(exchanges.c.created_at >= since)
    return await db.run(
        lambda conn: [to_exchange(row) for row in conn.execute(statement).mappings()]
    )


async def count_exchanges(
    db: SQLDatabase,
    pull_request: tuple[str, str, int],
    author: str,
    since: float,
    outcomes: Collection[str],
    through_id: int | None,
) -> int:
    platform, repo, number = pull_request
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
    return await db.run(lambda conn: int(conn.execute(statement).scalar_one()))


# --- Installations -------------------------------------------------------------------------------
# One row per installation; its repositories are rows of their own.


async def upsert_installation(
    db: SQLDatabase,
    platform: str,
    installation_id: int,
    fields: dict[str, Any],
    repositories: Iterable[str] | None,
    now: float,
) -> None:
    changes = {**fields, "updated_at": now}
    statement = (
        dialect_insert(db.backend, installations)
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
            _add_repos(conn, db.backend, platform, installation_id, names, now)

    await db.run(upsert)


async def set_installation_state(
    db: SQLDatabase, platform: str, installation_id: int, state: InstallationState, now: float
) -> bool:
    statement = (
        sa.update(installations)
        .where(
            installations.c.platform == platform,
            installations.c.installation_id == installation_id,
        )
        .values(state=state, updated_at=now)
    )
    return await db.run(lambda conn: bool(conn.execute(statement).rowcount))


async def add_repositories(
    db: SQLDatabase, platform: str, installation_id: int, repositories: Iterable[str], now: float
) -> None:
    names = list(repositories)
    await db.run(lambda conn: _add_repos(conn, db.backend, platform, installation_id, names, now))


async def remove_repositories(
    db: SQLDatabase, platform: str, installation_id: int, repositories: Iterable[str]
) -> None:
    names = list(repositories)
    if not names:
        return
    statement = sa.delete(installation_repositories).where(
        installation_repositories.c.platform == platform,
        installation_repositories.c.installation_id == installation_id,
        installation_repositories.c.repo.in_(names),
    )
    await db.run(lambda conn: conn.execute(statement))


async def get_installation(
    db: SQLDatabase, platform: str, installation_id: int
) -> Installation | None:
    found = await db.run(
        lambda conn: _installations(
            conn,
            installations.c.platform == platform,
            installations.c.installation_id == installation_id,
        )
    )
    return found[0] if found else None


async def list_installations(db: SQLDatabase, platform: str | None) -> list[Installation]:
    where = [] if platform is None else [installations.c.platform == platform]
    return await db.run(lambda conn: _installations(conn, *where))


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
            dialect_insert(backend, installation_repositories).values(rows).on_conflict_do_nothing()
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
        to_installation(row, by_key.get((row["platform"], row["installation_id"]), ()))
        for row in found
    ]


# --- Operator views ------------------------------------------------------------------------------


async def review_activity(db: SQLDatabase, since: float) -> ReviewActivity:
    return await db.run(lambda conn: _review_activity(conn, since))


async def repo_activity(db: SQLDatabase) -> list[RepoActivity]:
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

    return await db.run(read)


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
        days=day_totals(per_day, spent),
        outcomes=outcomes,
        calls=int(calls),
        cached_calls=int(cached),
        findings_by_severity=severities,
        durations=durations,
    )
