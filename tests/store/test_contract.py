"""The Store contract: every backend must pass all of it."""

from __future__ import annotations

import asyncio

import pytest

from bot.store import Delivery, NewJob, Store
from bot.store.base import (
    ExchangeStart,
    FindingRecord,
    ReviewQuery,
    ReviewRecord,
    ReviewStart,
    UsageRecord,
)
from bot.store.noted import NOTE_AGAIN_SECONDS
from bot.store.sql import SQLStore
from tests.conftest import FakeClock
from tests.store.conftest import Backend


def _job(
    key: str | None = None, payload: str = "{}", max_attempts: int = 3, kind: str = "event"
) -> NewJob:
    return NewJob(kind=kind, payload=payload, key=key, max_attempts=max_attempts)


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


async def test_a_kind_with_a_lane_of_its_own_is_claimed_besides_the_limit(store: Store) -> None:
    """A lane is room for its kind besides the limit; the other kinds never pass the limit."""
    reviews = [(await store.enqueue(_job(kind="review", payload=str(i)))).job_id for i in range(3)]
    events = [(await store.enqueue(_job(kind="event", payload=str(i)))).job_id for i in range(4)]
    first = await store.claim("w1", limit=2, lease_seconds=30, lanes={"event": 1})
    assert [j.id for j in first] == [*reviews[:2], events[0]]
    # No room left under the limit: only the lane's kind is taken, up to the lane's room.
    second = await store.claim("w1", limit=0, lease_seconds=30, lanes={"event": 2})
    assert [j.id for j in second] == events[1:3]
    # A full lane adds nothing; the limit takes the oldest of any kind.
    third = await store.claim("w2", limit=1, lease_seconds=30, lanes={"event": 0})
    assert [j.id for j in third] == [reviews[2]]
    assert [j.id for j in await store.claim("w2", limit=5, lease_seconds=30)] == [events[3]]


async def test_a_lane_that_needs_a_deep_queue_takes_nothing_from_a_shallower_one(
    store: Store, clock: FakeClock
) -> None:
    """`deep`: a lane takes its kind only while at least so many jobs (of any kind, due ones
    only) are queued as the claim starts; the limit's part takes its jobs either way."""
    reviews = [(await store.enqueue(_job(kind="review", payload=str(i)))).job_id for i in range(3)]
    await store.enqueue(NewJob(kind="event", payload="{}", run_at=clock.now + 60))  # not due
    shallow = await store.claim(
        "w1", limit=0, lease_seconds=30, lanes={"review": 2}, deep={"review": 4}
    )
    assert shallow == []
    deep_enough = await store.claim(
        "w1", limit=0, lease_seconds=30, lanes={"review": 2}, deep={"review": 3}
    )
    assert [j.id for j in deep_enough] == reviews[:2]
    # One left: the lane needs two, the limit takes it.
    assert (
        await store.claim("w1", limit=0, lease_seconds=30, lanes={"review": 1}, deep={"review": 2})
        == []
    )
    last = await store.claim(
        "w2", limit=1, lease_seconds=30, lanes={"review": 1}, deep={"review": 2}
    )
    assert [j.id for j in last] == reviews[2:]


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
        assert await store.renew_leases("w1", [job.id], 10) == [job.id]
    assert await store.claim("w2", limit=1, lease_seconds=10) == []
    assert await store.renew_leases("w2", [job.id], 10) == []  # not w2's to renew


async def test_a_lease_expiring_on_the_last_attempt_buries_the_job(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue(_job(max_attempts=2))
    for attempt in range(2):  # each time a worker takes it and dies (a new worker id each time)
        assert len(await store.claim(f"crashy-{attempt}", limit=1, lease_seconds=10)) == 1
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


async def test_concurrent_claims_never_share_a_job(store: Store, backend: Backend) -> None:
    total = 60
    for i in range(total):
        await store.enqueue(_job(payload=str(i)))
    # Separate store objects: separate connections, as separate processes would have.
    claimers = [store, *[await backend.open() for _ in range(3)]]
    seen: list[tuple[int, str]] = []

    async def drain(s: Store, worker: str) -> None:
        while True:
            jobs = await s.claim(worker, limit=4, lease_seconds=60)
            if not jobs:
                return
            seen.extend((j.id, worker) for j in jobs)
            await asyncio.sleep(0)

    await asyncio.gather(*(drain(s, f"w{i}") for i, s in enumerate(claimers * 2)))
    assert len(seen) == total
    assert len({job_id for job_id, _ in seen}) == total
    assert len({worker for _, worker in seen}) > 1  # they did compete


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
    # Only the taking back says so: what it posted under the review's id may be there.
    assert (first.resumed, again.resumed) == (False, True)
    read = await store.get_review(first.id)
    assert read is not None and not read.resumed
    other = await store.start_review(ReviewStart("github", "o/r", 7, "c" * 40, "full", job_id=12))
    assert other.id != first.id and not other.resumed


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
    assert [(f.fingerprint, f.posted, f.review_id) for f in recorded] == [
        ("f1", True, review.id),  # the review that recorded it first keeps it
        ("f2", False, review.id),
        ("f3", True, later.id),
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


# --- Exchanges: questions and commands put to Arbiter ------------------------------------------


def _question(delivery: str, author: str = "alice", number: int = 1) -> ExchangeStart:
    return ExchangeStart(
        platform="github",
        delivery_id=delivery,
        repo="o/r",
        number=number,
        comment_id=f"c-{delivery}",
        author=author,
        kind="question",
        question="@arbiter why is this a bug?",
        thread="501",
        path="app.py",
        line=5,
    )


async def test_an_exchange_is_started_once_per_delivery(store: Store, clock: FakeClock) -> None:
    first = await store.start_exchange(_question("d-1"))
    assert (first.outcome, first.answer, first.input_tokens, first.cost_usd) == (
        "pending",
        None,
        0,
        0.0,
    )
    assert (first.thread, first.path, first.line, first.created_at) == (
        "501",
        "app.py",
        5,
        clock.now,
    )
    await store.update_exchange(
        first.id,
        outcome="answered",
        answer="Because the input reaches a shell.",
        confidence=0.82,
        reply_id="9001",
        model="gpt-4o",
        input_tokens=900,
        output_tokens=60,
        cost_usd=0.003,
        finished_at=clock.now + 2,
    )
    again = await store.start_exchange(_question("d-1"))  # a retried job: the same record
    assert again.id == first.id
    assert (again.outcome, again.answer, again.confidence, again.reply_id) == (
        "answered",
        "Because the input reaches a shell.",
        0.82,
        "9001",
    )
    assert (again.model, again.input_tokens, again.output_tokens) == ("gpt-4o", 900, 60)
    assert again.cost_usd == pytest.approx(0.003) and again.finished_at == clock.now + 2
    with pytest.raises(ValueError, match="not exchange columns"):
        await store.update_exchange(first.id, author="mallory")
    other = await store.start_exchange(_question("d-2"))
    assert other.id != first.id


async def test_a_command_exchange_keeps_its_command(store: Store) -> None:
    start = ExchangeStart(
        platform="gitlab",
        delivery_id="d-9",
        repo="g/p",
        number=4,
        comment_id="77",
        author="bob",
        kind="command",
        command="pause",
        question="@arbiter pause",
    )
    record = await store.start_exchange(start)
    await store.update_exchange(record.id, outcome="done")
    (listed,) = await store.list_exchanges(platform="gitlab")
    assert (listed.kind, listed.command, listed.outcome, listed.thread) == (
        "command",
        "pause",
        "done",
        None,
    )


async def test_exchanges_are_listed_newest_first_and_filtered(
    store: Store, clock: FakeClock
) -> None:
    a = await store.start_exchange(_question("d-1", author="alice"))
    clock.advance(10)
    b = await store.start_exchange(_question("d-2", author="bob"))
    c = await store.start_exchange(_question("d-3", author="alice", number=2))
    assert [e.id for e in await store.list_exchanges()] == [c.id, b.id, a.id]
    assert [e.id for e in await store.list_exchanges(author="alice")] == [c.id, a.id]
    assert [e.id for e in await store.list_exchanges(repo="o/r", number=1)] == [b.id, a.id]
    assert [e.id for e in await store.list_exchanges(since=clock.now)] == [c.id, b.id]
    assert [e.id for e in await store.list_exchanges(limit=1)] == [c.id]
    assert await store.list_exchanges(platform="gitlab") == []


async def test_exchanges_are_counted_per_author_pull_request_window_and_outcome(
    store: Store, clock: FakeClock
) -> None:
    old = await store.start_exchange(_question("d-0"))
    await store.update_exchange(old.id, outcome="answered")
    clock.advance(3600)
    window = clock.now
    started = []
    for i, outcome in enumerate(["answered", "unsure", "rate_limited", "pending"]):
        record = await store.start_exchange(_question(f"d-{i + 1}"))
        started.append(record)
        if outcome != "pending":
            await store.update_exchange(record.id, outcome=outcome)
    first = started[0]
    await store.start_exchange(_question("d-other-user", author="bob"))
    await store.start_exchange(_question("d-other-pr", number=2))

    async def count(
        outcomes: list[str], since: float = window, through_id: int | None = None
    ) -> int:
        return await store.count_exchanges(
            "github",
            "o/r",
            1,
            author="alice",
            since=since,
            outcomes=outcomes,
            through_id=through_id,
        )

    assert await count(["answered", "unsure", "pending"]) == 3
    assert await count(["rate_limited"]) == 1
    assert await count([]) == 0
    assert await count(["answered"]) == 1
    assert await count(["answered"], since=window - 3600) == 2  # the old one too
    # Only those that started no later than a given one (questions arriving at once).
    assert await count(["answered", "unsure", "pending"], through_id=first.id) == 1


# --- Every Store call, concurrency, leases, coalescing, TTLs ------------------------------------


async def test_the_store_answers_a_ping(store: Store) -> None:
    await store.ping()


async def test_a_delivered_job_keeps_what_it_was_given(store: Store, clock: FakeClock) -> None:
    job = NewJob(kind="event", payload='{"a": 1}', max_attempts=5, delivery_id="d-7")
    accepted = await store.accept_delivery(Delivery("github", "d-7", "pull_request.opened"), job)
    found = await store.get_job(accepted.job_id or 0)
    assert found is not None
    assert (found.kind, found.payload, found.delivery_id, found.key) == (
        "event",
        '{"a": 1}',
        "d-7",
        None,
    )
    assert (found.state, found.attempts, found.max_attempts) == ("queued", 0, 5)
    assert found.created_at == found.run_at == clock.now
    assert (found.worker_id, found.lease_until, found.started_at, found.progress) == (
        None,
        None,
        None,
        {},
    )
    assert await store.get_job(10_000) is None


async def test_jobs_are_listed_newest_first_by_kind_and_state(store: Store) -> None:
    events = [(await store.enqueue(_job())).job_id for _ in range(3)]
    review = (await store.enqueue(NewJob(kind="review", payload="{}"))).job_id
    assert [j.id for j in await store.list_jobs()] == [review, *reversed(events)]
    assert [j.id for j in await store.list_jobs(kind="event", limit=2)] == events[:0:-1]
    assert [j.id for j in await store.list_jobs(kind="review", state="queued")] == [review]
    assert await store.list_jobs(state="running") == []


async def test_only_the_lease_holder_retries_buries_or_releases(store: Store) -> None:
    await store.enqueue(_job())
    (job,) = await store.claim("w1", limit=1, lease_seconds=30)
    assert not await store.retry_later(job.id, "w2", error="x", delay=0)
    assert not await store.bury(job.id, "w2", error="x")
    assert not await store.release(job.id, "w2")
    still = await store.get_job(job.id)
    assert still is not None and (still.state, still.worker_id) == ("running", "w1")
    assert await store.release(job.id, "w1")
    assert not await store.complete(job.id, "w1")  # given back: no longer w1's


async def test_a_delivery_with_a_key_replaces_a_queued_job_of_that_key(store: Store) -> None:
    key = "review:github:o/r#3"
    first = await store.accept_delivery(Delivery("github", "k-1", "x"), _job(key=key))
    second = await store.accept_delivery(Delivery("github", "k-2", "x"), _job(key=key))
    assert second.replaced == (first.job_id,)
    (queued,) = await store.list_jobs(state="queued")
    assert queued.id == second.job_id


async def test_concurrent_copies_of_a_delivery_queue_one_job(
    store: Store, backend: Backend
) -> None:
    """The platform sends a delivery again while the first copy is being stored."""
    stores = [store, *[await backend.open() for _ in range(3)]]
    delivery = Delivery("github", "twice", "pull_request.opened")
    results = await asyncio.gather(
        *(s.accept_delivery(delivery, _job(payload=str(i))) for i, s in enumerate(stores * 3))
    )
    accepted = [r for r in results if not r.duplicate]
    assert len(accepted) == 1 and accepted[0].job_id is not None
    assert all(r.job_id is None for r in results if r.duplicate)
    assert [j.id for j in await store.list_jobs()] == [accepted[0].job_id]


async def test_concurrent_enqueues_of_one_key_leave_the_newest_queued(
    store: Store, backend: Backend
) -> None:
    keys = [f"review:github:o/r#{n}" for n in range(4)]  # four races at once
    stores = [store, *[await backend.open() for _ in range(3)]]
    sent = [(key, s) for key in keys for s in stores * 3]
    results = await asyncio.gather(*(s.enqueue(_job(key=key)) for key, s in sent))
    newest: dict[str | None, int] = {}
    for (key, _), result in zip(sent, results, strict=True):
        assert result.job_id is not None
        newest[key] = max(newest.get(key, 0), result.job_id)
    queued = {job.key: job.id for job in await store.list_jobs(state="queued")}
    assert queued == newest  # one queued job per key: its newest
    for job in await store.list_jobs(state="cancelled", limit=1000):
        assert job.last_error is not None and job.last_error.startswith("superseded by job ")
        assert int(job.last_error.rsplit(" ", 1)[1]) > job.id  # by a newer one
    replaced = [i for r in results for i in r.replaced]
    assert len(replaced) == len(set(replaced))  # each replaced once


async def test_an_expired_lease_is_taken_over_by_one_claimer(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    await store.enqueue(_job())
    (job,) = await store.claim("gone", limit=1, lease_seconds=10)
    clock.advance(11)
    stores = [store, *[await backend.open() for _ in range(3)]]
    claims = await asyncio.gather(
        *(s.claim(f"w{i}", limit=5, lease_seconds=10) for i, s in enumerate(stores))
    )
    taken = [j for jobs in claims for j in jobs]
    assert [(j.id, j.attempts) for j in taken] == [(job.id, 2)]
    assert await store.renew_leases("gone", [job.id], 10) == []
    assert await store.renew_leases(taken[0].worker_id or "", [job.id], 10) == [job.id]


async def test_two_queued_jobs_of_one_key_never_run_at_once(store: Store, backend: Backend) -> None:
    """A retried job and its queued successor are both queued: only one of them may run."""
    key = "review:github:o/r#4"
    await store.enqueue(_job(key=key, payload="head-1"))
    (first,) = await store.claim("w1", limit=1, lease_seconds=30)
    await store.enqueue(_job(key=key, payload="head-2"))
    assert await store.retry_later(first.id, "w1", error="boom", delay=0)
    stores = [store, *[await backend.open() for _ in range(2)]]
    claims = await asyncio.gather(
        *(s.claim(f"w{i}", limit=5, lease_seconds=30) for i, s in enumerate(stores * 2))
    )
    (running,) = [j for jobs in claims for j in jobs]
    assert await store.claim("w9", limit=5, lease_seconds=30) == []
    assert await store.complete(running.id, running.worker_id or "")
    (other,) = await store.claim("w9", limit=5, lease_seconds=30)
    assert other.id != running.id and other.key == key


async def test_cache_entries_expire_one_by_one(store: Store, clock: FakeClock) -> None:
    await store.cache_put("s" * 64, "short", ttl_seconds=10)
    await store.cache_put("l" * 64, "long", ttl_seconds=100)
    clock.advance(9)
    assert await store.cache_get("s" * 64) == "short"
    clock.advance(2)
    assert await store.cache_get("s" * 64) is None
    assert await store.cache_get("l" * 64) == "long"
    assert await store.purge(max_age=86400) == 1  # the expired entry only
    await store.cache_put("s" * 64, "again", ttl_seconds=10)  # an expired key is written anew
    assert await store.cache_get("s" * 64) == "again"


async def test_an_installation_upsert_replaces_the_repositories_it_is_given(
    store: Store, clock: FakeClock
) -> None:
    await store.add_repositories("github", 7, ["o/early"])  # before the installation is known
    assert await store.get_installation("github", 7) is None
    created = clock.now
    await store.upsert_installation("github", 7, account="o", repositories=["o/a", "o/b"])
    clock.advance(5)
    await store.upsert_installation("github", 7, account="o", state="suspended")
    kept = await store.get_installation("github", 7)
    assert kept is not None and kept.repositories == ("o/a", "o/b")
    assert (kept.state, kept.created_at, kept.updated_at) == ("suspended", created, clock.now)
    await store.upsert_installation("github", 7, account="o", repositories=["o/c"])
    replaced = await store.get_installation("github", 7)
    assert replaced is not None and replaced.repositories == ("o/c",)
    await store.upsert_installation("gitlab", 3, account="g")
    assert [(i.platform, i.installation_id) for i in await store.list_installations()] == [
        ("github", 7),
        ("gitlab", 3),
    ]


async def test_reviews_are_listed_newest_first_by_pull_request(store: Store) -> None:
    a = await store.start_review(ReviewStart("github", "o/r", 1, "a" * 40, "full"))
    b = await store.start_review(ReviewStart("github", "o/r", 2, "b" * 40, "full"))
    c = await store.start_review(ReviewStart("github", "o/other", 1, "c" * 40, "full"))
    assert [r.id for r in await store.list_reviews()] == [c.id, b.id, a.id]
    assert [r.id for r in await store.list_reviews(repo="o/r")] == [b.id, a.id]
    assert [r.id for r in await store.list_reviews(repo="o/r", number=1)] == [a.id]
    assert [r.id for r in await store.list_reviews(limit=1)] == [c.id]
    fresh = await store.get_review(a.id)
    assert fresh is not None
    assert (fresh.state, fresh.outcome, fresh.calls, fresh.cost_usd, fresh.findings) == (
        "running",
        None,
        0,
        0.0,
        0,
    )


# --- Operator views ------------------------------------------------------------------------------


async def _review(
    store: Store, platform: str, repo: str, number: int = 1, **changes: object
) -> ReviewRecord:
    review = await store.start_review(ReviewStart(platform, repo, number, "a" * 40, "full"))
    if changes:
        await store.update_review(review.id, **changes)
    return review


async def test_output_per_call_of_a_models_newest_reviews(store: Store) -> None:
    """What a review reserves for an answer: output tokens per call of the newest reviews by
    its model that made calls (issue 20: two columns, not whole records)."""
    made = [
        ("openai/gpt-4o", 2, 300),
        ("anthropic/claude", 1, 50),
        ("openai/gpt-4o", 0, 0),  # skipped, or cached: no calls
        ("openai/gpt-4o", 3, 100),
    ]
    for n, (model, calls, tokens) in enumerate(made, start=1):
        review = await store.start_review(ReviewStart("github", "o/r", n, f"{n}" * 40, "full"))
        await store.update_review(review.id, model=model, calls=calls, output_tokens=tokens)
    assert await store.output_per_call("openai/gpt-4o") == [33, 150]
    assert await store.output_per_call("openai/gpt-4o", limit=1) == [33]
    assert await store.output_per_call("anthropic/claude") == [50]
    assert await store.output_per_call("openai/gpt-5") == []


async def test_find_reviews_pages_newest_first_with_filters(store: Store, clock: FakeClock) -> None:
    old = await _review(store, "github", "o/a", outcome="success")
    clock.advance(100)
    since = clock.now
    b = await _review(store, "github", "o/a", outcome="failure")
    c = await _review(store, "gitlab", "g/b", outcome="success")
    d = await _review(store, "github", "o/a", outcome="success")
    assert [r.id for r in await store.find_reviews(ReviewQuery())] == [d.id, c.id, b.id, old.id]
    assert [r.id for r in await store.find_reviews(ReviewQuery(limit=2))] == [d.id, c.id]
    page = await store.find_reviews(ReviewQuery(before_id=c.id, limit=2))
    assert [r.id for r in page] == [b.id, old.id]
    by_repo = ReviewQuery(platform="github", repo="o/a", outcome="success")
    assert [r.id for r in await store.find_reviews(by_repo)] == [d.id, old.id]
    recent = ReviewQuery(outcome="success", since=since)
    assert [r.id for r in await store.find_reviews(recent)] == [d.id, c.id]


async def test_review_activity_sums_a_period_per_utc_day(store: Store, clock: FakeClock) -> None:
    day = int(clock.now // 86400)
    before = await _review(store, "github", "o/a", outcome="success", calls=9)
    await store.record_findings(before.id, "github", "o/a", 1, [_finding("old", severity="nit")])
    await store.record_usage(UsageRecord("review", 1000, 100, 9.0))
    clock.advance(60)
    since = clock.now
    first = await _review(
        store, "github", "o/a", outcome="success", state="done", calls=3, cached_calls=1,
        duration_seconds=4.0,
    )  # fmt: skip
    await store.record_findings(
        first.id, "github", "o/a", 1, [_finding("f1"), _finding("f2", severity="minor")]
    )
    await store.record_usage(UsageRecord("review", 100, 10, 0.1))
    clock.advance(86400)
    second = await _review(store, "github", "o/b", calls=2)  # not finished
    await store.record_findings(second.id, "github", "o/b", 1, [_finding("f3")])
    await _review(store, "gitlab", "g/c", outcome="failure", state="done", duration_seconds=2.0)
    await store.record_usage(UsageRecord("followup", 200, 20, 0.2))
    activity = await store.review_activity(since)
    first_day = int(since // 86400)
    assert first_day in (day, day + 1)
    assert [(d.day, d.reviews, d.input_tokens, d.output_tokens) for d in activity.days] == [
        (first_day, 1, 100, 10),
        (first_day + 1, 2, 200, 20),
    ]
    assert [d.cost_usd for d in activity.days] == [pytest.approx(0.1), pytest.approx(0.2)]
    assert activity.outcomes == {"success": 1, "unfinished": 1, "failure": 1}
    assert (activity.calls, activity.cached_calls) == (5, 1)
    assert activity.findings_by_severity == {"major": 2, "minor": 1}
    assert activity.durations == (2.0, 4.0)
    empty = await store.review_activity(clock.now + 1)
    assert (empty.days, empty.outcomes, empty.calls, empty.durations) == ((), {}, 0, ())


async def test_repo_activity_sums_each_repository_most_recent_first(
    store: Store, clock: FakeClock
) -> None:
    assert await store.repo_activity() == []
    await _review(store, "github", "o/a", cost_usd=0.25, findings=1)
    clock.advance(10)
    await _review(store, "github", "o/a", number=2, cost_usd=0.5, findings=2)
    clock.advance(10)
    await _review(store, "gitlab", "g/c")
    await _review(store, "github", "o/b", findings=4)
    activity = await store.repo_activity()
    assert [(a.platform, a.repo, a.reviews, a.findings) for a in activity] == [
        ("github", "o/b", 1, 4),
        ("gitlab", "g/c", 1, 0),
        ("github", "o/a", 2, 3),
    ]
    assert activity[2].cost_usd == pytest.approx(0.75)
    assert activity[2].last_review_at == clock.now - 10


async def test_a_utc_day_ends_at_midnight_exactly(store: Store, clock: FakeClock) -> None:
    midnight = (int(clock.now // 86400) + 1) * 86400.0
    clock.now = midnight - 0.25  # late on the first day: must not round up into the next
    await _review(store, "github", "o/a")
    await store.record_usage(UsageRecord("review", 1, 1, 0.5))
    clock.now = midnight
    await _review(store, "github", "o/a")
    await _review(store, "github", "o/a")
    activity = await store.review_activity(midnight - 86400)
    first = int(midnight // 86400) - 1
    assert [(d.day, d.reviews, d.cost_usd) for d in activity.days] == [
        (first, 1, 0.5),
        (first + 1, 2, 0.0),
    ]
    # `since` is inclusive, to the second.
    assert (await store.review_activity(midnight)).outcomes == {"unfinished": 2}
    assert len(await store.find_reviews(ReviewQuery(since=midnight))) == 2


async def test_a_late_renewal_and_a_takeover_never_both_win(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    """A worker renews leases that just expired while other workers sweep and claim."""
    total = 20
    for i in range(total):
        await store.enqueue(_job(payload=str(i)))
    held = await store.claim("slow", limit=total, lease_seconds=10)
    clock.advance(11)
    others = [await backend.open() for _ in range(3)]
    renewals, claims = await asyncio.gather(
        asyncio.gather(*(store.renew_leases("slow", [job.id], 10) for job in held)),
        asyncio.gather(
            *(s.claim(f"w{i}", limit=3, lease_seconds=10) for i, s in enumerate(others * 3))
        ),
    )
    renewed = {job_id for kept in renewals for job_id in kept}
    taken = {job.id for jobs in claims for job in jobs}
    assert not renewed & taken  # never both: the sweep leaves a renewed lease alone
    for job_id in renewed:
        job = await store.get_job(job_id)
        assert job is not None and (job.state, job.worker_id) == ("running", "slow")
    for job_id in taken:
        job = await store.get_job(job_id)
        assert job is not None and job.worker_id != "slow" and job.attempts == 2


async def test_a_worker_does_not_take_back_its_own_job_after_a_late_heartbeat(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue(_job())
    (job,) = await store.claim("busy-worker", limit=1, lease_seconds=10)
    clock.advance(11)  # its heartbeat was late: the lease ran out while the job still runs
    assert await store.claim("busy-worker", limit=1, lease_seconds=10, holding=[job.id]) == []
    (taken,) = await store.claim("another-worker", limit=1, lease_seconds=10)
    assert taken.id == job.id and taken.attempts == 2


async def test_a_worker_takes_back_its_own_expired_job_that_it_no_longer_holds(
    store: Store, clock: FakeClock
) -> None:
    """Its run ended without an outcome recorded (the store was down), or the claim's answer
    was lost: nobody else may be running, so the job must not wait for a restart."""
    await store.enqueue(_job(max_attempts=2))
    await store.enqueue(_job(max_attempts=1))
    first, last = await store.claim("w", limit=2, lease_seconds=10)
    clock.advance(11)
    (again,) = await store.claim("w", limit=2, lease_seconds=10)
    assert (again.id, again.attempts, again.worker_id) == (first.id, 2, "w")
    assert again.last_error is not None and "lease expired" in again.last_error
    dead = await store.get_job(last.id)  # that was its last attempt
    assert dead is not None and (dead.state, dead.worker_id) == ("dead", None)


async def test_a_job_held_past_its_lease_still_keeps_its_key(
    store: Store, clock: FakeClock
) -> None:
    """A worker whose renewals failed still runs (or is recording) its job: a newer job of
    the same key waits, even for the worker itself."""
    key = "review:github:o/r#7"
    await store.enqueue(_job(key=key, payload="head-1"))
    (held,) = await store.claim("w", limit=1, lease_seconds=10)
    await store.enqueue(_job(key=key, payload="head-2"))
    clock.advance(11)
    assert await store.claim("w", limit=5, lease_seconds=10, holding=[held.id]) == []
    assert await store.renew_leases("w", [held.id], 10) == [held.id]  # the store is back
    assert await store.complete(held.id, "w")
    (newer,) = await store.claim("w", limit=5, lease_seconds=10, holding=[])
    assert newer.payload == "head-2"


# --- Recovery: background passes, watermarks, redeliveries, repositories seen -----------------


async def test_one_holder_runs_a_pass_and_its_lease_expires(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    other = await backend.open()
    never = clock.now  # no run finished before now: a pass that never ran is due
    assert await store.acquire_pass("redelivery", "a", lease_seconds=60, last_finished_before=never)
    assert not await other.acquire_pass(
        "redelivery", "b", lease_seconds=60, last_finished_before=never
    )
    assert not await other.renew_pass("redelivery", "b", lease_seconds=60)
    clock.advance(30)
    assert await store.renew_pass("redelivery", "a", lease_seconds=60)  # until now + 60
    clock.advance(59)
    assert not await other.acquire_pass(
        "redelivery", "b", lease_seconds=60, last_finished_before=clock.now
    )
    clock.advance(2)  # "a" died: its lease ran out
    assert await other.acquire_pass(
        "redelivery", "b", lease_seconds=60, last_finished_before=clock.now
    )
    assert not await store.renew_pass("redelivery", "a", lease_seconds=60)
    assert not await store.finish_pass("redelivery", "a", summary={"requested": 9}, added=9)
    (run,) = await store.pass_runs()
    assert (run.name, run.holder, run.total, run.finished_at) == ("redelivery", "b", 0, None)


async def test_a_finished_pass_is_not_due_again_until_its_interval_passed(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    other = await backend.open()
    assert await store.acquire_pass("reconcile", "a", lease_seconds=60, last_finished_before=0)
    started = clock.now
    clock.advance(5)
    assert await store.finish_pass("reconcile", "a", summary={"scheduled": 2}, added=2)
    finished = clock.now
    # Another process wakes up at once: the pass ran less than an interval (100 s) ago.
    clock.advance(1)
    assert not await other.acquire_pass(
        "reconcile", "b", lease_seconds=60, last_finished_before=clock.now - 100
    )
    clock.advance(100)
    assert await other.acquire_pass(
        "reconcile", "b", lease_seconds=60, last_finished_before=clock.now - 100
    )
    assert await other.finish_pass("reconcile", "b", summary={"scheduled": 3}, added=3)
    (run,) = await store.pass_runs()
    assert run.holder is None and run.lease_until is None
    assert run.total == 5 and run.summary == {"scheduled": 3}
    assert run.started_at is not None and run.started_at > started
    assert run.finished_at is not None and run.finished_at > finished


async def test_a_released_pass_is_free_and_still_due(store: Store, backend: Backend) -> None:
    other = await backend.open()
    assert await store.acquire_pass("reconcile", "a", lease_seconds=600, last_finished_before=0)
    await store.release_pass("reconcile", "b")  # not the holder: nothing happens
    assert not await other.acquire_pass("reconcile", "b", lease_seconds=60, last_finished_before=0)
    await store.release_pass("reconcile", "a")
    assert await other.acquire_pass("reconcile", "b", lease_seconds=60, last_finished_before=0)


async def test_two_processes_racing_for_a_pass_one_wins(store: Store, backend: Backend) -> None:
    others = [await backend.open() for _ in range(3)]
    won = await asyncio.gather(
        *(
            s.acquire_pass("redelivery", f"p{i}", lease_seconds=60, last_finished_before=0)
            for i, s in enumerate([store, *others])
        )
    )
    assert sorted(won) == [False, False, False, True]


async def test_watermarks(store: Store) -> None:
    assert await store.get_watermark("redelivery:github:app") is None
    await store.set_watermark("redelivery:github:app", "1700000000.5")
    await store.set_watermark("reconcile:gitlab:acme/shop", "12")
    await store.set_watermark("redelivery:github:app", "1700000100.5")
    assert await store.get_watermark("redelivery:github:app") == "1700000100.5"
    assert await store.get_watermark("reconcile:gitlab:acme/shop") == "12"


async def test_seen_deliveries_answers_for_many_at_once(store: Store) -> None:
    for delivery in ("g-1", "g-3"):
        await store.accept_delivery(Delivery("github", delivery, "pull_request.opened"), _job())
    await store.accept_delivery(Delivery("gitlab", "g-2", "pull_request.opened"), _job())
    many = [f"g-{i}" for i in range(1200)]  # more than one IN (…) takes
    assert await store.seen_deliveries("github", many) == {"g-1", "g-3"}
    assert await store.seen_deliveries("gitlab", ["g-1", "g-2"]) == {"g-2"}
    assert await store.seen_deliveries("github", []) == set()


async def _claim(store: Store, attempt: int, *, guid: str = "guid-1", most: int = 3) -> bool:
    return await store.claim_redelivery(
        "github", guid, attempt, source="app", max_attempts=most, stale_after=600
    )


async def test_a_failed_attempt_is_asked_for_once(store: Store, backend: Backend) -> None:
    other = await backend.open()
    assert await _claim(store, 100)
    assert not await _claim(store, 100)
    assert not await other.claim_redelivery(
        "github", "guid-1", 100, source="app", max_attempts=3, stale_after=600
    )
    await store.settle_redelivery("github", "guid-1", 100, "accepted")
    assert not await _claim(store, 100)
    assert not await _claim(store, 99)  # an older attempt than the one asked about
    (record,) = await store.redelivery_records("github")
    assert (record.guid, record.attempt_id, record.attempts, record.state) == (
        "guid-1",
        100,
        1,
        "accepted",
    )
    assert await store.redelivery_records("gitlab") == []


async def test_a_redelivery_that_failed_too_is_asked_for_up_to_the_limit(store: Store) -> None:
    assert await _claim(store, 100)
    await store.settle_redelivery("github", "guid-1", 100, "accepted")
    assert await _claim(store, 150)  # the redelivery (a new attempt) failed as well
    assert await _claim(store, 180)
    assert not await _claim(store, 200)  # three asked: enough
    (record,) = await store.redelivery_records()
    assert (record.attempt_id, record.attempts, record.state) == (180, 3, "requested")
    assert await _claim(store, 100, guid="guid-2", most=1)
    assert not await _claim(store, 101, guid="guid-2", most=1)


async def test_a_refused_redelivery_is_never_asked_for_again(store: Store) -> None:
    assert await _claim(store, 100)
    await store.settle_redelivery("github", "guid-1", 100, "refused", error="422 too old")
    assert not await _claim(store, 101)
    (record,) = await store.redelivery_records()
    assert record.state == "refused" and record.error == "422 too old"


async def test_a_request_never_sent_or_never_answered_may_be_made_again(
    store: Store, clock: FakeClock
) -> None:
    assert await _claim(store, 100)
    await store.settle_redelivery("github", "guid-1", 100, "not_sent", error="rate limited")
    assert await _claim(store, 100)  # at once: the request was never made
    (record,) = await store.redelivery_records()
    assert record.attempts == 1
    # Its answer was lost (a timeout): not again before `stale_after`, then once more.
    clock.advance(599)
    assert not await _claim(store, 100)
    clock.advance(2)
    assert await _claim(store, 100)
    assert not await _claim(store, 100)


async def test_racing_claims_of_one_redelivery_one_wins(store: Store, backend: Backend) -> None:
    others = [await backend.open() for _ in range(3)]
    first = await asyncio.gather(*(_claim(s, 100) for s in [store, *others]))
    assert sorted(first) == [False, False, False, True]
    again = await asyncio.gather(*(_claim(s, 150) for s in [store, *others]))
    assert sorted(again) == [False, False, False, True]


async def test_old_redelivery_requests_are_purged(store: Store, clock: FakeClock) -> None:
    assert await _claim(store, 1, guid="old")
    clock.advance(100)
    assert await _claim(store, 2, guid="new")
    assert await store.purge_redeliveries(max_age=50) == 1
    assert [r.guid for r in await store.redelivery_records()] == ["new"]


async def test_repositories_seen_are_remembered(store: Store, clock: FakeClock) -> None:
    first = clock.now
    await store.note_repositories("github", ["octo/b", "octo/a"], installation_id=7)
    await store.note_repositories("gitlab", ["acme/shop"])
    clock.advance(10)
    await store.note_repositories("github", ["octo/a"])  # no installation: the known one stays
    await store.note_repositories("github", ["octo/c"], installation_id=8)
    github = await store.known_repositories("github")
    assert [(r.repo, r.installation_id) for r in github] == [
        ("octo/a", 7),
        ("octo/b", 7),
        ("octo/c", 8),
    ]
    a = github[0]
    assert a.first_seen_at == first and a.last_seen_at == first + 10
    await store.forget_repository("github", "octo/b")
    assert [r.repo for r in await store.known_repositories("github")] == ["octo/a", "octo/c"]
    assert [(r.platform, r.repo) for r in await store.known_repositories()] == [
        ("github", "octo/a"),
        ("github", "octo/c"),
        ("gitlab", "acme/shop"),
    ]


async def test_a_repository_noted_lately_is_noted_again_only_after_a_while(
    store: Store, clock: FakeClock
) -> None:
    """Every event's dispatch notes its repository: within NOTE_AGAIN_SECONDS of the last note
    nothing is written (its `last_seen_at` lags by at most that), a new installation is noted
    at once, and a repository forgotten (uninstalled) is noted again by its next event."""
    first = clock.now
    await store.note_repositories("github", ["octo/a"], installation_id=7)
    clock.advance(NOTE_AGAIN_SECONDS / 2)
    await store.note_repositories("github", ["octo/a"], installation_id=7)
    (a,) = await store.known_repositories("github")
    assert a.last_seen_at == first
    clock.advance(NOTE_AGAIN_SECONDS)
    await store.note_repositories("github", ["octo/a"], installation_id=7)
    (a,) = await store.known_repositories("github")
    assert a.last_seen_at == first + 1.5 * NOTE_AGAIN_SECONDS
    await store.note_repositories("github", ["octo/a"], installation_id=9)
    assert [r.installation_id for r in await store.known_repositories("github")] == [9]
    await store.forget_repository("github", "octo/a")
    await store.note_repositories("github", ["octo/a"], installation_id=9)
    assert [r.repo for r in await store.known_repositories("github")] == ["octo/a"]


async def test_open_job_keys(store: Store) -> None:
    await store.enqueue(_job(key="review:github:o/r#1"))
    await store.enqueue(_job(key="review:github:o/r#2"))
    await store.enqueue(_job(key="review:github:o/r#3"))
    (running,) = await store.claim("w", limit=1, lease_seconds=30)
    await store.cancel_queued("review:github:o/r#3", "closed")
    keys = ["review:github:o/r#1", "review:github:o/r#2", "review:github:o/r#3", "x"]
    assert running.key == "review:github:o/r#1"
    assert await store.open_job_keys(keys) == {"review:github:o/r#1", "review:github:o/r#2"}
    assert await store.complete(running.id, "w")
    assert await store.open_job_keys(keys) == {"review:github:o/r#2"}


async def test_deliveries_arriving_together_are_each_answered_for_themselves(
    store: Store,
) -> None:
    """Intake writes the deliveries that arrive together in one go (group commit): each still
    gets its own answer, a copy inside the same batch is a duplicate, the same id on two
    platforms is two deliveries, and a keyed job still coalesces."""
    await store.accept_delivery(Delivery("github", "old", "x"), _job())
    sent = [
        (Delivery("github", "a", "x"), _job(payload='{"n": 1}')),
        (Delivery("github", "old", "x"), _job()),  # stored before
        (Delivery("github", "b", "x"), _job(payload='{"n": 2}')),
        (Delivery("github", "a", "x"), _job()),  # a copy in the same batch
        (Delivery("gitlab", "a", "x"), _job(payload='{"n": 3}')),  # another platform's "a"
        (Delivery("github", "c", "x"), _job(key="pr-1", payload='{"n": 4}')),
        (Delivery("github", "d", "x"), _job(key="pr-1", payload='{"n": 5}')),
    ]
    results = await asyncio.gather(*(store.accept_delivery(d, j) for d, j in sent))
    duplicate = [r.duplicate for r in results]
    assert sorted([duplicate[0], duplicate[3]]) == [False, True]  # one copy of "a" is stored
    assert duplicate[1] and not any(duplicate[i] for i in (2, 4, 5, 6))
    assert all((r.job_id is None) == r.duplicate for r in results)
    jobs = {j.id: j for j in await store.list_jobs(limit=100)}
    assert len(jobs) == 6  # "old", one "a", "b", gitlab's "a", "c" and "d"
    assert jobs[results[2].job_id or 0].payload == '{"n": 2}'
    assert jobs[results[4].job_id or 0].payload == '{"n": 3}'
    keyed = sorted(jobs[r.job_id or 0].state for r in results[5:])
    assert keyed == ["cancelled", "queued"]  # one replaced the other, whichever came first
    for platform, delivery_id in [("github", "a"), ("github", "b"), ("gitlab", "a")]:
        assert await store.seen_delivery(platform, delivery_id)


async def test_an_event_label_longer_than_its_column_does_not_fail_its_batch(
    store: Store,
) -> None:
    """A platform's `object_kind` and `action` are not bounded; the store keeps the first 100
    characters of the label, and the delivery written with it is stored too."""
    long = Delivery("gitlab", "long-label", "merge_request." + "x" * 300)
    plain = Delivery("gitlab", "plain", "merge_request.open")
    results = await asyncio.gather(
        store.accept_delivery(long, _job()), store.accept_delivery(plain, _job())
    )
    assert all(r.job_id is not None and not r.duplicate for r in results)
    assert await store.seen_delivery("gitlab", "long-label")
    assert await store.seen_delivery("gitlab", "plain")
