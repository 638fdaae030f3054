"""The Store contract: every backend must pass all of it."""

from __future__ import annotations

import asyncio

import pytest

from bot.store import Delivery, NewJob, Store
from bot.store.base import FindingRecord, ReviewStart, UsageRecord
from bot.store.sql import SQLStore
from tests.conftest import FakeClock


def _job(key: str | None = None, payload: str = "{}", max_attempts: int = 3) -> NewJob:
    return NewJob(kind="event", payload=payload, key=key, max_attempts=max_attempts)


async def test_schema_is_at_head(store: Store) -> None:
    status = await store.schema_status()
    assert status.up_to_date and status.current is not None
    assert await store.migrate() == []  # nothing left to apply


async def test_a_delivery_is_accepted_once(store: Store) -> None:
    first = await store.accept_delivery(Delivery("github", "d-1", "pull_request.opened"), _job())
    again = await store.accept_delivery(Delivery("github", "d-1", "pull_request.opened"), _job())
    other_platform = await store.accept_delivery(Delivery("gitlab", "d-1", "note"), _job())
    assert first.job_id is not None and not first.duplicate
    assert again.duplicate and again.job_id is None
    assert other_platform.job_id is not None and not other_platform.duplicate
    assert await store.seen_delivery("github", "d-1")
    assert not await store.seen_delivery("github", "d-2")
    counts = await store.job_counts()
    assert counts["queued"] == 2


async def test_claim_takes_due_jobs_in_order_up_to_the_limit(store: Store) -> None:
    ids = [(await store.enqueue(_job(payload=str(i)))).job_id for i in range(5)]
    claimed = await store.claim("w1", limit=3, lease_seconds=30)
    assert [j.id for j in claimed] == ids[:3]
    assert all(j.state == "running" and j.attempts == 1 and j.worker_id == "w1" for j in claimed)
    rest = await store.claim("w2", limit=10, lease_seconds=30)
    assert [j.id for j in rest] == ids[3:]
    assert await store.claim("w3", limit=10, lease_seconds=30) == []


async def test_jobs_due_later_wait(store: Store, clock: FakeClock) -> None:
    await store.enqueue(NewJob(kind="event", payload="{}", run_at=clock.now + 60))
    assert await store.claim("w", limit=5, lease_seconds=30) == []
    clock.advance(61)
    assert len(await store.claim("w", limit=5, lease_seconds=30)) == 1


async def test_complete_only_by_the_lease_holder(store: Store) -> None:
    await store.enqueue(_job())
    (job,) = await store.claim("w1", limit=1, lease_seconds=30)
    assert not await store.complete(job.id, "someone-else")
    assert await store.complete(job.id, "w1")
    done = await store.get_job(job.id)
    assert done is not None and done.state == "done" and done.finished_at is not None
    assert not await store.complete(job.id, "w1")  # already done


async def test_an_expired_lease_makes_the_job_claimable_again(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue(_job())
    (job,) = await store.claim("dead-worker", limit=1, lease_seconds=10)
    clock.advance(5)
    assert await store.claim("w2", limit=1, lease_seconds=10) == []  # lease still alive
    clock.advance(6)
    (again,) = await store.claim("w2", limit=1, lease_seconds=10)
    assert again.id == job.id and again.attempts == 2 and again.worker_id == "w2"
    assert again.last_error is not None and "lease expired" in again.last_error
    # The first worker's late completion must not count.
    assert not await store.complete(job.id, "dead-worker")
    assert await store.complete(job.id, "w2")


async def test_renewed_leases_do_not_expire(store: Store, clock: FakeClock) -> None:
    await store.enqueue(_job())
    (job,) = await store.claim("w1", limit=1, lease_seconds=10)
    for _ in range(5):
        clock.advance(8)
        assert await store.renew_leases("w1", [job.id], 10) == 1
    assert await store.claim("w2", limit=1, lease_seconds=10) == []
    assert await store.renew_leases("w2", [job.id], 10) == 0  # not w2's to renew


async def test_a_lease_expiring_on_the_last_attempt_buries_the_job(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue(_job(max_attempts=2))
    for _ in range(2):
        assert len(await store.claim("crashy", limit=1, lease_seconds=10)) == 1
        clock.advance(11)
    assert await store.claim("w", limit=1, lease_seconds=10) == []
    (dead,) = await store.list_jobs(state="dead")
    assert dead.attempts == 2
    assert dead.last_error is not None and "lease expired" in dead.last_error


async def test_retry_later_keeps_error_and_progress(store: Store, clock: FakeClock) -> None:
    await store.enqueue(_job())
    (job,) = await store.claim("w", limit=1, lease_seconds=30)
    progress = {"succeeded": ["handlers.a.first"]}
    assert await store.retry_later(
        job.id, "w", error="RuntimeError: boom", delay=20, progress=progress
    )
    queued = await store.get_job(job.id)
    assert queued is not None and queued.state == "queued"
    assert queued.last_error == "RuntimeError: boom" and queued.progress == progress
    assert await store.claim("w", limit=1, lease_seconds=30) == []
    clock.advance(21)
    (again,) = await store.claim("w", limit=1, lease_seconds=30)
    assert again.attempts == 2 and again.progress == progress


async def test_bury_and_requeue(store: Store) -> None:
    await store.enqueue(_job())
    (job,) = await store.claim("w", limit=1, lease_seconds=30)
    assert await store.bury(job.id, "w", error="ValueError: bad", progress={"succeeded": []})
    (dead,) = await store.list_jobs(state="dead")
    assert dead.id == job.id and dead.last_error == "ValueError: bad"
    assert await store.requeue(job.id)
    assert not await store.requeue(job.id)  # only dead or cancelled jobs
    (fresh,) = await store.claim("w", limit=1, lease_seconds=30)
    assert fresh.id == job.id and fresh.attempts == 1


async def test_release_gives_the_attempt_back(store: Store) -> None:
    await store.enqueue(_job())
    (job,) = await store.claim("w", limit=1, lease_seconds=30)
    assert await store.release(job.id, "w")
    (again,) = await store.claim("w2", limit=1, lease_seconds=30)
    assert again.id == job.id and again.attempts == 1


async def test_a_newer_job_replaces_a_queued_one_with_its_key(store: Store) -> None:
    first = await store.enqueue(_job(key="review:github:o/r#1", payload="head-1"))
    second = await store.enqueue(_job(key="review:github:o/r#1", payload="head-2"))
    other = await store.enqueue(_job(key="review:github:o/r#2", payload="other"))
    assert second.replaced == (first.job_id,)
    assert other.replaced == ()
    claimed = await store.claim("w", limit=10, lease_seconds=30)
    assert sorted(j.payload for j in claimed) == ["head-2", "other"]
    cancelled = await store.get_job(first.job_id or 0)
    assert cancelled is not None and cancelled.state == "cancelled"
    assert cancelled.last_error == f"superseded by job {second.job_id}"


async def test_a_running_job_is_not_replaced_and_its_key_waits(store: Store) -> None:
    key = "review:github:o/r#1"
    await store.enqueue(_job(key=key, payload="head-1"))
    (running,) = await store.claim("w1", limit=5, lease_seconds=30)
    queued = await store.enqueue(_job(key=key, payload="head-2"))
    newest = await store.enqueue(_job(key=key, payload="head-3"))
    assert queued.replaced == () and newest.replaced == (queued.job_id,)
    # One running and one queued: the queued one waits for the running one of its key.
    assert await store.claim("w2", limit=5, lease_seconds=30) == []
    assert await store.complete(running.id, "w1")
    (next_job,) = await store.claim("w2", limit=5, lease_seconds=30)
    assert next_job.payload == "head-3"


async def test_cancel_queued(store: Store) -> None:
    key = "review:github:o/r#7"
    job = await store.enqueue(_job(key=key))
    assert await store.cancel_queued(key, "pull request closed") == [job.job_id]
    cancelled = await store.get_job(job.job_id or 0)
    assert cancelled is not None and cancelled.last_error == "pull request closed"
    assert await store.cancel_queued(key, "again") == []


async def test_concurrent_claims_never_share_a_job(store: Store) -> None:
    total = 60
    for i in range(total):
        await store.enqueue(_job(payload=str(i)))
    # Separate store objects: separate connections, as separate processes would have.
    url = store.url if isinstance(store, SQLStore) else pytest.skip("SQL stores only")
    others = [SQLStore(url) for _ in range(3)]
    for other in others:
        await other.open()
    claimers = [store, *others]
    seen: list[int] = []

    async def drain(s: Store, worker: str) -> None:
        while True:
            jobs = await s.claim(worker, limit=4, lease_seconds=60)
            if not jobs:
                return
            seen.extend(j.id for j in jobs)
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(drain(s, f"w{i}") for i, s in enumerate(claimers * 2)))
    finally:
        for other in others:
            await other.close()
    assert len(seen) == total
    assert len(set(seen)) == total


async def test_purge_forgets_old_deliveries_and_finished_jobs(
    store: Store, clock: FakeClock
) -> None:
    old = await store.accept_delivery(Delivery("github", "old", "x"), _job())
    (job,) = await store.claim("w", limit=1, lease_seconds=30)
    await store.complete(job.id, "w")
    await store.enqueue(_job())  # still queued: never purged
    await store.cache_put("k" * 64, "v", ttl_seconds=5)
    clock.advance(10 * 86400)
    await store.accept_delivery(Delivery("github", "new", "x"), _job())
    removed = await store.purge(max_age=86400)
    assert removed == 3  # the old delivery, its finished job, the expired cache entry
    assert not await store.seen_delivery("github", "old")
    assert await store.seen_delivery("github", "new")
    assert await store.get_job(old.job_id or 0) is None
    assert (await store.job_counts())["queued"] == 2


async def test_job_counts_cover_every_state(store: Store) -> None:
    counts = await store.job_counts()
    assert counts == {"queued": 0, "running": 0, "done": 0, "dead": 0, "cancelled": 0}


async def test_cache_round_trip_and_ttl(store: Store, clock: FakeClock) -> None:
    key = "a" * 64
    assert await store.cache_get(key) is None
    await store.cache_put(key, '{"findings": []}', ttl_seconds=60)
    assert await store.cache_get(key) == '{"findings": []}'
    await store.cache_put(key, "newer", ttl_seconds=60)
    assert await store.cache_get(key) == "newer"
    clock.advance(61)
    assert await store.cache_get(key) is None


async def test_installations(store: Store) -> None:
    await store.upsert_installation(
        "github",
        42,
        account="octo-org",
        account_type="Organization",
        repository_selection="selected",
        repositories=["octo-org/a", "octo-org/b"],
    )
    await store.add_repositories("github", 42, ["octo-org/c", "octo-org/a"])
    await store.remove_repositories("github", 42, ["octo-org/b"])
    found = await store.get_installation("github", 42)
    assert found is not None
    assert found.repositories == ("octo-org/a", "octo-org/c")
    assert (found.account, found.account_type, found.state) == (
        "octo-org",
        "Organization",
        "active",
    )
    assert await store.set_installation_state("github", 42, "suspended")
    assert not await store.set_installation_state("github", 999, "suspended")
    await store.upsert_installation("github", 43, account="someone")
    listed = await store.list_installations("github")
    assert [(i.installation_id, i.state) for i in listed] == [(42, "suspended"), (43, "active")]
    assert (await store.list_installations("gitlab")) == []


# --- Reviews, findings, pull-request state, usage ------------------------------------------------


def _finding(fp: str, *, posted: bool = True, severity: str = "major") -> FindingRecord:
    return FindingRecord(
        fingerprint=fp,
        path="app.py",
        line=3,
        severity=severity,
        category="bug",
        title=f"title {fp}",
        body="body",
        confidence=0.9,
        posted=posted,
    )


async def test_a_retried_job_gets_its_review_back(store: Store) -> None:
    start = ReviewStart("github", "o/r", 7, head_sha="a" * 40, mode="full", job_id=11)
    first = await store.start_review(start)
    await store.update_review(first.id, posted_review_id="R1", state="failed")
    again = await store.start_review(
        ReviewStart("github", "o/r", 7, head_sha="b" * 40, mode="incremental", job_id=11)
    )
    assert again.id == first.id
    assert (again.head_sha, again.mode, again.state) == ("b" * 40, "incremental", "running")
    assert again.posted_review_id == "R1"
    other = await store.start_review(ReviewStart("github", "o/r", 7, "c" * 40, "full", job_id=12))
    assert other.id != first.id


async def test_review_updates_and_listing(store: Store, clock: FakeClock) -> None:
    review = await store.start_review(ReviewStart("gitlab", "g/p", 3, "d" * 40, "full"))
    await store.update_review(
        review.id,
        state="done",
        outcome="failure",
        model="gpt-4o",
        input_tokens=1200,
        output_tokens=300,
        cost_usd=0.0105,
        findings=2,
        severity_counts={"critical": 1, "minor": 1},
        not_reviewed=[{"path": "big.lock", "reason": "a lock file"}],
        duration_seconds=3.5,
        finished_at=clock.now,
    )
    found = await store.get_review(review.id)
    assert found is not None
    assert (found.outcome, found.model, found.cost_usd) == ("failure", "gpt-4o", 0.0105)
    assert found.severity_counts == {"critical": 1, "minor": 1}
    assert found.not_reviewed == [{"path": "big.lock", "reason": "a lock file"}]
    with pytest.raises(ValueError, match="not review columns"):
        await store.update_review(review.id, platform="github")
    await store.start_review(ReviewStart("github", "o/r", 1, "e" * 40, "full"))
    assert [r.id for r in await store.list_reviews(platform="gitlab")] == [review.id]
    assert len(await store.list_reviews()) == 2
    assert await store.get_review(9999) is None


async def test_findings_are_remembered_once_per_pull_request(store: Store) -> None:
    review = await store.start_review(ReviewStart("github", "o/r", 1, "a" * 40, "full"))
    new = await store.record_findings(
        review.id, "github", "o/r", 1, [_finding("f1"), _finding("f2", posted=False)]
    )
    assert new == 2
    later = await store.start_review(ReviewStart("github", "o/r", 1, "b" * 40, "incremental"))
    again = await store.record_findings(
        later.id, "github", "o/r", 1, [_finding("f1"), _finding("f3", severity="nit")]
    )
    assert again == 1
    recorded = await store.findings_for("github", "o/r", 1)
    assert [(f.fingerprint, f.posted) for f in recorded] == [
        ("f1", True),
        ("f2", False),
        ("f3", True),
    ]
    assert [
        f.fingerprint for f in await store.findings_for("github", "o/r", 1, review_id=later.id)
    ] == ["f3"]
    assert await store.findings_for("github", "o/r", 2) == []


async def test_pull_request_state(store: Store) -> None:
    empty = await store.pr_state("github", "o/r", 5)
    assert (empty.last_reviewed_head, empty.paused, empty.full_requested) == (None, False, False)
    await store.update_pr_state("github", "o/r", 5, full_requested=True)
    await store.update_pr_state("github", "o/r", 5, last_reviewed_head="a" * 40)
    state = await store.update_pr_state("github", "o/r", 5, paused=True)
    assert (state.last_reviewed_head, state.paused, state.full_requested) == ("a" * 40, True, True)
    state = await store.update_pr_state("github", "o/r", 5, paused=False, full_requested=False)
    assert (state.paused, state.full_requested) == (False, False)
    assert (await store.pr_state("github", "o/r", 5)).last_reviewed_head == "a" * 40


async def test_spend_is_summed_over_a_window(store: Store, clock: FakeClock) -> None:
    await store.record_usage(UsageRecord("review", 100, 10, 0.25, platform="github", repo="o/r"))
    start = clock.now
    clock.advance(60)
    await store.record_usage(UsageRecord("followup", 10, 5, 0.01, model="gpt-4o"))
    await store.record_usage(UsageRecord("review", 10, 5, 0.02))
    assert await store.spent_since(start + 1) == pytest.approx(0.03)
    assert await store.spent_since(start - 1) == pytest.approx(0.28)
    assert await store.spent_since(clock.now + 1) == 0.0


async def test_release_can_defer_a_job_with_a_note(store: Store, clock: FakeClock) -> None:
    await store.enqueue(_job())
    (job,) = await store.claim("w", limit=1, lease_seconds=30)
    assert await store.release(job.id, "w", delay=3600, note="waiting for the daily budget")
    waiting = await store.get_job(job.id)
    assert waiting is not None
    assert (waiting.state, waiting.attempts, waiting.last_error) == (
        "queued",
        0,
        "waiting for the daily budget",
    )
    assert await store.claim("w", limit=1, lease_seconds=30) == []
    clock.advance(3601)
    assert len(await store.claim("w", limit=1, lease_seconds=30)) == 1


async def test_the_schema_matches_the_migrations(store: Store) -> None:
    """Migrations and schema.py describe the same tables (alembic sees nothing to generate)."""
    if not isinstance(store, SQLStore):
        pytest.skip("SQL stores only")
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from bot.store.schema import metadata

    diff = await store.run_sql(
        lambda conn: compare_metadata(MigrationContext.configure(conn), metadata)
    )
    assert diff == []
