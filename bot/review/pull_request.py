"""Reviewing a pull request on its platform: from a review job to what the PR shows.

One review is idempotent in effect. The review record is tied to its job, so a retried job
finds it again; the review is posted under that record's key, which the platform recognises;
the summary is one comment found again by its marker; the model's answers are cached. A
worker killed anywhere in between leaves, once the job is retried, one review, one summary
and one set of inline comments.

A review never dies silently. A rate limit that asks for longer than a request may wait
(ARBITER_<PLATFORM>_RATE_LIMIT_MAX_WAIT) defers the job until the platform's time, using no
attempt. A review that fails on its last attempt, or runs out of ARBITER_WORKER_JOB_TIMEOUT,
sets the final `error` status with the reason: the pull request is never left "pending".
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from bot.context import Context
from bot.core.budget import seconds_to_next_utc_day, utc_day_start
from bot.core.findings import Finding
from bot.core.render import summary_markdown
from bot.core.review import ReviewResult, prepare_changes
from bot.llm import LLMNotConfigured, ModelPriceUnknown
from bot.review.config_problems import report_config
from bot.review.policy import (
    REVIEWING,
    earlier_counts,
    final_status,
    review_options,
    severity_counts,
    skip_reason,
)
from bot.review.request import ReviewRequest
from bot.store import JobDeferred
from bot.store.base import (
    FindingRecord,
    PullRequestState,
    ReviewRecord,
    ReviewStart,
    UsageRecord,
)
from config.repo import EffectiveConfig
from platforms.base import (
    Changes,
    InlineComment,
    Platform,
    PlatformError,
    PostedReview,
    PullRequest,
    RateLimited,
    SinceNotAncestor,
    StatusState,
)

T = TypeVar("T")
SUMMARY_KEY = "summary"
REPORT_RESERVE = 10.0  # seconds of a job's time kept to report a failure (at most a fifth)


class ReviewFailed(Exception):
    """The model could not review this pull request now; the job is retried."""


async def _no_wait() -> float:
    return 0.0


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Attempt:
    job_id: int | None = None
    last: bool = True  # no retry will follow a failure
    deadline: float | None = None  # event-loop time to stop by, with time left to report
    # Called once the outcome is on the pull request: what is left is bookkeeping, and the
    # worker's slot may take the next job meanwhile.
    settled: Callable[[], None] = _nothing
    # Awaited before the model is asked: a job claimed ahead of a free worker slot waits there
    # for one (bot/worker.py, `slot_needed`); the seconds waited, added to the deadline.
    slot: Callable[[], Awaitable[float]] = _no_wait


def attempt_deadline(now: float, job_timeout: float) -> float:
    """When a job's review stops working, so that a failure is still reported before the
    worker's ARBITER_WORKER_JOB_TIMEOUT cuts the job off."""
    return now + job_timeout - min(REPORT_RESERVE, job_timeout / 5)


@dataclass
class _Progress:
    """How far one attempt got: what reporting its failure needs."""

    pr: PullRequest | None = None
    record: ReviewRecord | None = None
    result: ReviewResult | None = None  # the model's review, once it answered
    stage: str = "review"  # review → post → record → settled (the final status is set)
    started: float = field(default_factory=time.monotonic)


async def review_pull_request(
    ctx: Context, request: ReviewRequest, attempt: Attempt = Attempt()
) -> int | None:
    """Review the pull request's current head: the whole review job. The id of the review it
    recorded (`store.get_review` has the rest); None when it was skipped (and why is logged).

    Raises JobDeferred when the platform's rate limit asks for longer than a request waits.
    Any other failure is raised for the worker to retry; on the last attempt the pull request
    first gets the final `error` status with the reason.
    """
    progress = _Progress()
    deadline = asyncio.timeout_at(attempt.deadline)

    async def take_slot() -> float:
        # Time waiting for a slot is not the review's: its deadline stands still meanwhile.
        if deadline.expired():  # it went off: the review is being stopped, ask nothing
            raise asyncio.CancelledError
        when = deadline.when()
        deadline.reschedule(None)
        waited = await attempt.slot()
        deadline.reschedule(None if when is None else when + waited)
        return waited

    try:
        async with deadline:
            return await _review(ctx, request, replace(attempt, slot=take_slot), progress)
    except RateLimited as exc:
        raise _deferral(ctx, exc) from exc
    except (JobDeferred, ReviewFailed):
        raise  # deferred: it resumes later; the model's failure: already reported
    except Exception as exc:
        if attempt.last and progress.pr is not None:
            reason = _out_of_time(ctx) if deadline.expired() else _plain(exc)
            await _give_up(ctx, progress, reason)
        raise


async def _review(
    ctx: Context, request: ReviewRequest, attempt: Attempt, progress: _Progress
) -> int | None:
    store, platform = ctx.store, ctx.platform
    # Independent steps run at once: a review's time before and after the model call is time
    # its worker slot waits (issue 20).
    # The earlier findings too: the prompt needs them, and they depend on nothing fetched here
    # (read even if the review is then skipped: one indexed read).
    pr_or, state_or, findings_or, _ = await asyncio.gather(
        platform.pull_request(request.number),
        store.pr_state(request.platform, request.repo, request.number),
        store.findings_for(request.platform, request.repo, request.number),
        ctx.prefetch_repo_config(),  # used below if the pull request names the same branch
        return_exceptions=True,
    )
    pr = progress.pr = _settled(pr_or)
    state = _settled(state_or)
    findings = _settled(findings_or)
    loaded = await ctx.repo_config(pr)
    config = loaded.config
    requested = request.requested_by is not None
    reason = _why_not(loaded, pr, state, requested=requested)
    if reason is not None:
        await report_config(ctx, pr, loaded)
        ctx.log.info("review skipped", reason=reason, head=pr.head_sha[:12])
        return None
    try:
        await _wait_for_budget(ctx, pr)
    except JobDeferred:
        await report_config(ctx, pr, loaded)  # the file's problems need no budget
        raise

    full = request.fresh or state.full_requested or not config.auto_review.incremental
    since = None if full else state.last_reviewed_head
    started = progress.started = time.monotonic()
    model_asked = asyncio.Event()  # from here on, stopping the call would not stop its cost

    # The review's record, written beside the steps toward the model (see below).
    starting = asyncio.ensure_future(
        store.start_review(
            ReviewStart(
                platform=request.platform,
                repo=request.repo,
                number=request.number,
                head_sha=pr.head_sha,
                base_sha=pr.base_sha,
                mode="incremental" if since else "full",
                job_id=attempt.job_id,
                delivery_id=request.delivery_id,
            )
        )
    )

    async def ask() -> tuple[Changes, ReviewResult]:
        """The changes and the model's recorded output (the prompt needs both), then the
        model."""
        changes_or, recorded_or = await asyncio.gather(
            _changes(platform, pr, since, ctx),
            _recorded_output(ctx, loaded.model),
            return_exceptions=True,
        )
        changes = _settled(changes_or)
        recorded = _settled(recorded_or)
        # Findings this review's record already holds were recorded by an earlier attempt of
        # this job (it failed or was deferred after recording them): they are this review's
        # own, not earlier ones, or the retry would report them as "earlier" and its status
        # would pass what the first attempt failed. The record is usually written by now.
        own = (await starting).id if findings else None
        known = (
            frozenset()
            if request.fresh
            else frozenset(f.fingerprint for f in findings if f.posted and f.review_id != own)
        )
        options = review_options(loaded, known_fingerprints=known)
        prepared = await prepare_changes(
            ctx.model,
            changes.files,
            replace(options, recorded_output=recorded),
            title=pr.title,
            description=pr.body or "",
        )
        # Claimed ahead of a free slot, the review waits for one here, all it could do first
        # done, its plan's tokens counted included (bot/worker.py). Nothing is asked of the
        # model yet: stopping now costs nothing.
        await attempt.slot()
        model_asked.set()
        return changes, await prepared.execute()

    # A slot waits for every step before the model call and for none during it: the review's
    # record, its pending status and the file's problems are written while the model is asked
    # (the record is awaited first only where the pull request has findings already, beside
    # the files it has to wait for anyway).
    # If one of them fails before the model is asked, it is not asked, and the attempt fails as
    # it did before the call. Once asked, the answer is awaited all the same (a request cut
    # off may still be billed): it is cached for the retry and what it cost is booked. The
    # final status is set only after the pending one.
    asking = asyncio.ensure_future(ask())
    try:
        record_or, pending, reported = await asyncio.gather(
            starting,
            _status(ctx, pr, "pending", REVIEWING),
            report_config(ctx, pr, loaded),  # the file's problems, if any: never fails the review
            return_exceptions=True,
        )
        failed = any(isinstance(o, BaseException) for o in (record_or, pending, reported))
        if failed and not model_asked.is_set():
            asking.cancel()
        (asked_or,) = await asyncio.gather(asking, return_exceptions=True)
    except BaseException:  # the attempt itself was stopped (its time ran out, or shutdown)
        asking.cancel()
        starting.cancel()
        raise
    if isinstance(asked_or, tuple):
        progress.result = asked_or[1]
        if failed:
            # The model answered, and was paid for, yet the attempt fails here: what it cost
            # counts toward the daily budget all the same (the retry reads the cached answer).
            review_id = None if isinstance(record_or, BaseException) else record_or.id
            await _book_usage(ctx, request, asked_or[1], review_id)
    record = progress.record = _settled(record_or)
    _settled(pending)
    _settled(reported)  # a platform error there was logged; anything else fails the attempt
    try:
        changes, result = _settled(asked_or)
    except (ModelPriceUnknown, LLMNotConfigured) as exc:
        # Configuration, not weather: retrying cannot help, so say it and stop.
        await _fail(ctx, pr, record, str(exc), started)
        return record.id
    if since and not changes.incremental:
        await store.update_review(record.id, mode="full")
    earlier = [f for f in findings if f.posted and f.review_id != record.id]
    progress.result = result
    usage = store.record_usage(_usage(request, result, record.id))
    if result.errors and (result.chunks_reviewed == 0 or not attempt.last):
        # The model failed (down, rate-limited, too slow): post nothing half-done; the
        # job is retried, and parked as dead with this reason after its last attempt.
        await usage
        await _fail(ctx, pr, record, result.errors[0], started, result=result)
        raise ReviewFailed(result.errors[0])

    summary = config.review.summary
    earlier_tally = {} if request.fresh else earlier_counts(f.severity for f in earlier)
    progress.stage = "post"
    # What the model cost is recorded whatever posting comes to, beside it and beside the
    # steps after it: the slot waits for no store write of its own.
    booking = asyncio.ensure_future(usage)
    # A review this attempt started has never been posted: nothing to look for first.
    post = _post_review(ctx, pr, result, key=f"review-{record.id}", fresh=not record.resumed)
    (posted_or,) = await asyncio.gather(post, return_exceptions=True)
    if isinstance(posted_or, BaseException):
        (booked_or,) = await asyncio.gather(booking, return_exceptions=True)
        if isinstance(booked_or, Exception):  # the review's own failure is the one raised
            ctx.log.warning("could not record what the model cost", error=_plain(booked_or))
        raise posted_or
    posted = posted_or
    # The summary, the findings recorded and the final status, together: each needs only what
    # the review posted, and every platform call made one after another is time the slot waits
    # (a round trip to GitHub is 50-300 ms; the status is what a merge waits for).
    # Whichever fails, a retry reads the findings recorded as this review's own (see `ask`), and
    # findings already on the pull request are known to the next review even if this one fails.
    # If the summary or the findings' record fails, the attempt fails as if the status had not
    # been set: a retry sets it again, and the last attempt replaces it with the error.
    verdict, description = final_status(result, config.review.fail_on)
    description = ctx.redactor.scrub(description)  # kept, shown by the API: no secret in it
    summary_or, recorded_or, status_or, booked_or = await asyncio.gather(
        _post_summary(ctx, pr, result, earlier_tally if summary else None),
        _record_findings(ctx, pr, record, result, posted),
        _status(ctx, pr, verdict, description),
        booking,
        return_exceptions=True,
    )
    summary_url = _settled(summary_or)
    progress.stage = "record"
    _settled(recorded_or)
    _settled(booked_or)
    progress.stage = "post"  # the final status is a post of its own: "could not post" if refused
    _settled(status_or)
    progress.stage = "settled"  # the pull request shows the outcome: a later failure is ours
    attempt.settled()
    await _record(ctx, pr, record, result, posted, progress, verdict, description, summary_url)
    return record.id


# --- Steps -------------------------------------------------------------------------------


def _settled(outcome: T | BaseException) -> T:
    """One result of steps run together (`gather(..., return_exceptions=True)`): every step ran
    to its end, so a status set meanwhile is never overtaken by the report of a failure; the
    first failure, in the order the steps were written, is raised."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def _wait_for_budget(ctx: Context, pr: PullRequest) -> None:
    """A review starts only while today's spend is under ARBITER_DAILY_BUDGET_USD; each runs
    within its own cap, so the day can end over budget by at most the reviews that were
    running when it ran out."""
    budget = ctx.settings.daily_budget_usd
    remaining = await _budget_left(ctx)
    if remaining is None or remaining > 0:
        return
    message = (
        f"Waiting: today's LLM budget (${budget:.2f}) is spent; the review starts after 00:00 UTC"
    )
    await _status(ctx, pr, "pending", message)
    delay = seconds_to_next_utc_day(ctx.clock()) + random.uniform(1, 60)  # noqa: S311
    ctx.log.warning("daily budget spent; review deferred", budget_usd=budget)
    raise JobDeferred(delay, message)


def _usage(request: ReviewRequest, result: ReviewResult, review_id: int | None) -> UsageRecord:
    return UsageRecord(
        "review",
        result.usage.input_tokens,
        result.usage.output_tokens,
        result.usage.cost_usd,
        platform=request.platform,
        repo=request.repo,
        number=request.number,
        model=result.model,
        review_id=review_id,
    )


async def _book_usage(
    ctx: Context, request: ReviewRequest, result: ReviewResult, review_id: int | None
) -> None:
    """What a review's model calls cost, recorded though the attempt fails before its usual
    place (its record, or its pending status, could not be written)."""
    if not result.usage.cost_usd and not result.usage.input_tokens:
        return  # nothing was spent (every answer came from the cache)
    try:
        await ctx.store.record_usage(_usage(request, result, review_id))
    except Exception as exc:  # the review's own failure is the one reported
        ctx.log.warning("could not record what the model cost", error=_plain(exc))


async def _budget_left(ctx: Context) -> float | None:
    """What is left of today's budget across every repository; None: no daily budget."""
    budget = ctx.settings.daily_budget_usd
    if budget <= 0:
        return None
    spent = await ctx.store.spent_since(utc_day_start(ctx.clock()))
    return max(budget - spent, 0.0)


async def _post_review(
    ctx: Context, pr: PullRequest, result: ReviewResult, *, key: str, fresh: bool
) -> PostedReview | None:
    """The review with its inline comments; what was posted (None: nothing)."""
    if not ctx.settings.post_comments:
        ctx.log.info("dry run: nothing posted (ARBITER_POST_COMMENTS=false)")
        return None
    if not result.comments:
        return None
    body = _review_body(result.findings, pr)
    return await ctx.platform.post_review(pr, body, result.comments, key=key, fresh=fresh)


async def _post_summary(
    ctx: Context, pr: PullRequest, result: ReviewResult, earlier: dict[str, int] | None
) -> str | None:
    """The summary comment, posted or edited (`earlier` None: no summary); its address,
    recorded with the review's outcome."""
    if not ctx.settings.post_comments or earlier is None:
        return None
    facts = replace(result.facts, earlier=earlier) if result.facts else None
    text = summary_markdown(facts) if facts else result.summary_markdown
    return (await ctx.platform.upsert_comment(pr, SUMMARY_KEY, text)).url or None


async def _record_findings(
    ctx: Context,
    pr: PullRequest,
    record: ReviewRecord,
    result: ReviewResult,
    posted: PostedReview | None,
) -> None:
    """The review's findings, each marked posted if it is on the pull request now."""
    dropped = {_where(c) for c, _ in posted.dropped} if posted else set()
    on_pr = posted is not None
    await ctx.store.record_findings(
        record.id,
        pr_platform(ctx),
        pr.repo,
        pr.number,
        [
            _finding_record(f, posted=on_pr and (f.path, f.line) not in dropped)
            for f in result.findings
        ],
    )


async def _record(
    ctx: Context,
    pr: PullRequest,
    record: ReviewRecord,
    result: ReviewResult,
    posted: PostedReview | None,
    progress: _Progress,
    state: StatusState,
    description: str,
    summary_url: str | None,
) -> None:
    """The review's outcome in the store, once its final status is on the pull request."""
    store = ctx.store
    platform = pr_platform(ctx)
    dropped = {_where(c) for c, _ in posted.dropped} if posted else set()
    outcome = state if state in ("failure", "error") else "success"
    duration = time.monotonic() - progress.started
    # Two rows of their own, written together (the job's end waits for them, its slot not).
    head_or, done_or = await asyncio.gather(
        store.update_pr_state(
            platform, pr.repo, pr.number, last_reviewed_head=pr.head_sha, full_requested=False
        ),
        store.update_review(
            record.id,
            state="done",
            outcome=outcome,
            reason=description,
            model=result.model,
            calls=result.usage.calls,
            cached_calls=result.usage.cached_calls,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            cost_usd=result.usage.cost_usd,
            findings=len(result.findings),
            severity_counts=severity_counts(result.findings),
            not_reviewed=[
                {"path": n.path, "reason": ctx.redactor.scrub(n.reason)}
                for n in result.not_reviewed
            ],
            dropped=len(result.dropped) + len(dropped),
            posted_review_id=str(posted.id) if posted and posted.id is not None else None,
            duration_seconds=round(duration, 3),
            finished_at=ctx.clock(),
            **({"url": summary_url} if summary_url else {}),
        ),
        return_exceptions=True,
    )
    _settled(head_or)
    _settled(done_or)
    ctx.metrics.reviews.labels(platform=platform, outcome=outcome).inc()
    ctx.metrics.review_duration.labels(platform=platform).observe(duration)
    ctx.log.info(
        "review done",
        outcome=outcome,
        findings=len(result.findings),
        cost_usd=round(result.usage.cost_usd, 6),
        seconds=round(duration, 2),
    )


async def _fail(
    ctx: Context,
    pr: PullRequest,
    record: ReviewRecord,
    reason: str,
    started: float,
    *,
    result: ReviewResult | None = None,
) -> None:
    reason = ctx.redactor.scrub(reason)  # a provider's error may echo its key
    await _status(ctx, pr, "error", f"Arbiter could not review: {reason}")
    await _record_failure(ctx, record, reason, started, result=result)


async def _record_failure(
    ctx: Context,
    record: ReviewRecord,
    reason: str,
    started: float,
    *,
    result: ReviewResult | None = None,
) -> None:
    usage = result.usage if result else None
    await ctx.store.update_review(
        record.id,
        state="failed",
        outcome="error",
        reason=reason,
        model=result.model if result else None,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cost_usd=usage.cost_usd if usage else 0.0,
        duration_seconds=round(time.monotonic() - started, 3),
        finished_at=ctx.clock(),
    )
    platform = pr_platform(ctx)
    ctx.metrics.reviews.labels(platform=platform, outcome="error").inc()
    ctx.log.warning("review failed", reason=reason)


# --- When a review cannot go on ------------------------------------------------------------------

_HEADLINES = {
    "review": "Arbiter could not review",
    "post": "Arbiter could not post its review",
    "record": "Arbiter posted its review but could not record it",
}


async def _give_up(ctx: Context, progress: _Progress, reason: str) -> None:
    """The last attempt failed: the final `error` status with the reason, and the review
    recorded as failed. The failure itself stays the job's error, so neither step may raise."""
    assert progress.pr is not None
    ctx.log.warning("review failed on its last attempt", reason=reason, stage=progress.stage)
    try:
        # Once the outcome is on the pull request, a bookkeeping failure does not replace it.
        if progress.stage != "settled":
            await _status(ctx, progress.pr, "error", f"{_HEADLINES[progress.stage]}: {reason}")
    except Exception as exc:
        ctx.log.warning("could not set the final status", error=_plain(exc))
    if progress.record is None:
        return
    try:
        await _record_failure(
            ctx, progress.record, reason, progress.started, result=progress.result
        )
    except Exception as exc:
        ctx.log.warning("could not record the failed review", error=_plain(exc))


def _deferral(ctx: Context, limit: RateLimited) -> JobDeferred:
    """The job again once the platform's rate limit allows, plus a little spread so that the
    reviews it stopped do not all return in the same second."""
    delay = limit.retry_after + random.uniform(1, 5)  # noqa: S311 - spread, not a secret
    ctx.log.warning("rate limited; review deferred", delay_seconds=math.ceil(delay))
    return JobDeferred(delay, f"deferred {math.ceil(delay)} s: {limit}")


def _out_of_time(ctx: Context) -> str:
    limit = ctx.settings.worker_job_timeout
    return f"the review took longer than ARBITER_WORKER_JOB_TIMEOUT ({limit:g} s) allows"


def _plain(exc: BaseException) -> str:
    """An error in words: a platform's own message says what happened; others say what too."""
    text = str(exc).strip()
    if isinstance(exc, PlatformError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _status(ctx: Context, pr: PullRequest, state: StatusState, description: str) -> None:
    if ctx.settings.update_status:
        await ctx.platform.set_status(pr, state, description)


def _why_not(
    loaded: EffectiveConfig, pr: PullRequest, state: PullRequestState, *, requested: bool
) -> str | None:
    """Why not to review `pr` now (None: review it). A person's request overrides the
    automatic-review rules and a pause, not a repository that turned Arbiter off."""
    if not loaded.config.enabled:
        return skip_reason(loaded, pr)
    if pr.state != "open":
        return f"the pull request is {pr.state}"
    if requested:
        return None
    if state.paused:
        return "automatic reviews are paused on this pull request (`@arbiter resume` resumes)"
    if not state.full_requested and state.last_reviewed_head == pr.head_sha:
        return f"its head {pr.head_sha[:7]} was already reviewed"
    return skip_reason(loaded, pr)


def pr_platform(ctx: Context) -> str:
    return ctx.event.platform


async def _recorded_output(ctx: Context, model: str | None) -> tuple[int, ...]:
    """Output tokens per call of this model's recent reviews: what an answer is reserved.
    Read beside the review's record, so a review holds at most two store connections at a time
    (PostgreSQL's pool, DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW, is shared by every slot; a
    call that finds none free waits for one), as it does when the earlier findings are read
    beside the pull request's state."""
    ref = str(ctx.model.model_info(model).ref)
    return tuple(await ctx.store.output_per_call(ref, limit=100))


async def _changes(platform: Platform, pr: PullRequest, since: str | None, ctx: Context) -> Changes:
    if since is None:
        return await platform.changes(pr)
    try:
        return await platform.changes(pr, since=since)
    except SinceNotAncestor:
        ctx.log.info("last reviewed head is gone (force-push): reviewing everything", since=since)
        return await platform.changes(pr)


def _review_body(findings: tuple[Finding, ...], pr: PullRequest) -> str:
    n = len(findings)
    return f"Arbiter found {n} new issue{'s' if n != 1 else ''} in {pr.head_sha[:7]}."


def _where(comment: InlineComment) -> tuple[str, int]:
    return comment.path, comment.line


def _finding_record(finding: Finding, *, posted: bool) -> FindingRecord:
    return FindingRecord(
        fingerprint=finding.fingerprint,
        path=finding.path,
        line=finding.line,
        start_line=finding.start_line,
        severity=finding.severity,
        category=finding.category,
        title=finding.title,
        body=finding.body,
        confidence=finding.confidence,
        posted=posted,
    )
