"""The MongoDB store's collections, their indexes, and documents ↔ records.

One collection per record kind. There is no schema to migrate: "up to date" means every index
below exists, and `migrate()` creates the missing ones. Times are UNIX seconds (floats) as in
the SQL store, except the two TTL fields, which are BSON dates because the server's TTL monitor
only reads dates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.store.base import (
    ExchangeRecord,
    FindingRecord,
    Installation,
    Job,
    NewJob,
    PullRequestState,
    ReviewRecord,
)

Doc = dict[str, Any]

DELIVERIES = "deliveries"
JOBS = "jobs"
COUNTERS = "counters"
INSTALLATIONS = "installations"
LLM_CACHE = "llm_cache"
REVIEWS = "reviews"
FINDINGS = "findings"
PR_STATES = "pr_states"
USAGE = "usage"
EXCHANGES = "exchanges"


@dataclass(frozen=True)
class IndexSpec:
    name: str
    keys: list[tuple[str, int]]
    options: dict[str, Any] = field(default_factory=dict)


INDEXES: dict[str, list[IndexSpec]] = {
    DELIVERIES: [
        IndexSpec("delivery_unique", [("platform", 1), ("delivery_id", 1)], {"unique": True}),
        # Deleted by the server once `expires_at` (a date) has passed; reads ignore them sooner.
        IndexSpec("delivery_ttl", [("expires_at", 1)], {"expireAfterSeconds": 0}),
        IndexSpec("delivery_received", [("received_at", 1)]),
    ],
    JOBS: [
        # Claims: queued jobs that are due, oldest first.
        IndexSpec("job_claim", [("state", 1), ("run_at", 1), ("_id", 1)]),
        # The lease sweep: running jobs whose lease ran out.
        IndexSpec("job_lease", [("state", 1), ("lease_until", 1)]),
        # Listing by state, newest first.
        IndexSpec("job_state_id", [("state", 1), ("_id", 1)]),
        # Coalescing and cancelling by key.
        IndexSpec("job_key", [("key", 1), ("state", 1), ("_id", 1)]),
        # At most one running job per key, enforced by the server (keyless jobs are exempt).
        IndexSpec(
            "job_running_key",
            [("key", 1)],
            {
                "unique": True,
                "partialFilterExpression": {"state": "running", "key": {"$type": "string"}},
            },
        ),
    ],
    LLM_CACHE: [IndexSpec("cache_ttl", [("expires_at", 1)], {"expireAfterSeconds": 0})],
    REVIEWS: [
        IndexSpec("review_pr", [("platform", 1), ("repo", 1), ("number", 1), ("_id", -1)]),
        # One review per job: a retried job (or one taken over) gets its review back.
        IndexSpec(
            "review_job",
            [("job_id", 1)],
            {"unique": True, "partialFilterExpression": {"job_id": {"$exists": True}}},
        ),
    ],
    FINDINGS: [
        IndexSpec(
            "finding_unique",
            [("platform", 1), ("repo", 1), ("number", 1), ("fingerprint", 1)],
            {"unique": True},
        ),
        IndexSpec("finding_review", [("review_id", 1)]),
    ],
    USAGE: [IndexSpec("usage_at", [("at", 1)])],
    EXCHANGES: [
        IndexSpec("exchange_delivery", [("platform", 1), ("delivery_id", 1)], {"unique": True}),
        # The follow-up rate limit: one author's exchanges on a pull request since a moment.
        IndexSpec(
            "exchange_author",
            [("platform", 1), ("repo", 1), ("number", 1), ("author", 1), ("created_at", 1)],
        ),
        IndexSpec("exchange_created", [("created_at", 1)]),
    ],
}


def _signature() -> str:
    spec = {
        collection: [(i.name, i.keys, sorted(i.options.items(), key=str)) for i in specs]
        for collection, specs in INDEXES.items()
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    return f"indexes-{digest[:12]}"


# What `schema_status().head` reports: changes whenever an index above changes.
HEAD = _signature()


def as_date(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def as_seconds(date: datetime) -> float:
    """A stored date back to UNIX seconds (a client without tz_aware gives naive UTC dates)."""
    return (date if date.tzinfo is not None else date.replace(tzinfo=UTC)).timestamp()


# --- Documents → records -------------------------------------------------------------------------


def job_document(job_id: int, job: NewJob, now: float) -> Doc:
    return {
        "_id": job_id,
        "kind": job.kind,
        "key": job.key,
        "payload": job.payload,
        "state": "queued",
        "attempts": 0,
        "max_attempts": job.max_attempts,
        "run_at": job.run_at if job.run_at is not None else now,
        "lease_until": None,
        "worker_id": None,
        "last_error": None,
        "progress": None,
        "delivery_id": job.delivery_id,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
    }


def to_job(doc: Doc) -> Job:
    progress = doc.get("progress")
    return Job(
        id=int(doc["_id"]),
        kind=doc["kind"],
        key=doc.get("key"),
        payload=doc["payload"],
        state=doc["state"],
        attempts=int(doc["attempts"]),
        max_attempts=int(doc["max_attempts"]),
        run_at=float(doc["run_at"]),
        lease_until=doc.get("lease_until"),
        worker_id=doc.get("worker_id"),
        last_error=doc.get("last_error"),
        progress=json.loads(progress) if progress else {},
        delivery_id=doc.get("delivery_id"),
        created_at=float(doc["created_at"]),
        updated_at=float(doc["updated_at"]),
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
    )


def to_review(doc: Doc) -> ReviewRecord:
    return ReviewRecord(
        id=int(doc["_id"]),
        platform=doc["platform"],
        repo=doc["repo"],
        number=int(doc["number"]),
        head_sha=doc["head_sha"],
        base_sha=doc.get("base_sha"),
        mode=doc["mode"],
        state=doc["state"],
        outcome=doc.get("outcome"),
        reason=doc.get("reason"),
        job_id=doc.get("job_id"),
        delivery_id=doc.get("delivery_id"),
        model=doc.get("model"),
        calls=int(doc.get("calls") or 0),
        cached_calls=int(doc.get("cached_calls") or 0),
        input_tokens=int(doc.get("input_tokens") or 0),
        output_tokens=int(doc.get("output_tokens") or 0),
        cost_usd=float(doc.get("cost_usd") or 0.0),
        findings=int(doc.get("findings") or 0),
        severity_counts=dict(doc.get("severity_counts") or {}),
        not_reviewed=list(doc.get("not_reviewed") or []),
        dropped=int(doc.get("dropped") or 0),
        posted_review_id=doc.get("posted_review_id"),
        url=doc.get("url"),
        duration_seconds=doc.get("duration_seconds"),
        created_at=float(doc["created_at"]),
        finished_at=doc.get("finished_at"),
    )


def to_finding(doc: Doc) -> FindingRecord:
    return FindingRecord(
        fingerprint=doc["fingerprint"],
        path=doc["path"],
        line=int(doc["line"]),
        start_line=doc.get("start_line"),
        severity=doc["severity"],
        category=doc["category"],
        title=doc["title"],
        body=doc["body"],
        confidence=float(doc["confidence"]),
        posted=bool(doc["posted"]),
    )


def pr_state_id(platform: str, repo: str, number: int) -> Doc:
    # A compound _id compares field by field in order: always built here, in this order.
    return {"platform": platform, "repo": repo, "number": number}


def to_pr_state(platform: str, repo: str, number: int, doc: Doc | None) -> PullRequestState:
    if doc is None:
        return PullRequestState(platform, repo, number)
    return PullRequestState(
        platform,
        repo,
        number,
        last_reviewed_head=doc.get("last_reviewed_head"),
        paused=bool(doc.get("paused")),
        full_requested=bool(doc.get("full_requested")),
    )


def installation_id_of(platform: str, installation_id: int) -> str:
    return f"{platform}:{installation_id}"


def to_installation(doc: Doc) -> Installation:
    return Installation(
        platform=doc["platform"],
        installation_id=int(doc["installation_id"]),
        account=doc["account"],
        account_type=doc.get("account_type"),
        state=doc["state"],
        repository_selection=doc.get("repository_selection"),
        repositories=tuple(sorted(doc.get("repositories") or ())),
        created_at=float(doc["created_at"]),
        updated_at=float(doc["updated_at"]),
    )


def to_exchange(doc: Doc) -> ExchangeRecord:
    return ExchangeRecord(
        id=int(doc["_id"]),
        platform=doc["platform"],
        delivery_id=doc["delivery_id"],
        repo=doc["repo"],
        number=int(doc["number"]),
        comment_id=doc["comment_id"],
        thread=doc.get("thread"),
        path=doc.get("path"),
        line=doc.get("line"),
        author=doc["author"],
        kind=doc["kind"],
        command=doc.get("command"),
        question=doc["question"],
        outcome=doc["outcome"],
        answer=doc.get("answer"),
        confidence=doc.get("confidence"),
        reply_id=doc.get("reply_id"),
        model=doc.get("model"),
        input_tokens=int(doc.get("input_tokens") or 0),
        output_tokens=int(doc.get("output_tokens") or 0),
        cost_usd=float(doc.get("cost_usd") or 0.0),
        created_at=float(doc["created_at"]),
        finished_at=doc.get("finished_at"),
    )
