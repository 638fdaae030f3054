"""`GET /api/recovery`: what the dashboard's queue view shows of recovery (bot/recovery/): each
pass, what it covers or why it is off, its last run, and what every process did in all (the
totals the Prometheus counters count per process), with the latest redelivery requests."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from bot.api.models import ApiModel
from bot.api.operations import Call, Operation
from bot.recovery import RECONCILE, REDELIVERY
from bot.recovery.redelivery import webhooks
from bot.store.base import PassRun, RedeliveryRecord

RECENT_REDELIVERIES = 20


class PassSummary(ApiModel):
    """What a pass's last run did."""

    sources: int = Field(0, description="webhooks or repositories looked at")
    listed: int = Field(0, description="deliveries or pull requests read")
    due: int = Field(0, description="failed deliveries, or unreviewed heads, found")
    done: int = Field(0, description="redeliveries requested, or reviews queued")
    already: int = Field(0, description="due, but requested or queued before")
    refused: int = Field(0, description="requests the platform refused")
    errors: int = Field(0, description="sources that could not be read, requests that failed")
    stopped: str | None = Field(None, description="why the run ended early, if it did")
    error: str | None = Field(None, description="the error that ended the run, if one did")
    seconds: float | None = Field(None, description="how long the run took")


class RecoveryPass(ApiModel):
    name: Literal["redelivery", "reconcile"]
    enabled: bool = Field(description="false: its interval setting is 0")
    interval_seconds: float
    covers: list[str] = Field(description="the webhooks it reads, or the repositories it sweeps")
    off: list[str] = Field(description="what it cannot cover, and why")
    running: bool = Field(description="a process holds its lease now")
    last_started_at: dt.datetime | None
    last_finished_at: dt.datetime | None
    next_due_at: dt.datetime | None
    last_run: PassSummary | None
    total: int = Field(
        description="all runs of every process: redeliveries requested, or reviews queued"
    )
    metric: str = Field(description="the Prometheus counter of this pass (per process)")


class RedeliveryRequest(ApiModel):
    platform: str
    delivery_id: str = Field(description="X-GitHub-Delivery, or GitLab's Idempotency-Key")
    webhook: str
    attempt_id: int = Field(description="the platform's id of the failed attempt asked about")
    attempts: int = Field(description="how many times Arbiter asked for this delivery")
    state: Literal["requested", "accepted", "refused"]
    requested_at: dt.datetime
    error: str | None


class RecoveryState(ApiModel):
    redelivery: RecoveryPass
    reconcile: RecoveryPass
    redeliveries: list[RedeliveryRequest] = Field(
        description="the most recent redelivery requests, newest first"
    )


async def recovery_state(call: Call) -> RecoveryState:
    runtime = call.runtime
    settings, store = runtime.settings, runtime.store
    runs = {run.name: run for run in await store.pass_runs()}
    found, off = webhooks(settings, runtime.github, runtime.gitlab)
    known = await store.known_repositories()
    by_platform = {p: sum(1 for r in known if r.platform == p) for p in ("github", "gitlab")}
    repos = [f"{n} {p} repositor{'y' if n == 1 else 'ies'}" for p, n in by_platform.items() if n]
    recent = await store.redelivery_records(limit=RECENT_REDELIVERIES)
    return RecoveryState(
        redelivery=_pass(
            REDELIVERY,
            settings.redelivery_interval_seconds,
            runs.get(REDELIVERY),
            call.now,
            covers=[w.label for w in found],
            off=off,
            metric="arbiter_redeliveries_requested_total",
        ),
        reconcile=_pass(
            RECONCILE,
            settings.reconcile_interval_seconds,
            runs.get(RECONCILE),
            call.now,
            covers=repos,
            off=[],
            metric="arbiter_reconcile_reviews_scheduled_total",
        ),
        redeliveries=[_request(r) for r in recent],
    )


def _pass(
    name: Literal["redelivery", "reconcile"],
    interval: float,
    run: PassRun | None,
    now: float,
    *,
    covers: list[str],
    off: list[str],
    metric: str,
) -> RecoveryPass:
    enabled = interval > 0
    running = bool(run and run.holder and run.lease_until and run.lease_until > now)
    due: float | None = None
    if enabled:
        due = run.finished_at + interval if run and run.finished_at is not None else now
    summary = PassSummary.model_validate(
        {k: v for k, v in (run.summary if run else {}).items() if k in PassSummary.model_fields}
    )
    return RecoveryPass(
        name=name,
        enabled=enabled,
        interval_seconds=interval,
        covers=covers,
        off=off,
        running=running,
        last_started_at=_time(run.started_at if run else None),
        last_finished_at=_time(run.finished_at if run else None),
        next_due_at=_time(due),
        last_run=summary if run and run.finished_at is not None else None,
        total=run.total if run else 0,
        metric=metric,
    )


def _request(record: RedeliveryRecord) -> RedeliveryRequest:
    return RedeliveryRequest(
        platform=record.platform,
        delivery_id=record.guid,
        webhook=record.source,
        attempt_id=record.attempt_id,
        attempts=record.attempts,
        state=record.state,
        requested_at=dt.datetime.fromtimestamp(record.requested_at, dt.UTC),
        error=record.error,
    )


def _time(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


RECOVERY_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/recovery",
        "getRecovery",
        "Redelivery of failed webhook deliveries and the reconcile sweep: coverage, last runs, "
        "totals, and the latest redelivery requests",
        recovery_state,
        RecoveryState,
        role="read",
        tags=("jobs",),
    ),
)
