"""The MongoDB store's collections, their indexes, and the ids and dates of its documents.

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

from bot.store.base import NewJob
from bot.store.records import new_job_row

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
# Recovery (bot/recovery/): passes, watermarks, redelivery requests, repositories seen.
RECOVERY_PASSES = "recovery_passes"
WATERMARKS = "watermarks"
REDELIVERIES = "redeliveries"
KNOWN_REPOSITORIES = "known_repositories"


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
        # A model's recent reviews (`output_per_call`), newest first.
        IndexSpec("review_model", [("model", 1), ("_id", -1)]),
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
    # Recovery: purging old redelivery requests, and listing one platform's repositories.
    REDELIVERIES: [IndexSpec("redelivery_created", [("created_at", 1)])],
    KNOWN_REPOSITORIES: [IndexSpec("known_repository_platform", [("platform", 1), ("repo", 1)])],
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


# --- Documents -----------------------------------------------------------------------------------
# A document holds a record's fields under their names, as a SQL row does: `records` maps both.

# A job is written whole: what it holds before its first claim, beside what it was enqueued with.
_UNCLAIMED = {
    "lease_until": None,
    "worker_id": None,
    "last_error": None,
    "progress": None,
    "started_at": None,
    "finished_at": None,
}


def job_document(job_id: int, job: NewJob, now: float) -> Doc:
    return {"_id": job_id, **new_job_row(job, now), **_UNCLAIMED}


def pr_state_id(platform: str, repo: str, number: int) -> Doc:
    # A compound _id compares field by field in order: always built here, in this order.
    return {"platform": platform, "repo": repo, "number": number}


def installation_id_of(platform: str, installation_id: int) -> str:
    return f"{platform}:{installation_id}"
