"""Rows ↔ records, written once for both stores: what a new job, review, finding, exchange or
usage row holds, and how a stored row becomes a record of `base`.

A SQL row and a MongoDB document hold the same fields under the same names, except the id
(`id` in SQL, `_id` in MongoDB: the `id_field` argument) and a review's JSON fields (text in
SQL, the value itself in a document). Fields a document may lack are read with `.get`; a job
is always written whole.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from bot.store.base import (
    DayTotals,
    ExchangeRecord,
    ExchangeStart,
    FindingRecord,
    Installation,
    Job,
    NewJob,
    PullRequestState,
    ReviewRecord,
    ReviewStart,
    UsageRecord,
)

Row = Mapping[Any, Any]  # a SQLAlchemy RowMapping (keys: names or columns), or a document


def check_updatable(changes: Collection[str], updatable: frozenset[str], record: str) -> None:
    """Refuse a change to a column that `updatable` does not list."""
    unknown = set(changes) - updatable
    if unknown:
        raise ValueError(f"not {record} columns that may change: {sorted(unknown)}")


# --- Jobs ----------------------------------------------------------------------------------------


def new_job_row(job: NewJob, now: float) -> dict[str, Any]:
    """A job as enqueued (the id is the store's to give)."""
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


def to_job(row: Row, id_field: str = "id") -> Job:
    # Every job row holds every field (a MongoDB job is written whole: `job_document`), and
    # this runs for each job claimed: plain lookups, which on a SQLAlchemy row cost a fifth of
    # `.get`.
    progress = row["progress"]
    return Job(
        id=int(row[id_field]),
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


# --- Reviews and findings ------------------------------------------------------------------------


def new_review_row(start: ReviewStart, now: float) -> dict[str, Any]:
    """A review as it starts, but for its job id (SQL stores null, MongoDB leaves it out)."""
    return {
        "platform": start.platform,
        "repo": start.repo,
        "number": start.number,
        "delivery_id": start.delivery_id,
        "head_sha": start.head_sha,
        "base_sha": start.base_sha,
        "mode": start.mode,
        "state": "running",
        "outcome": None,
        "calls": 0,
        "cached_calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "findings": 0,
        "dropped": 0,
        "created_at": now,
    }


def _json(value: Any) -> Any:
    """A JSON field as stored: text in SQL, the value itself in a document; None when empty."""
    if not value:
        return None
    return json.loads(value) if isinstance(value, str) else value


def to_review(row: Row, id_field: str = "id") -> ReviewRecord:
    return ReviewRecord(
        id=int(row[id_field]),
        platform=row["platform"],
        repo=row["repo"],
        number=int(row["number"]),
        head_sha=row["head_sha"],
        base_sha=row.get("base_sha"),
        mode=row["mode"],
        state=row["state"],
        outcome=row.get("outcome"),
        reason=row.get("reason"),
        job_id=row.get("job_id"),
        delivery_id=row.get("delivery_id"),
        model=row.get("model"),
        calls=int(row.get("calls") or 0),
        cached_calls=int(row.get("cached_calls") or 0),
        input_tokens=int(row.get("input_tokens") or 0),
        output_tokens=int(row.get("output_tokens") or 0),
        cost_usd=float(row.get("cost_usd") or 0.0),
        findings=int(row.get("findings") or 0),
        severity_counts=dict(_json(row.get("severity_counts")) or {}),
        not_reviewed=list(_json(row.get("not_reviewed")) or []),
        dropped=int(row.get("dropped") or 0),
        posted_review_id=row.get("posted_review_id"),
        url=row.get("url"),
        duration_seconds=row.get("duration_seconds"),
        created_at=float(row["created_at"]),
        finished_at=row.get("finished_at"),
    )


def finding_row(
    review_id: int, pull_request: tuple[str, str, int], finding: FindingRecord, now: float
) -> dict[str, Any]:
    platform, repo, number = pull_request
    return {
        "review_id": review_id,
        "platform": platform,
        "repo": repo,
        "number": number,
        "fingerprint": finding.fingerprint,
        "path": finding.path,
        "line": finding.line,
        "start_line": finding.start_line,
        "severity": finding.severity,
        "category": finding.category,
        "title": finding.title,
        "body": finding.body,
        "confidence": finding.confidence,
        "posted": finding.posted,
        "created_at": now,
    }


def to_finding(row: Row) -> FindingRecord:
    return FindingRecord(
        fingerprint=row["fingerprint"],
        path=row["path"],
        line=int(row["line"]),
        start_line=row.get("start_line"),
        severity=row["severity"],
        category=row["category"],
        title=row["title"],
        body=row["body"],
        confidence=float(row["confidence"]),
        posted=bool(row["posted"]),
        review_id=int(row["review_id"]) if row.get("review_id") is not None else None,
    )


# --- Pull-request state, installations, usage ----------------------------------------------------


def to_pr_state(platform: str, repo: str, number: int, row: Row | None) -> PullRequestState:
    if row is None:
        return PullRequestState(platform, repo, number)
    return PullRequestState(
        platform,
        repo,
        number,
        last_reviewed_head=row.get("last_reviewed_head"),
        paused=bool(row.get("paused")),
        full_requested=bool(row.get("full_requested")),
    )


def to_installation(row: Row, repositories: Iterable[str]) -> Installation:
    """`repositories`: in order (SQL keeps them in a table of their own, MongoDB in the row)."""
    return Installation(
        platform=row["platform"],
        installation_id=int(row["installation_id"]),
        account=row["account"],
        account_type=row.get("account_type"),
        state=row["state"],
        repository_selection=row.get("repository_selection"),
        repositories=tuple(repositories),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )


def usage_row(record: UsageRecord, now: float) -> dict[str, Any]:
    return {
        "at": now,
        "kind": record.kind,
        "platform": record.platform,
        "repo": record.repo,
        "number": record.number,
        "model": record.model,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cost_usd": record.cost_usd,
        "review_id": record.review_id,
    }


# --- Exchanges -----------------------------------------------------------------------------------


def new_exchange_row(start: ExchangeStart, now: float) -> dict[str, Any]:
    """An exchange as it arrives: pending."""
    return {
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
        "created_at": now,
    }


def to_exchange(row: Row, id_field: str = "id") -> ExchangeRecord:
    return ExchangeRecord(
        id=int(row[id_field]),
        platform=row["platform"],
        delivery_id=row["delivery_id"],
        repo=row["repo"],
        number=int(row["number"]),
        comment_id=row["comment_id"],
        thread=row.get("thread"),
        path=row.get("path"),
        line=row.get("line"),
        author=row["author"],
        kind=row["kind"],
        command=row.get("command"),
        question=row["question"],
        outcome=row["outcome"],
        answer=row.get("answer"),
        confidence=row.get("confidence"),
        reply_id=row.get("reply_id"),
        model=row.get("model"),
        input_tokens=int(row.get("input_tokens") or 0),
        output_tokens=int(row.get("output_tokens") or 0),
        cost_usd=float(row.get("cost_usd") or 0.0),
        created_at=float(row["created_at"]),
        finished_at=row.get("finished_at"),
    )


# --- Operator views ------------------------------------------------------------------------------


def day_totals(
    reviews: Mapping[int, int], spent: Mapping[int, tuple[float, int, int]]
) -> tuple[DayTotals, ...]:
    """Reviews started and usage (cost, tokens in, tokens out) by UTC day, as one row a day:
    oldest first, days with neither left out."""
    return tuple(
        DayTotals(day, reviews.get(day, 0), *spent.get(day, (0.0, 0, 0)))
        for day in sorted(reviews.keys() | spent.keys())
    )
