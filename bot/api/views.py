"""The operator API's operations: what each one reads from the store and answers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, cast

from bot import __version__
from bot.api.access import TOKENS_SETTING, allows
from bot.api.models import (
    ApiIndex,
    AuthState,
    BudgetStats,
    ById,
    CacheStats,
    DayStats,
    DurationStats,
    Finding,
    InstallationSummary,
    JobCounts,
    JobList,
    JobSummary,
    Me,
    NotReviewed,
    PlatformState,
    RepoList,
    RepoSummary,
    Retried,
    ReviewDetail,
    ReviewFilters,
    ReviewPage,
    ReviewSummary,
    Stats,
    StatsQuery,
    Totals,
)
from bot.api.operations import ApiFailure, Call, Operation
from bot.api.recovery import RECOVERY_OPERATIONS
from bot.logs import get_logger
from bot.store.base import FindingRecord, Job, ReviewQuery, ReviewRecord
from config.settings import Settings, without_credentials
from config.severity import SEVERITY_RANK
from platforms.github_manifest import github_web_url

DAY = 86400
DEAD_JOBS_SHOWN = 100

log = get_logger(component="api")


# --- Operations ----------------------------------------------------------------------------------


async def index(call: Call) -> ApiIndex:
    runtime, settings = call.runtime, call.runtime.settings
    return ApiIndex(
        name="arbiter",
        version=__version__,
        api_title=settings.api_title,
        api_version=settings.api_version,
        platforms={
            name: PlatformState(enabled=s.enabled, missing=list(s.missing))
            for name, s in runtime.platforms.items()
        },
        auth=AuthState(configured=bool(settings.api_tokens), setting=TOKENS_SETTING),
        endpoints=[
            "/webhooks/github",
            "/webhooks/gitlab",
            "/health/ready",
            "/metrics",
            "/api/openapi.json",
            "/",
        ],
    )


async def me(call: Call) -> Me:
    assert call.caller is not None  # the operation needs a token
    return Me(role=call.caller.role, can_retry=allows(call.caller.role, "admin"))


async def list_reviews(call: Call) -> ReviewPage:
    q = call.params(ReviewFilters)
    records = await call.runtime.store.find_reviews(
        ReviewQuery(
            platform=q.platform,
            repo=q.repo,
            outcome=q.outcome,
            since=q.since.timestamp() if q.since is not None else None,
            before_id=_read_cursor(q.cursor) if q.cursor is not None else None,
            limit=q.limit + 1,  # one more than asked: is there a next page?
        )
    )
    page = records[: q.limit]
    more = len(records) > q.limit
    settings = call.runtime.settings
    return ReviewPage(
        items=[_summary(r, settings) for r in page],
        next_cursor=_cursor(page[-1].id) if more and page else None,
    )


async def get_review(call: Call) -> ReviewDetail:
    review_id = call.path_params(ById).id
    store = call.runtime.store
    record = await store.get_review(review_id)
    if record is None:
        raise ApiFailure(404, "not_found", f"no review {review_id}")
    found = await store.findings_for(
        record.platform, record.repo, record.number, review_id=record.id
    )
    return ReviewDetail(
        **_summary(record, call.runtime.settings).model_dump(),
        base_sha=record.base_sha,
        calls=record.calls,
        cached_calls=record.cached_calls,
        dropped=record.dropped,
        summary_url=_web_link(record.url),
        posted_review_id=record.posted_review_id,
        job_id=record.job_id,
        delivery_id=record.delivery_id,
        findings=[_finding(f) for f in _most_severe_first(found)],
        not_reviewed=[_not_reviewed(item) for item in record.not_reviewed],
    )


async def list_repos(call: Call) -> RepoList:
    store, settings = call.runtime.store, call.runtime.settings
    installations = await store.list_installations()
    activity = await store.repo_activity()
    covered: dict[tuple[str, str], tuple[int, str]] = {}
    for inst in installations:
        for repo in inst.repositories:
            covered.setdefault((inst.platform, repo), (inst.installation_id, inst.state))
    repos: list[RepoSummary] = []
    for a in activity:
        installation_id, state = covered.pop((a.platform, a.repo), (None, None))
        repos.append(
            RepoSummary(
                platform=a.platform,
                repo=a.repo,
                url=repo_url(settings, a.platform, a.repo),
                installation_id=installation_id,
                installation_state=state,
                reviews=a.reviews,
                cost_usd=round(a.cost_usd, 6),
                findings=a.findings,
                last_review_at=_time(a.last_review_at),
            )
        )
    for (platform, repo), (installation_id, state) in sorted(covered.items()):
        repos.append(
            RepoSummary(
                platform=platform,
                repo=repo,
                url=repo_url(settings, platform, repo),
                installation_id=installation_id,
                installation_state=state,
                reviews=0,
                cost_usd=0.0,
                findings=0,
                last_review_at=None,
            )
        )
    return RepoList(
        installations=[
            InstallationSummary(
                platform=i.platform,
                installation_id=i.installation_id,
                account=i.account,
                account_type=i.account_type,
                state=i.state,
                repository_selection=i.repository_selection,
                repositories=len(i.repositories),
            )
            for i in installations
        ],
        repos=repos,
    )


async def stats(call: Call) -> Stats:
    days = call.params(StatsQuery).days
    today = math.floor(call.now / DAY)
    first = today - days + 1
    activity = await call.runtime.store.review_activity(first * DAY)
    by_day = {d.day: d for d in activity.days}
    per_day = [
        DayStats(
            date=_date(day),
            reviews=by_day[day].reviews if day in by_day else 0,
            cost_usd=round(by_day[day].cost_usd, 6) if day in by_day else 0.0,
            input_tokens=by_day[day].input_tokens if day in by_day else 0,
            output_tokens=by_day[day].output_tokens if day in by_day else 0,
        )
        for day in range(first, today + 1)
    ]
    looked_up = activity.calls + activity.cached_calls
    budget = call.runtime.settings.daily_budget_usd
    spent_today = by_day[today].cost_usd if today in by_day else 0.0
    return Stats(
        days=days,
        since=_date(first),
        per_day=per_day,
        totals=Totals(
            reviews=sum(d.reviews for d in per_day),
            cost_usd=round(sum(d.cost_usd for d in activity.days), 6),
            input_tokens=sum(d.input_tokens for d in per_day),
            output_tokens=sum(d.output_tokens for d in per_day),
        ),
        outcomes=dict(sorted(activity.outcomes.items())),
        cache=CacheStats(
            calls=activity.calls,
            cached_calls=activity.cached_calls,
            hit_rate=activity.cached_calls / looked_up if looked_up else None,
        ),
        findings_by_severity=_by_severity(activity.findings_by_severity),
        duration=DurationStats(
            reviews=len(activity.durations),
            p50_seconds=percentile(activity.durations, 0.50),
            p95_seconds=percentile(activity.durations, 0.95),
        ),
        budget=BudgetStats(
            daily_budget_usd=budget if budget > 0 else None,
            spent_today_usd=round(spent_today, 6),
            used_fraction=spent_today / budget if budget > 0 else None,
            resets_at=_time((today + 1) * DAY),
        ),
    )


async def list_jobs(call: Call) -> JobList:
    store = call.runtime.store
    counts = await store.job_counts()
    dead = await store.list_jobs(state="dead", limit=DEAD_JOBS_SHOWN)
    return JobList(
        counts=JobCounts(**{state: counts.get(state, 0) for state in JobCounts.model_fields}),
        dead=[job_summary(j) for j in dead],
    )


async def retry_job(call: Call) -> Retried:
    job_id = call.path_params(ById).id
    store = call.runtime.store
    job = await store.get_job(job_id)
    if job is None:
        raise ApiFailure(404, "not_found", f"no job {job_id}")
    if job.state != "dead" or not await store.requeue(job_id):
        raise ApiFailure(
            409, "conflict", f"job {job_id} is {job.state}: only a dead job can be retried"
        )
    call.runtime.notify_worker()
    who = call.caller.key if call.caller is not None else None
    log.info("dead job queued again", job_id=job_id, kind=job.kind, by=who)
    queued = await store.get_job(job_id)
    return Retried(
        job=job_summary(queued or job),
        message=f"job {job_id} is queued again, its attempts reset",
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/",
        "getIndex",
        "What this server is and which platforms it serves",
        index,
        ApiIndex,
        role=None,
        tags=("server",),
    ),
    Operation(
        "GET",
        "/me",
        "getMe",
        "The role of the presented token",
        me,
        Me,
        role="read",
        tags=("server",),
    ),
    Operation(
        "GET",
        "/reviews",
        "listReviews",
        "Reviews, newest first, filtered and paginated by cursor",
        list_reviews,
        ReviewPage,
        role="read",
        query=ReviewFilters,
        errors=(400,),
        tags=("reviews",),
    ),
    Operation(
        "GET",
        "/reviews/{id}",
        "getReview",
        "One review with its findings and what it did not review",
        get_review,
        ReviewDetail,
        role="read",
        path_model=ById,
        errors=(400, 404),
        tags=("reviews",),
    ),
    Operation(
        "GET",
        "/repos",
        "listRepos",
        "Installations, and repositories with their review counts and cost",
        list_repos,
        RepoList,
        role="read",
        tags=("repositories",),
    ),
    Operation(
        "GET",
        "/stats",
        "getStats",
        "Reviews, cost, tokens, cache hit rate, findings, durations and budget over N days",
        stats,
        Stats,
        role="read",
        query=StatsQuery,
        errors=(400,),
        tags=("stats",),
    ),
    Operation(
        "GET",
        "/jobs",
        "listJobs",
        "The queue by state, and dead jobs with their errors",
        list_jobs,
        JobList,
        role="read",
        tags=("jobs",),
    ),
    Operation(
        "POST",
        "/jobs/{id}/retry",
        "retryJob",
        "Queue a dead job again, its attempts reset (admin)",
        retry_job,
        Retried,
        role="admin",
        path_model=ById,
        errors=(400, 404, 409),
        tags=("jobs",),
    ),
    *RECOVERY_OPERATIONS,  # the queue view's recovery section (bot/api/recovery.py)
)


# --- From store records to answers --------------------------------------------------------------


def pr_url(settings: Settings, platform: str, repo: str, number: int) -> str | None:
    base = repo_url(settings, platform, repo)
    if base is None:
        return None
    return f"{base}/pull/{number}" if platform == "github" else f"{base}/-/merge_requests/{number}"


def repo_url(settings: Settings, platform: str, repo: str) -> str | None:
    # A link carries no credentials, whatever the base URL setting holds.
    if platform == "github":
        return f"{without_credentials(github_web_url(settings.github_base_url))}/{repo}"
    if platform == "gitlab":
        return f"{without_credentials(settings.gitlab_base_url)}/{repo}"
    return None


def job_summary(job: Job) -> JobSummary:
    about = _job_subject(job.payload)
    number = about.get("number")
    name, action = about.get("name"), about.get("action")
    return JobSummary(
        id=job.id,
        kind=job.kind,
        state=job.state,
        platform=_text_or_none(about.get("platform")),
        repo=_text_or_none(about.get("repo")),
        number=number if isinstance(number, int) and not isinstance(number, bool) else None,
        event=_event_name(name, action) if job.kind == "event" else None,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        last_error=job.last_error,
        created_at=_time(job.created_at),
        updated_at=_time(job.updated_at),
        run_at=_time(job.run_at),
        finished_at=_time(job.finished_at) if job.finished_at is not None else None,
    )


def percentile(ascending: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted values; None for none."""
    if not ascending:
        return None
    rank = max(1, math.ceil(fraction * len(ascending)))
    return round(ascending[rank - 1], 3)


def _summary(r: ReviewRecord, settings: Settings) -> ReviewSummary:
    return ReviewSummary(
        id=r.id,
        platform=r.platform,
        repo=r.repo,
        number=r.number,
        pr_url=pr_url(settings, r.platform, r.repo, r.number),
        head_sha=r.head_sha,
        mode=r.mode,
        state=r.state,
        outcome=r.outcome,
        reason=r.reason,
        model=r.model,
        finding_count=r.findings,
        severity_counts=_by_severity(r.severity_counts),
        input_tokens=r.input_tokens,
        output_tokens=r.output_tokens,
        cost_usd=round(r.cost_usd, 6),
        duration_seconds=r.duration_seconds,
        created_at=_time(r.created_at),
        finished_at=_time(r.finished_at) if r.finished_at is not None else None,
    )


def _finding(f: FindingRecord) -> Finding:
    return Finding(
        fingerprint=f.fingerprint,
        path=f.path,
        line=f.line,
        start_line=f.start_line,
        severity=f.severity,
        category=f.category,
        title=f.title,
        body=f.body,
        confidence=f.confidence,
        posted=f.posted,
    )


def _most_severe_first(found: list[FindingRecord]) -> list[FindingRecord]:
    return sorted(found, key=lambda f: (-SEVERITY_RANK.get(f.severity, -1), f.path, f.line))


def _not_reviewed(item: Any) -> NotReviewed:
    if isinstance(item, dict):
        return NotReviewed(path=str(item.get("path", "")), reason=str(item.get("reason", "")))
    return NotReviewed(path=str(item), reason="")


def _by_severity(counts: dict[str, int]) -> dict[str, int]:
    """Most severe first; severities this release does not know go last."""
    order = sorted(counts, key=lambda s: (-SEVERITY_RANK.get(s, -1), s))
    return {s: int(counts[s]) for s in order}


def _web_link(url: str | None) -> str | None:
    """Only web links leave the API as links: a page must never get a javascript: URL."""
    return url if url is not None and url.lower().startswith(("https://", "http://")) else None


def _job_subject(payload: str) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except ValueError:
        return {}
    return cast(dict[str, Any], data) if isinstance(data, dict) else {}


def _event_name(name: Any, action: Any) -> str | None:
    if not isinstance(name, str):
        return None
    return f"{name}.{action}" if isinstance(action, str) and action else name


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _cursor(review_id: int) -> str:
    """Where the next page starts: below this review id (keyset pagination, so a page is
    never shifted by reviews arriving meanwhile)."""
    return str(review_id)


def _read_cursor(cursor: str) -> int:
    return int(cursor)  # the query model has checked its form


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _date(day: int) -> date:
    return datetime.fromtimestamp(day * DAY, UTC).date()
