"""The Store protocol: everything that must survive a restart, and its record types.

Times are UNIX seconds (float, UTC) throughout, so every backend compares them the same way.
A store takes a `clock` so tests can move time (lease expiry, TTLs) without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

JobState = Literal["queued", "running", "done", "dead", "cancelled"]
JOB_STATES: tuple[JobState, ...] = ("queued", "running", "done", "dead", "cancelled")
InstallationState = Literal["active", "suspended", "deleted"]


class StoreUnavailable(Exception):
    """The database cannot be reached or refused the operation; the caller may retry later."""


class SchemaOutOfDate(Exception):
    """The database schema is behind this release; `arbiter migrate` brings it up to date."""


@dataclass(frozen=True)
class Delivery:
    platform: str
    delivery_id: str
    event: str


@dataclass(frozen=True)
class NewJob:
    kind: str
    payload: str
    key: str | None = None
    max_attempts: int = 4
    run_at: float | None = None
    delivery_id: str | None = None


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    payload: str
    state: JobState
    attempts: int
    max_attempts: int
    run_at: float
    created_at: float
    updated_at: float
    key: str | None = None
    delivery_id: str | None = None
    lease_until: float | None = None
    worker_id: str | None = None
    last_error: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None


class JobDeferred(Exception):
    """Raised by a job that must wait (e.g. for the daily budget): it is queued again after
    `delay` seconds without using up an attempt."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


@dataclass(frozen=True)
class Enqueued:
    """The outcome of accepting a delivery: a new job, or a delivery already seen."""

    job_id: int | None
    duplicate: bool = False
    replaced: tuple[int, ...] = ()


@dataclass(frozen=True)
class Installation:
    platform: str
    installation_id: int
    account: str
    account_type: str | None
    state: InstallationState
    repository_selection: str | None
    repositories: tuple[str, ...]
    created_at: float
    updated_at: float


ReviewState = Literal["running", "done", "failed", "skipped", "waiting"]
ReviewOutcome = Literal["success", "failure", "error", "skipped"]


@dataclass(frozen=True)
class ReviewStart:
    """What is known when a review of a pull request begins."""

    platform: str
    repo: str
    number: int
    head_sha: str
    mode: Literal["full", "incremental"]
    base_sha: str | None = None
    job_id: int | None = None
    delivery_id: str | None = None


@dataclass(frozen=True)
class ReviewRecord:
    id: int
    platform: str
    repo: str
    number: int
    head_sha: str
    mode: str
    state: ReviewState
    created_at: float
    base_sha: str | None = None
    job_id: int | None = None
    delivery_id: str | None = None
    outcome: ReviewOutcome | None = None
    reason: str | None = None
    model: str | None = None
    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    findings: int = 0
    severity_counts: dict[str, int] = field(default_factory=dict)
    not_reviewed: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    posted_review_id: str | None = None
    url: str | None = None
    duration_seconds: float | None = None
    finished_at: float | None = None
    # Set by `start_review` alone: this attempt took back the review an earlier attempt of its
    # job started (which may have posted under the review's id). A review read back says False.
    resumed: bool = field(default=False, compare=False)


# Columns a review's update may set (the rest are fixed when it starts).
REVIEW_UPDATABLE = frozenset(
    {
        "state",
        "outcome",
        "reason",
        "model",
        "calls",
        "cached_calls",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "findings",
        "severity_counts",
        "not_reviewed",
        "dropped",
        "posted_review_id",
        "url",
        "duration_seconds",
        "finished_at",
        "head_sha",
        "base_sha",
        "mode",
    }
)


@dataclass(frozen=True)
class FindingRecord:
    fingerprint: str
    path: str
    line: int
    severity: str
    category: str
    title: str
    body: str
    confidence: float
    posted: bool
    start_line: int | None = None
    review_id: int | None = None  # the review that recorded it (read back; not written from here)


@dataclass(frozen=True)
class PullRequestState:
    platform: str
    repo: str
    number: int
    last_reviewed_head: str | None = None
    paused: bool = False
    full_requested: bool = False


@dataclass(frozen=True)
class UsageRecord:
    kind: Literal["review", "followup"]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    platform: str | None = None
    repo: str | None = None
    number: int | None = None
    model: str | None = None
    review_id: int | None = None


ExchangeKind = Literal["question", "command"]
# pending: being handled. A question ends answered, unsure (below the confidence threshold),
# no_reply (nothing was asked), failed (the model could not answer), or is refused: off,
# not_allowed, rate_limited, over_budget. A command ends done or not_allowed.
ExchangeOutcome = Literal[
    "pending",
    "answered",
    "unsure",
    "no_reply",
    "failed",
    "off",
    "not_allowed",
    "rate_limited",
    "over_budget",
    "done",
]


@dataclass(frozen=True)
class ExchangeStart:
    """A comment that talks to Arbiter, as it arrives: one per delivery."""

    platform: str
    delivery_id: str
    repo: str
    number: int
    comment_id: str
    author: str
    kind: ExchangeKind
    question: str
    command: str | None = None
    thread: str | None = None
    path: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class ExchangeRecord:
    id: int
    platform: str
    delivery_id: str
    repo: str
    number: int
    comment_id: str
    author: str
    kind: ExchangeKind
    question: str
    outcome: ExchangeOutcome
    created_at: float
    command: str | None = None
    thread: str | None = None
    path: str | None = None
    line: int | None = None
    answer: str | None = None  # what Arbiter replied (None: silence)
    confidence: float | None = None
    reply_id: str | None = None  # the platform's id of Arbiter's reply
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    finished_at: float | None = None


# Columns an exchange's update may set: what it did not know when it started.
EXCHANGE_UPDATABLE = (
    frozenset(f.name for f in fields(ExchangeRecord))
    - {f.name for f in fields(ExchangeStart)}
    - {"id", "created_at"}
)


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str | None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


# --- What the operator API reads: a page of reviews, activity over a period ------------------


@dataclass(frozen=True)
class ReviewQuery:
    """A page of reviews, newest (highest id) first. `before_id` is where the previous page
    ended (the cursor); `since` keeps reviews created at or after it (UNIX seconds)."""

    platform: str | None = None
    repo: str | None = None
    outcome: str | None = None
    since: float | None = None
    before_id: int | None = None
    limit: int = 50


@dataclass(frozen=True)
class DayTotals:
    """One UTC day: reviews started, and LLM usage recorded (reviews and follow-ups)."""

    day: int  # days since 1970-01-01 UTC: floor(UNIX seconds / 86400)
    reviews: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class ReviewActivity:
    """What happened since a moment: per UTC day (days with nothing are left out, oldest
    first), and over the whole period."""

    days: tuple[DayTotals, ...]
    outcomes: dict[str, int]  # reviews started by outcome; "unfinished" when it has none yet
    calls: int  # model calls billed by those reviews
    cached_calls: int  # model answers they took from the cache instead
    findings_by_severity: dict[str, int]  # findings those reviews recorded
    durations: tuple[float, ...]  # seconds each finished ("done") review took, ascending


@dataclass(frozen=True)
class RepoActivity:
    """Every review of one repository, summed."""

    platform: str
    repo: str
    reviews: int
    cost_usd: float
    findings: int
    last_review_at: float


# --- Recovery: background passes, redelivery requests, repositories seen ---------------------

RedeliveryOutcome = Literal["accepted", "refused", "not_sent"]


@dataclass(frozen=True)
class PassRun:
    """A background pass (the redelivery pass, the reconcile sweep) as all processes share it:
    who holds its lease, when it last ran, what that run did, and how much it did in all."""

    name: str
    holder: str | None = None
    lease_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    total: int = 0  # what every run added: redeliveries requested, reviews queued


@dataclass(frozen=True)
class RedeliveryRecord:
    """Arbiter asked the platform to send a delivery again. `guid` is the delivery as Arbiter
    knows it (X-GitHub-Delivery, GitLab's Idempotency-Key); `attempt_id` the platform's id of
    the failed attempt it asked about; `state` what the platform answered."""

    platform: str
    guid: str
    source: str
    attempt_id: int
    attempts: int
    state: Literal["requested", "accepted", "refused"]
    requested_at: float
    error: str | None = None


@dataclass(frozen=True)
class KnownRepository:
    """A repository (GitLab: project path) Arbiter has seen events or an installation for."""

    platform: str
    repo: str
    first_seen_at: float
    last_seen_at: float
    installation_id: int | None = None


class Store(Protocol):
    """What Arbiter keeps. Only `bot/store/` talks to a database."""

    backend: str

    async def open(self) -> None:
        """Connect (and, for document stores, create indexes)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""

    async def migrate(self) -> list[str]:
        """Bring the schema to this release's head; the revisions applied."""

    async def schema_status(self) -> SchemaStatus: ...

    # --- Deliveries and the job queue --------------------------------------------------------

    async def accept_delivery(self, delivery: Delivery, job: NewJob) -> Enqueued:
        """Record the delivery and enqueue its job in one transaction, unless already seen."""

    async def enqueue(self, job: NewJob) -> Enqueued:
        """Queue a job; with a key, it replaces queued jobs of that key that have not started."""

    async def watch_jobs(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process queues a job, until cancelled (a worker then
        claims at once instead of at its next poll). Returns at once where the backend has
        no way to tell: its workers poll."""

    async def claim(
        self,
        worker_id: str,
        *,
        limit: int,
        lease_seconds: float,
        holding: Collection[int] = (),
        lanes: Mapping[str, int] | None = None,
        deep: Mapping[str, int] | None = None,
    ) -> list[Job]:
        """Take up to `limit` runnable jobs: queued and due, or running with an expired lease.

        `lanes` gives kinds room of their own: up to `lanes[kind]` more jobs of such a kind
        may be taken besides the `limit`, which counts jobs of any kind; the jobs of kinds
        without a lane are never more than `limit`. A worker uses it so a delivery's short
        dispatch never waits for a slot behind long reviews, and to take reviews ahead of a
        free slot. `deep[kind]`: that lane takes jobs only if at least so many jobs (of any
        kind) are queued and due as the claim starts (a worker leaves the last few of a burst
        to workers with a free slot, instead of holding them ahead of one of its own).

        Expired leases are taken back from every worker, the claiming one included (a process
        takes back its own lost work: a run whose outcome it could not record, a claim whose
        answer never reached it), except the jobs in `holding`: those the claimer says it still
        runs or is still recording, whose heartbeat was only late. A job whose key has another
        job running waits for it. A job whose lease expired on its last allowed attempt is
        marked dead instead of claimed.
        """

    async def renew_leases(
        self, worker_id: str, job_ids: Iterable[int], lease_seconds: float
    ) -> list[int]:
        """Extend the leases of those jobs that are still this worker's and running (even if
        their lease ran out meanwhile); their ids, ascending. A job left out was taken over
        (or finished): its run must stop and record nothing."""

    async def complete(self, job_id: int, worker_id: str) -> bool:
        """Mark done; False if the job is no longer this worker's (its lease was taken over)."""

    async def retry_later(
        self,
        job_id: int,
        worker_id: str,
        *,
        error: str,
        delay: float,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        """Queue the job again in `delay` seconds, keeping the error and handler progress."""

    async def bury(
        self, job_id: int, worker_id: str, *, error: str, progress: dict[str, Any] | None = None
    ) -> bool:
        """Park a job as dead, keeping its error."""

    async def release(
        self, job_id: int, worker_id: str, *, delay: float = 0.0, note: str | None = None
    ) -> bool:
        """Give a claimed job back untried: queued again in `delay` seconds, the attempt not
        counted (shutdown, or a job that must wait, e.g. for the daily budget; `note` says why)."""

    async def cancel_queued(self, key: str, reason: str) -> list[int]: ...

    async def requeue(self, job_id: int) -> bool:
        """Queue a dead or cancelled job again, with its attempts reset."""

    async def get_job(self, job_id: int) -> Job | None: ...

    async def list_jobs(
        self, *, state: JobState | None = None, kind: str | None = None, limit: int = 100
    ) -> list[Job]: ...

    async def job_counts(self) -> dict[str, int]: ...

    async def seen_delivery(self, platform: str, delivery_id: str) -> bool: ...

    async def purge(self, *, max_age: float) -> int:
        """Forget delivery ids and finished jobs older than `max_age` seconds, and expired
        cache entries; how many rows went."""

    # --- LLM response cache ------------------------------------------------------------------

    async def cache_get(self, key: str) -> str | None:
        """The cached value for `key` (at most 64 characters), or None if absent or expired."""

    async def cache_put(self, key: str, value: str, *, ttl_seconds: float) -> None:
        """Store `value` under `key` until `ttl_seconds` from now, replacing any older value."""

    # --- Reviews, findings, pull-request state, usage ------------------------------------------

    async def start_review(self, start: ReviewStart) -> ReviewRecord:
        """The review of `start.job_id`, created on first call; a retried job gets its own
        review back (so what it already posted is recognised), updated to the new head."""

    async def update_review(self, review_id: int, **changes: Any) -> None:
        """Set columns of REVIEW_UPDATABLE (severity_counts and not_reviewed as JSON-able)."""

    async def get_review(self, review_id: int) -> ReviewRecord | None: ...

    async def list_reviews(
        self,
        *,
        platform: str | None = None,
        repo: str | None = None,
        number: int | None = None,
        limit: int = 100,
    ) -> list[ReviewRecord]:
        """Newest first."""

    async def output_per_call(self, model: str, *, limit: int = 100) -> list[int]:
        """Output tokens per model call of the newest `limit` reviews by `model` that made
        calls, newest first: what the next review reserves for an answer. Reads two columns,
        not whole records: every review asks it."""

    async def record_findings(
        self,
        review_id: int,
        platform: str,
        repo: str,
        number: int,
        records: Iterable[FindingRecord],
    ) -> int:
        """Remember findings by fingerprint per pull request; already-known ones are kept as
        they were (a finding posted once stays posted). The number newly recorded."""

    async def findings_for(
        self, platform: str, repo: str, number: int, *, review_id: int | None = None
    ) -> list[FindingRecord]: ...

    async def pr_state(self, platform: str, repo: str, number: int) -> PullRequestState: ...

    async def update_pr_state(
        self,
        platform: str,
        repo: str,
        number: int,
        *,
        last_reviewed_head: str | None = None,
        paused: bool | None = None,
        full_requested: bool | None = None,
    ) -> PullRequestState:
        """Set the given fields (None leaves a field as it is), creating the row if needed."""

    async def record_usage(self, record: UsageRecord) -> None: ...

    async def spent_since(self, since: float) -> float:
        """LLM dollars recorded since `since` (UNIX seconds), across every repository."""

    # --- Exchanges: questions and commands put to Arbiter ---------------------------------------

    async def start_exchange(self, start: ExchangeStart) -> ExchangeRecord:
        """The exchange of `start.delivery_id`, created "pending" on first call; a retried job
        gets the same record back (its outcome says whether it was already handled)."""

    async def update_exchange(self, exchange_id: int, **changes: Any) -> None:
        """Set columns of EXCHANGE_UPDATABLE."""

    async def list_exchanges(
        self,
        *,
        platform: str | None = None,
        repo: str | None = None,
        number: int | None = None,
        author: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[ExchangeRecord]:
        """Newest first; `since` keeps those created at or after it (UNIX seconds)."""

    async def count_exchanges(
        self,
        platform: str,
        repo: str,
        number: int,
        *,
        author: str,
        since: float,
        outcomes: Collection[str],
        through_id: int | None = None,
    ) -> int:
        """How many exchanges `author` started on this pull request since `since` whose outcome
        is one of `outcomes`, and (with `through_id`) that started no later than that exchange:
        what the follow-up rate limit counts, in arrival order when questions come at once."""

    # --- Installations -----------------------------------------------------------------------

    async def upsert_installation(
        self,
        platform: str,
        installation_id: int,
        *,
        account: str,
        account_type: str | None = None,
        state: InstallationState = "active",
        repository_selection: str | None = None,
        repositories: Iterable[str] | None = None,
    ) -> None:
        """Create or update; `repositories`, when given, replaces the known list."""

    async def set_installation_state(
        self, platform: str, installation_id: int, state: InstallationState
    ) -> bool: ...

    async def add_repositories(
        self, platform: str, installation_id: int, repositories: Iterable[str]
    ) -> None: ...

    async def remove_repositories(
        self, platform: str, installation_id: int, repositories: Iterable[str]
    ) -> None: ...

    async def get_installation(
        self, platform: str, installation_id: int
    ) -> Installation | None: ...

    async def list_installations(self, platform: str | None = None) -> list[Installation]: ...

    # --- Operator views (the dashboard's API) ------------------------------------------------

    async def find_reviews(self, query: ReviewQuery) -> list[ReviewRecord]:
        """Up to `query.limit` reviews matching every filter given, newest (highest id) first."""

    async def review_activity(self, since: float) -> ReviewActivity:
        """Reviews started, usage recorded and findings found since `since` (UNIX seconds)."""

    async def repo_activity(self) -> list[RepoActivity]:
        """Per repository that has reviews: how many, their cost and findings; most recently
        reviewed first."""

    # --- Recovery: background passes, redeliveries, repositories seen (bot/recovery/) ---------

    async def acquire_pass(
        self, name: str, holder: str, *, lease_seconds: float, last_finished_before: float
    ) -> bool:
        """Take the pass's lease for `lease_seconds` when nobody holds a live one and the pass
        last finished before `last_finished_before` (or never ran): one process runs it."""

    async def renew_pass(self, name: str, holder: str, *, lease_seconds: float) -> bool:
        """Extend the lease while `holder` still has it; False when it was taken over."""

    async def finish_pass(
        self, name: str, holder: str, *, summary: dict[str, Any], added: int
    ) -> bool:
        """Record a run's end (its summary, `added` to the total) and free the lease."""

    async def release_pass(self, name: str, holder: str) -> None:
        """Free the lease without recording a run (the process is stopping)."""

    async def pass_runs(self) -> list[PassRun]:
        """Every pass that ever ran or was held, by name."""

    async def get_watermark(self, name: str) -> str | None: ...

    async def set_watermark(self, name: str, value: str) -> None: ...

    async def seen_deliveries(self, platform: str, delivery_ids: Collection[str]) -> set[str]:
        """Which of these delivery ids the store has recorded (and not yet forgotten)."""

    async def claim_redelivery(
        self,
        platform: str,
        guid: str,
        attempt_id: int,
        *,
        source: str,
        max_attempts: int,
        stale_after: float,
    ) -> bool:
        """Record that Arbiter is about to ask for `guid` again, by its failed attempt
        `attempt_id`, unless that was asked already: True for a first request; for another
        attempt of the same delivery (the redelivery failed too) while fewer than
        `max_attempts` were asked and none was refused; or for the same attempt whose request
        is unanswered (never sent, or its answer lost) for `stale_after` seconds."""

    async def settle_redelivery(
        self,
        platform: str,
        guid: str,
        attempt_id: int,
        outcome: RedeliveryOutcome,
        *,
        error: str | None = None,
    ) -> None:
        """What the platform answered: accepted, refused (never asked again), or not_sent
        (the request was not made: the attempt does not count)."""

    async def redelivery_records(
        self, platform: str | None = None, *, limit: int = 100
    ) -> list[RedeliveryRecord]:
        """The most recent requests, newest first."""

    async def purge_redeliveries(self, *, max_age: float) -> int:
        """Forget redelivery requests older than `max_age` seconds; how many went."""

    async def note_repositories(
        self, platform: str, repos: Iterable[str], *, installation_id: int | None = None
    ) -> None:
        """Remember repositories seen (first seen kept, last seen now). A repository this
        store noted under the same installation less than `noted.NOTE_AGAIN_SECONDS` ago is not
        written again: its last seen lags by at most that."""

    async def forget_repository(self, platform: str, repo: str) -> None: ...

    async def known_repositories(self, platform: str | None = None) -> list[KnownRepository]: ...

    async def open_job_keys(self, keys: Collection[str]) -> set[str]:
        """Which of these job keys have a queued or running job."""
