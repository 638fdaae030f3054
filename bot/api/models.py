"""What the operator API answers and accepts: pydantic models, from which the OpenAPI document
is generated too, so the description and the answers cannot drift apart.

Times are RFC 3339 date-times in UTC; money is US dollars; durations are seconds.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from bot.api.access import Role
from bot.store.base import JobState, ReviewState
from bot.store.base import ReviewOutcome as Outcome
from platforms.base import PlatformName

MAX_ID = 2**63 - 1  # the stores' 64-bit ids
# RFC 3339 (the date-time format of JSON Schema); Python alone would accept far more.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)


class ApiModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- Errors and the index ------------------------------------------------------------------------


class ApiError(ApiModel):
    """Every refusal: a stable code to branch on and a sentence for people."""

    error: str = Field(
        description=(
            "bad_request, unauthorized, forbidden, api_not_configured, not_found, "
            "method_not_allowed, conflict, rate_limited, store_unavailable or internal"
        )
    )
    message: str
    details: list[str] = Field(default_factory=list, description="what was wrong, one per line")


class PlatformState(ApiModel):
    enabled: bool
    missing: list[str] = Field(description="the settings still needed to enable it")


class AuthState(ApiModel):
    configured: bool = Field(description="false: every API call is refused until set")
    setting: str = Field(description="the setting that holds the API tokens")


class ApiIndex(ApiModel):
    """What this server is, which platforms it serves, and where things are."""

    name: str
    version: str = Field(description="Arbiter's version")
    api_title: str
    api_version: str
    platforms: dict[str, PlatformState]
    auth: AuthState
    endpoints: list[str]


class Me(ApiModel):
    """Who the presented token is."""

    role: Role
    can_retry: bool = Field(description="whether this token may retry dead jobs (admin)")


# --- Reviews -------------------------------------------------------------------------------------


class ReviewSummary(ApiModel):
    """One review of one pull request head."""

    id: int
    platform: str
    repo: str
    number: int = Field(description="the pull request (GitLab: merge request iid)")
    pr_url: str | None = Field(description="the pull request's web page")
    head_sha: str
    mode: str = Field(description="full, or incremental (only what changed since the last)")
    state: ReviewState
    outcome: Outcome | None = Field(description="null while the review has not finished")
    reason: str | None = Field(description="the commit status description, or why it failed")
    model: str | None
    finding_count: int = Field(description="new findings this review reported")
    severity_counts: dict[str, int]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    duration_seconds: float | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


class Finding(ApiModel):
    """A problem the review reported, anchored to a line of the new side of the diff."""

    fingerprint: str
    path: str
    line: int
    start_line: int | None
    severity: str
    category: str
    title: str
    body: str = Field(description="Markdown written by the model: render it as text")
    confidence: float
    posted: bool = Field(description="whether it was posted as an inline comment")


class NotReviewed(ApiModel):
    path: str
    reason: str


class ReviewDetail(ReviewSummary):
    """A review with everything known about it."""

    base_sha: str | None
    calls: int = Field(description="model calls billed")
    cached_calls: int = Field(description="model answers taken from the cache")
    dropped: int = Field(description="findings not posted (not on a changed line, or refused)")
    summary_url: str | None = Field(description="the summary comment on the pull request")
    posted_review_id: str | None
    job_id: int | None
    delivery_id: str | None
    findings: list[Finding]
    not_reviewed: list[NotReviewed]


class ReviewPage(ApiModel):
    """Reviews, newest first. Pass `next_cursor` back as `cursor`, with the same filters,
    for the next page; null when this is the last."""

    items: list[ReviewSummary]
    next_cursor: str | None


# --- Repositories --------------------------------------------------------------------------------


class InstallationSummary(ApiModel):
    platform: str
    installation_id: int
    account: str
    account_type: str | None
    state: str = Field(description="active, suspended or deleted")
    repository_selection: str | None
    repositories: int = Field(description="repositories known to be covered")


class RepoSummary(ApiModel):
    platform: str
    repo: str
    url: str | None
    installation_id: int | None
    installation_state: str | None
    reviews: int
    cost_usd: float
    findings: int
    last_review_at: dt.datetime | None


class RepoList(ApiModel):
    installations: list[InstallationSummary]
    repos: list[RepoSummary] = Field(description="most recently reviewed first")


# --- Stats ---------------------------------------------------------------------------------------


class DayStats(ApiModel):
    date: dt.date = Field(description="a UTC day")
    reviews: int = Field(description="reviews started that day")
    cost_usd: float = Field(description="LLM spend recorded that day (reviews and follow-ups)")
    input_tokens: int
    output_tokens: int


class Totals(ApiModel):
    reviews: int
    cost_usd: float
    input_tokens: int
    output_tokens: int


class CacheStats(ApiModel):
    calls: int = Field(description="model calls the period's reviews were billed for")
    cached_calls: int = Field(description="answers they took from the response cache instead")
    hit_rate: float | None = Field(description="cached / (calls + cached); null: no calls")


class DurationStats(ApiModel):
    reviews: int = Field(description="finished reviews measured")
    p50_seconds: float | None
    p95_seconds: float | None


class BudgetStats(ApiModel):
    daily_budget_usd: float | None = Field(description="ARBITER_DAILY_BUDGET_USD; null: none")
    spent_today_usd: float
    used_fraction: float | None = Field(description="spent / budget (may pass 1); null: none")
    resets_at: dt.datetime = Field(description="the next 00:00 UTC")


class Stats(ApiModel):
    """The last `days` UTC days, today included."""

    days: int
    since: dt.date
    per_day: list[DayStats] = Field(description="every day of the period, oldest first")
    totals: Totals
    outcomes: dict[str, int] = Field(description="reviews by outcome (unfinished: none yet)")
    cache: CacheStats
    findings_by_severity: dict[str, int] = Field(description="most severe first")
    duration: DurationStats
    budget: BudgetStats


# --- Jobs ----------------------------------------------------------------------------------------


class JobCounts(ApiModel):
    queued: int
    running: int
    done: int
    dead: int
    cancelled: int


class JobSummary(ApiModel):
    id: int
    kind: str = Field(description="event (a delivery for the handlers) or review")
    state: JobState
    platform: str | None
    repo: str | None
    number: int | None
    event: str | None = Field(description="for event jobs: name.action")
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    run_at: dt.datetime
    finished_at: dt.datetime | None


class JobList(ApiModel):
    counts: JobCounts = Field(description="the queue by state")
    dead: list[JobSummary] = Field(description="the most recent dead jobs, newest first")


class Retried(ApiModel):
    job: JobSummary
    message: str


# --- What requests carry -------------------------------------------------------------------------


class QueryModel(BaseModel):
    """Query parameters: each field is one parameter; unknown ones are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


Repo = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._/-]+$")]


class ReviewFilters(QueryModel):
    platform: PlatformName | None = Field(None, description="github or gitlab")
    repo: Repo | None = Field(None, description="owner/name (GitLab: group/…/project)")
    outcome: Outcome | None = Field(None, description="how the review ended")
    since: AwareDatetime | None = Field(
        None, description="reviews started at or after this RFC 3339 date-time"
    )
    cursor: str | None = Field(
        None,
        pattern=r"^[1-9][0-9]{0,17}$",
        description="next_cursor of the previous page, passed back as it is",
    )
    limit: int = Field(50, ge=1, le=200, description="reviews per page")

    @field_validator("since", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        if isinstance(value, str) and not _RFC3339.match(value):
            raise ValueError("must be an RFC 3339 date-time, e.g. 2026-01-31T00:00:00Z")
        return value


class StatsQuery(QueryModel):
    days: int = Field(30, ge=1, le=366, description="UTC days to cover, today included")


class ById(QueryModel):
    id: int = Field(ge=1, le=MAX_ID, examples=[1])
