"""How a review job ends when the platform will not take it: a rate limit longer than Arbiter
waits in a request defers the job (no attempt used) until the platform's time; a review that
ends without posting leaves the final `error` status with a plain reason, never "pending".

One process: the runtime and its worker, the fake GitHub and the fake OpenAI. The fake, the
store and the review share a clock that runs with real time and that the test moves forward,
so a deferral is read from the queue, never waited for.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from bot.events import from_github
from bot.review.request import REVIEW_JOB
from bot.runtime import Runtime
from bot.store import Job, Store, StoreUnavailable
from bot.store.base import FindingRecord, PullRequestState, ReviewRecord, ReviewStart, UsageRecord
from bot.store.sql import SQLStore
from config.settings import load_settings
from tests.conftest import fixture_json
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt, noting

PAT = "ghp_" + "o" * 36
REPO = "Codertocat/Hello-World"  # the repository of the shared fixtures
H1, BASE = "a1" * 20, "d4" * 20
CODE = "def f(x):\n    return eval(x)\n"
REVIEWS = f"/repos/{REPO}/pulls/2/reviews"

MakeRuntime = Callable[..., Any]


class Clock:
    """Real time, moved forward by hand: waits within a request still pass as they do."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def github(clock: Clock) -> AsyncIterator[FakeGitHub]:
    key = AppKey.generate()
    async with FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT, clock=clock) as fake:
        fake.add_repo(REPO, installation_id=1)
        fake.add_pull(REPO, 2, files=[PullFile.added("a.py", CODE)], head_sha=H1, base_sha=BASE)
        yield fake


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        fake.respond(findings_in_prompt([finding("a.py", 2, severity="critical")]))
        yield fake


@pytest.fixture
async def make_runtime(
    tmp_path: Path, github: FakeGitHub, openai: FakeOpenAI, clock: Clock
) -> AsyncIterator[MakeRuntime]:
    made: list[Runtime] = []

    async def make(*, store: Store | None = None, **overrides: Any) -> Runtime:
        settings = load_settings(
            **{
                "database_url": f"sqlite+aiosqlite:///{tmp_path}/outcomes.db",
                "github_token": PAT,
                "github_webhook_secret": "s",
                "github_base_url": github.url,
                "llm_max_retries": 0,
                "worker_retry_backoff_seconds": 0,
                **openai.settings(),
                **overrides,
            }
        )
        runtime = Runtime(settings, store=store, clock=clock)
        await runtime.start()
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()


async def opened(runtime: Runtime) -> None:
    payload = copy.deepcopy(fixture_json("github/webhooks/pull_request/opened.payload.json"))
    event = from_github("pull_request", str(uuid.uuid4()), payload)
    result = await runtime.router.dispatch(runtime.context(event))
    assert result.ok, result.failed


async def work(runtime: Runtime) -> None:
    worker = runtime.make_worker()
    async with asyncio.timeout(60):
        await worker.run_until_idle()


async def review_job(runtime: Runtime) -> Job:
    (job,) = await runtime.store.list_jobs(kind=REVIEW_JOB)
    return job


def statuses(github: FakeGitHub) -> list[tuple[str, str]]:
    return [(s["state"], s["description"]) for s in github.statuses(REPO, H1)]


# --- Rate limits longer than a request waits: the job is deferred -------------------------------


async def test_a_secondary_rate_limit_of_two_minutes_defers_the_review_then_it_posts(
    make_runtime: MakeRuntime, github: FakeGitHub, clock: Clock
) -> None:
    runtime = await make_runtime()  # ARBITER_GITHUB_RATE_LIMIT_MAX_WAIT: 60 s
    await opened(runtime)
    github.secondary_rate_limit(retry_after=120, method="POST", path=REVIEWS)

    await work(runtime)

    job = await review_job(runtime)
    assert (job.state, job.attempts) == ("queued", 0)  # deferred: no attempt used
    assert 120 <= job.run_at - clock() <= 130
    assert job.last_error is not None and "secondary rate limit" in job.last_error
    assert github.reviews(REPO, 2) == []
    assert [s for s, _ in statuses(github)] == ["pending"]  # not an error: it resumes

    clock.advance(131)  # GitHub's two minutes, and the job's turn
    await work(runtime)

    job = await review_job(runtime)
    assert (job.state, job.attempts) == ("done", 1)
    assert len(github.reviews(REPO, 2)) == 1
    assert statuses(github)[-1][0] == "success"


async def test_a_spent_hourly_limit_defers_the_review_until_its_reset(
    make_runtime: MakeRuntime, github: FakeGitHub, clock: Clock
) -> None:
    runtime = await make_runtime()
    await opened(runtime)
    github.primary_rate_limit(reset_in=600)  # x-ratelimit-remaining: 0, reset in 10 minutes

    await work(runtime)

    job = await review_job(runtime)
    assert (job.state, job.attempts) == ("queued", 0)
    assert 599 <= job.run_at - clock() <= 612
    assert job.last_error is not None and "primary rate limit" in job.last_error


async def test_a_rate_limit_within_the_bound_is_waited_out_in_the_request(
    make_runtime: MakeRuntime, github: FakeGitHub
) -> None:
    runtime = await make_runtime()
    await opened(runtime)
    github.secondary_rate_limit(retry_after=1, method="POST", path=REVIEWS)

    await work(runtime)

    job = await review_job(runtime)
    assert (job.state, job.attempts) == ("done", 1)
    assert len(github.reviews(REPO, 2)) == 1


# --- A review that ends without posting: the final status is `error` --------------------------


async def test_a_review_post_refused_every_time_ends_in_error_not_pending(
    make_runtime: MakeRuntime, github: FakeGitHub
) -> None:
    runtime = await make_runtime(worker_retry_attempts=3)
    await opened(runtime)
    github.fail("POST", REVIEWS, 422, times=5, body={"message": "Validation Failed"})

    await work(runtime)

    job = await review_job(runtime)
    assert (job.state, job.attempts) == ("dead", 4)
    # Each attempt said "reviewing"; the attempts that were retried left it so; the last one
    # said why it gave up.
    assert [s for s, _ in statuses(github)] == ["pending"] * 4 + ["error"]
    description = statuses(github)[-1][1]
    assert description.startswith("Arbiter could not post its review:")
    assert "422" in description and "Validation Failed" in description
    (record,) = await runtime.store.list_reviews()
    assert (record.state, record.outcome) == ("failed", "error")
    assert record.reason is not None and "422" in record.reason
    assert github.reviews(REPO, 2) == []


async def test_a_review_that_fails_then_succeeds_shows_only_success(
    make_runtime: MakeRuntime, github: FakeGitHub
) -> None:
    runtime = await make_runtime(worker_retry_attempts=3)
    await opened(runtime)
    github.fail("POST", REVIEWS, 422, times=2, body={"message": "Validation Failed"})

    await work(runtime)

    assert [s for s, _ in statuses(github)] == ["pending", "pending", "pending", "success"]
    (record,) = await runtime.store.list_reviews()
    assert (record.state, record.outcome) == ("done", "success")


async def test_a_review_that_runs_out_of_time_on_its_last_attempt_says_so(
    make_runtime: MakeRuntime, github: FakeGitHub
) -> None:
    runtime = await make_runtime(worker_retry_attempts=0, worker_job_timeout=5)
    await opened(runtime)
    github.delay("POST", REVIEWS, 30)  # GitHub hangs past the job's time

    await work(runtime)

    job = await review_job(runtime)
    assert job.state == "dead"
    state, description = statuses(github)[-1]
    assert state == "error"
    assert "ARBITER_WORKER_JOB_TIMEOUT" in description
    (record,) = await runtime.store.list_reviews()
    assert (record.state, record.outcome) == ("failed", "error")


class BrokenStore(SQLStore):
    """The database goes away after the review is posted: at `broken`, a write fails."""

    def __init__(
        self, url: str, broken: str, *, clock: Clock, after: asyncio.Event | None = None
    ) -> None:
        super().__init__(url, clock=clock)
        self.broken = broken
        self.after = after  # the write fails once this is set (at once without it)

    async def start_review(self, start: ReviewStart) -> ReviewRecord:
        if self.broken == "start":
            if self.after is not None:
                await self.after.wait()
            raise StoreUnavailable("the database went away")
        return await super().start_review(start)

    async def record_findings(
        self,
        review_id: int,
        platform: str,
        repo: str,
        number: int,
        records: Iterable[FindingRecord],
    ) -> int:
        if self.broken == "findings":
            raise StoreUnavailable("the database went away")
        return await super().record_findings(review_id, platform, repo, number, records)

    async def record_usage(self, record: UsageRecord) -> None:
        if self.broken == "usage":
            raise StoreUnavailable("the database went away")
        await super().record_usage(record)

    async def update_pr_state(
        self, platform: str, repo: str, number: int, **changes: Any
    ) -> PullRequestState:
        if self.broken == "pr state" and "last_reviewed_head" in changes:
            raise StoreUnavailable("the database went away")
        return await super().update_pr_state(platform, repo, number, **changes)


async def test_a_review_posted_but_not_recorded_says_so_on_its_last_attempt(
    make_runtime: MakeRuntime, github: FakeGitHub, clock: Clock, tmp_path: Path
) -> None:
    store = BrokenStore(f"sqlite+aiosqlite:///{tmp_path}/broken.db", "findings", clock=clock)
    runtime = await make_runtime(store=store, worker_retry_attempts=0)
    await opened(runtime)

    await work(runtime)

    assert len(github.reviews(REPO, 2)) == 1  # posted, then the store failed
    state, description = statuses(github)[-1]
    assert state == "error"
    assert description.startswith("Arbiter posted its review but could not record it:")
    assert "StoreUnavailable" in description


async def test_what_the_model_cost_unbooked_on_the_last_attempt_ends_in_error(
    make_runtime: MakeRuntime, github: FakeGitHub, clock: Clock, tmp_path: Path
) -> None:
    """The cost is booked beside the summary and the final status: when the store refuses it,
    the review is on the pull request, and the last attempt replaces the final status with the
    error (the spend is not silently dropped) and records the review as failed."""
    store = BrokenStore(f"sqlite+aiosqlite:///{tmp_path}/broken.db", "usage", clock=clock)
    runtime = await make_runtime(store=store, worker_retry_attempts=0)
    await opened(runtime)

    await work(runtime)

    assert len(github.reviews(REPO, 2)) == 1 and len(github.issue_comments(REPO, 2)) == 1
    state, description = statuses(github)[-1]
    assert state == "error"
    assert description.startswith("Arbiter posted its review but could not record it:")
    (record,) = await store.list_reviews()
    assert (record.state, record.outcome) == ("failed", "error")


async def test_a_review_whose_record_cannot_be_written_asks_no_model(
    make_runtime: MakeRuntime, github: FakeGitHub, openai: FakeOpenAI, clock: Clock, tmp_path: Path
) -> None:
    """The review's record is written beside the first steps toward the model: when the store
    refuses it before the model is asked, nothing is asked, nothing spent, and the pull request
    says the review failed."""
    github.delay("GET", f"/repos/{REPO}/pulls/2/files", 0.5)  # the prompt waits for these
    store = BrokenStore(f"sqlite+aiosqlite:///{tmp_path}/broken.db", "start", clock=clock)
    runtime = await make_runtime(store=store, worker_retry_attempts=0)
    await opened(runtime)

    await work(runtime)

    assert openai.requests == []
    assert (await review_job(runtime)).state == "dead"
    state, description = statuses(github)[-1]
    assert state == "error" and "StoreUnavailable" in description
    assert await runtime.store.spent_since(0) == 0


async def test_a_model_answer_paid_for_is_booked_when_the_record_fails_after_it(
    make_runtime: MakeRuntime, github: FakeGitHub, openai: FakeOpenAI, clock: Clock, tmp_path: Path
) -> None:
    """The store fails once the model has been asked: the answer is awaited, and what it cost
    counts toward the daily budget though the review has no record to book it under."""
    asked = asyncio.Event()
    openai.respond(noting(asked, findings_in_prompt([finding("a.py", 2, severity="critical")])))
    url = f"sqlite+aiosqlite:///{tmp_path}/broken.db"
    store = BrokenStore(url, "start", clock=clock, after=asked)
    runtime = await make_runtime(store=store, worker_retry_attempts=0)
    await opened(runtime)

    await work(runtime)

    assert len(openai.requests) == 1
    assert (await review_job(runtime)).state == "dead"
    assert statuses(github)[-1][0] == "error"
    assert await runtime.store.spent_since(0) > 0
    booked = await store.run_sql(
        lambda conn: conn.exec_driver_sql("SELECT review_id FROM usage").scalars().all()
    )
    assert booked == [None]  # no record to book it under


async def test_a_store_failure_after_the_final_status_leaves_the_outcome_shown(
    make_runtime: MakeRuntime, github: FakeGitHub, clock: Clock, tmp_path: Path
) -> None:
    store = BrokenStore(f"sqlite+aiosqlite:///{tmp_path}/broken.db", "pr state", clock=clock)
    runtime = await make_runtime(store=store, worker_retry_attempts=0)
    await opened(runtime)

    await work(runtime)

    assert (await review_job(runtime)).state == "dead"
    # The pull request shows the review's outcome; Arbiter's bookkeeping failure is its own.
    assert [s for s, _ in statuses(github)] == ["pending", "success"]
    (record,) = await runtime.store.list_reviews()
    assert (record.state, record.outcome) == ("failed", "error")
    assert record.reason is not None and "StoreUnavailable" in record.reason


async def test_a_retry_after_the_findings_were_recorded_reports_them_as_its_own(
    make_runtime: MakeRuntime, github: FakeGitHub, openai: FakeOpenAI
) -> None:
    """The first attempt posts, records its findings, then GitHub refuses the final status:
    the retry (same job, same review record) finds those findings recorded. They are the
    review's own, not an earlier review's: the status and the summary say what the first
    attempt found (before, the retry said "No new findings", the critical one "from earlier
    reviews", and a `fail_on` gate passed)."""
    runtime = await make_runtime(worker_retry_attempts=2)
    await opened(runtime)
    github.fail(
        "POST",
        f"/repos/{REPO}/statuses/{H1}",
        422,
        body={"message": "Validation Failed"},
        if_body=lambda body: body.get("state") != "pending",
    )

    await work(runtime)

    assert len(openai.requests) == 1  # the retry's answer came from the cache
    assert statuses(github)[-1] == ("success", "1 new finding(s): 1 critical")
    (summary,) = github.issue_comments(REPO, 2)
    assert "from earlier reviews" not in summary["body"]
    assert len(github.reviews(REPO, 2)) == 1 and len(github.review_comments(REPO, 2)) == 1
    # The first attempt posted its new review without looking for it; the retry, which took
    # the review back, looked first, found it, and posted nothing.
    assert len(github.requests_to("GET", f"/repos/{REPO}/pulls/2/reviews*")) == 1
    assert len(github.requests_to("POST", f"/repos/{REPO}/pulls/2/reviews")) == 1
    (record,) = await runtime.store.list_reviews()
    assert (record.state, record.findings) == ("done", 1)


async def test_findings_already_on_the_pull_request_are_recorded_though_the_summary_fails(
    make_runtime: MakeRuntime, github: FakeGitHub
) -> None:
    """The review and its inline comment are posted, then GitHub refuses the summary on the
    last attempt: the review ends in error, and the finding on the pull request is recorded as
    posted all the same, so the next review knows it instead of posting it again."""
    runtime = await make_runtime(worker_retry_attempts=0)
    await opened(runtime)
    github.fail(
        "POST", f"/repos/{REPO}/issues/2/comments", 422, body={"message": "Validation Failed"}
    )

    await work(runtime)

    assert len(github.review_comments(REPO, 2)) == 1 and github.issue_comments(REPO, 2) == []
    state, description = statuses(github)[-1]
    assert state == "error" and description.startswith("Arbiter could not post its review:")
    (recorded,) = await runtime.store.findings_for("github", REPO, 2)
    assert (recorded.severity, recorded.posted) == ("critical", True)


async def test_the_final_status_does_not_wait_for_the_summary(
    make_runtime: MakeRuntime, github: FakeGitHub
) -> None:
    """Every platform call after the model made one after another is time the slot waits: the
    final status is set while GitHub is still taking the summary."""
    runtime = await make_runtime()
    await opened(runtime)
    summary_taken = asyncio.Event()
    github.delay("POST", f"/repos/{REPO}/issues/2/comments", 10, until=summary_taken)
    working = asyncio.ensure_future(work(runtime))
    try:
        async with asyncio.timeout(5):
            while not statuses(github) or statuses(github)[-1][0] == "pending":
                await asyncio.sleep(0.01)
        assert statuses(github)[-1][0] == "success"  # the final one (no `fail_on` here)
        assert github.issue_comments(REPO, 2) == []  # the summary is still on its way
    finally:
        summary_taken.set()
        await working
    assert len(github.issue_comments(REPO, 2)) == 1
    (record,) = await runtime.store.list_reviews()
    assert record.state == "done" and record.url


class HeldUsage(SQLStore):
    """A store whose record of what the model cost waits until `allow` is set."""

    def __init__(self, url: str, *, clock: Clock) -> None:
        super().__init__(url, clock=clock)
        self.allow = asyncio.Event()

    async def record_usage(self, record: UsageRecord) -> None:
        await self.allow.wait()
        await super().record_usage(record)


async def test_the_final_status_does_not_wait_for_the_usage_record(
    make_runtime: MakeRuntime, github: FakeGitHub, clock: Clock, tmp_path: Path
) -> None:
    """What the model cost is booked beside the steps after the model, not before them: a
    slow store write holds no slot's review back."""
    store = HeldUsage(f"sqlite+aiosqlite:///{tmp_path}/held.db", clock=clock)
    runtime = await make_runtime(store=store)
    await opened(runtime)
    working = asyncio.ensure_future(work(runtime))
    try:
        async with asyncio.timeout(5):
            while not statuses(github) or statuses(github)[-1][0] == "pending":
                await asyncio.sleep(0.01)
        assert len(github.issue_comments(REPO, 2)) == 1  # the summary too
        assert await store.spent_since(0) == 0  # not booked yet
    finally:
        store.allow.set()
        await working
    assert await store.spent_since(0) > 0
    (record,) = await store.list_reviews()
    assert record.state == "done" and record.cost_usd == await store.spent_since(0)


# --- The repository file's problems are said whatever the review comes to ----------------------


@pytest.mark.parametrize("ends", ["reviewed", "budget spent", "closed"])
async def test_a_bad_arbiter_yml_is_reported_whether_the_review_runs_waits_or_is_skipped(
    make_runtime: MakeRuntime, github: FakeGitHub, ends: str
) -> None:
    github.add_file(REPO, ".arbiter.yml", "profile: loud\n")  # no such profile
    runtime = await make_runtime(**({"daily_budget_usd": 0.5} if ends == "budget spent" else {}))
    if ends == "budget spent":
        await runtime.store.record_usage(UsageRecord("review", 10, 10, 1.0))
    await opened(runtime)
    if ends == "closed":
        github.update_pull(REPO, 2, state="closed")  # closed before its review ran

    await work(runtime)

    comments = [c["body"] for c in github.issue_comments(REPO, 2)]
    assert sum("Arbiter configuration" in body for body in comments) == 1, comments
    job = await review_job(runtime)
    assert job.state == {"reviewed": "done", "budget spent": "queued", "closed": "done"}[ends]
    assert len(github.reviews(REPO, 2)) == (1 if ends == "reviewed" else 0)
