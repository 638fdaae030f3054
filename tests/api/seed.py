"""A store with a few days of reviews in it, written through the Store API the way the reviewer
and the worker write them: finished, failed and running reviews on both platforms, findings
(one with markup in it, as an attacker would write it), usage, installations, dead and queued
jobs."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.store import Store
from bot.store.base import FindingRecord, NewJob, ReviewStart, UsageRecord
from tests.conftest import FakeClock

DAY = 86400
MARKUP = '<img src=x onerror="window.__owned=1"><script>window.__owned=2</script>'


@dataclass(frozen=True)
class Seeded:
    success: int  # review ids
    failure: int
    error: int
    running: int
    dead_job: int
    queued_job: int
    now: float  # the clock when seeding ended


def _finding(
    fingerprint: str, severity: str, line: int, title: str, **extra: object
) -> FindingRecord:
    return FindingRecord(
        fingerprint=fingerprint,
        path=str(extra.get("path", "app.py")),
        line=line,
        severity=severity,
        category=str(extra.get("category", "bug")),
        title=title,
        body=str(extra.get("body", "Why it matters, and how to fix it.")),
        confidence=0.9,
        posted=bool(extra.get("posted", True)),
    )


async def seed(store: Store, clock: FakeClock) -> Seeded:
    end = clock.now
    clock.now = end - 3 * DAY  # three days ago
    await store.upsert_installation(
        "github",
        101,
        account="acme",
        account_type="Organization",
        repository_selection="selected",
        repositories=["acme/api", "acme/web", "acme/quiet"],
    )

    ok = await store.start_review(ReviewStart("github", "acme/api", 12, "a" * 40, "full", job_id=1))
    await store.record_findings(
        ok.id,
        "github",
        "acme/api",
        12,
        [
            _finding("f-1", "minor", 30, "Unused import", category="style"),
            _finding("f-2", "critical", 5, "Shell injection", category="security"),
        ],
    )
    await store.record_usage(
        UsageRecord("review", 1200, 300, 0.0125, "github", "acme/api", 12, "gpt-4o", ok.id)
    )
    clock.advance(12.5)
    await store.update_review(
        ok.id,
        state="done",
        outcome="success",
        reason="2 new finding(s): 1 critical, 1 minor",
        model="gpt-4o",
        calls=2,
        cached_calls=1,
        input_tokens=1200,
        output_tokens=300,
        cost_usd=0.0125,
        findings=2,
        severity_counts={"critical": 1, "minor": 1},
        not_reviewed=[{"path": "package-lock.json", "reason": "a lock file"}],
        url="https://github.com/acme/api/pull/12#issuecomment-1",
        duration_seconds=12.5,
        finished_at=clock.now,
    )

    clock.advance(DAY)
    bad = await store.start_review(ReviewStart("github", "acme/web", 3, "b" * 40, "full", job_id=2))
    await store.record_findings(
        bad.id, "github", "acme/web", 3, [_finding("f-3", "major", 9, MARKUP, body=MARKUP)]
    )
    await store.record_usage(
        UsageRecord("review", 800, 200, 0.0075, "github", "acme/web", 3, "gpt-4o", bad.id)
    )
    clock.advance(30)
    await store.update_review(
        bad.id,
        state="done",
        outcome="failure",
        reason="1 finding(s) at or above major: 1 major",
        model="gpt-4o",
        calls=1,
        input_tokens=800,
        output_tokens=200,
        cost_usd=0.0075,
        findings=1,
        severity_counts={"major": 1},
        url="javascript:alert(1)",  # never a link
        duration_seconds=30.0,
        finished_at=clock.now,
    )

    clock.advance(DAY)
    failed = await store.start_review(
        ReviewStart("gitlab", "group/sub/project", 7, "c" * 40, "full", job_id=3)
    )
    await store.update_review(
        failed.id,
        state="failed",
        outcome="error",
        reason="the model provider failed: 500",
        duration_seconds=2.0,
        finished_at=clock.now + 2,
    )
    await store.record_usage(UsageRecord("followup", 100, 40, 0.001, "github", "acme/api", 12))

    clock.now = end - 60
    running = await store.start_review(
        ReviewStart("github", "acme/api", 14, "d" * 40, "incremental", job_id=4)
    )

    dead = await store.enqueue(
        NewJob(
            "review",
            json.dumps({"platform": "github", "repo": "acme/api", "number": 13}),
            max_attempts=2,
        )
    )
    (claimed,) = await store.claim("seed-worker", limit=1, lease_seconds=30)
    await store.bury(claimed.id, "seed-worker", error="the model provider failed: 500\n" + MARKUP)
    queued = await store.enqueue(
        NewJob(
            "event",
            json.dumps(
                {
                    "platform": "github",
                    "name": "pull_request",
                    "action": "opened",
                    "repo": "acme/web",
                    "number": 4,
                    "payload": {},
                }
            ),
            run_at=end + 3600,  # not due for an hour: no worker here would take it anyway
        )
    )
    await _seed_recovery(store, clock, end)
    clock.now = end
    assert dead.job_id is not None and queued.job_id is not None and claimed.id == dead.job_id
    return Seeded(ok.id, bad.id, failed.id, running.id, dead.job_id, queued.job_id, end)


async def _seed_recovery(store: Store, clock: FakeClock, end: float) -> None:
    """Recovery (bot/recovery/): a redelivery pass an hour ago that asked for two deliveries
    (GitHub accepted one and refused the other), and a sweep that queued one review."""
    clock.now = end - 3600
    assert await store.acquire_pass("redelivery", "seed", lease_seconds=60, last_finished_before=0)
    await store.claim_redelivery(
        "github", "guid-accepted", 7001, source="app", max_attempts=3, stale_after=600
    )
    await store.settle_redelivery("github", "guid-accepted", 7001, "accepted")
    clock.now += 60
    await store.claim_redelivery(
        "github", "guid-refused", 7002, source="app", max_attempts=3, stale_after=600
    )
    await store.settle_redelivery(
        "github", "guid-refused", 7002, "refused", error=f"422 too old {MARKUP}"
    )
    summary = {"sources": 1, "listed": 40, "due": 2, "done": 1, "refused": 1, "seconds": 0.8}
    await store.finish_pass("redelivery", "seed", summary=summary, added=1)
    assert await store.acquire_pass("reconcile", "seed", lease_seconds=60, last_finished_before=0)
    await store.finish_pass("reconcile", "seed", summary={"sources": 3, "done": 1}, added=1)
    await store.note_repositories("github", ["acme/api", "acme/web"], installation_id=101)
