"""Prometheus metrics. One `Metrics` per runtime, on its own registry, passed explicitly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

REVIEW_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600)


@dataclass(frozen=True)
class PoolUsage:
    """A database connection pool at one moment: lent out, idle, and the most it may open."""

    in_use: int
    idle: int
    limit: int


@runtime_checkable
class ReportsPool(Protocol):
    """A store with a connection pool worth watching (PostgreSQL); others report nothing."""

    def pool_usage(self) -> PoolUsage | None: ...


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the `_created` series double every counter for no use here
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reviews = Counter(
            "arbiter_reviews_total", "Reviews processed", ["platform", "outcome"], registry=r
        )
        self.review_duration = Histogram(
            "arbiter_review_duration_seconds",
            "Review processing time",
            ["platform"],
            buckets=REVIEW_BUCKETS,
            registry=r,
        )
        self.llm_requests = Counter(
            "arbiter_llm_requests_total",
            "LLM API calls",
            ["provider", "model", "outcome"],
            registry=r,
        )
        self.llm_cache_hits = Counter(
            "arbiter_llm_cache_hits_total", "LLM responses served from the cache", registry=r
        )
        self.cost = Counter("arbiter_cost_usd_total", "LLM cost in US dollars", registry=r)
        self.webhooks = Counter(
            "arbiter_webhooks_total",
            "Webhook deliveries by outcome",
            ["platform", "event", "outcome"],
            registry=r,
        )
        self.jobs = Gauge("arbiter_jobs", "Jobs in the queue by state", ["state"], registry=r)
        self.job_runs = Counter(
            "arbiter_job_runs_total",
            "Job attempts by outcome (done, retry, dead, released, lost)",
            ["kind", "outcome"],
            registry=r,
        )
        self.store_up = Gauge(
            "arbiter_store_up", "1 when the store answered the last scrape", registry=r
        )
        # Set at each scrape, for the alerts of deploy/prometheus/alerts.yml: the pool is this
        # process's; the cost comes from the store, so it counts what every process spent.
        self.db_pool = Gauge(
            "arbiter_db_pool_connections",
            "Database connections of this process by state (in_use, idle)",
            ["state"],
            registry=r,
        )
        self.db_pool_max = Gauge(
            "arbiter_db_pool_max_connections",
            "The most database connections this process may hold (pool size + max overflow)",
            registry=r,
        )
        self.cost_today = Gauge(
            "arbiter_cost_usd_today",
            "LLM cost in US dollars since 00:00 UTC, all processes, from the store",
            registry=r,
        )
        self.daily_budget = Gauge(
            "arbiter_daily_budget_usd", "ARBITER_DAILY_BUDGET_USD (0: no daily budget)", registry=r
        )
        # Recovery (bot/recovery/): what this process's passes did; the dashboard shows the
        # totals of every process, from the store.
        self.redeliveries_requested = Counter(
            "arbiter_redeliveries_requested_total",
            "Failed webhook deliveries Arbiter asked the platform to send again",
            ["platform"],
            registry=r,
        )
        self.reconcile_reviews_scheduled = Counter(
            "arbiter_reconcile_reviews_scheduled_total",
            "Reviews the reconcile sweep queued for pull requests whose head was never reviewed",
            ["platform"],
            registry=r,
        )
        for platform in ("github", "gitlab"):  # exposed as 0 from the start
            self.redeliveries_requested.labels(platform=platform)
            self.reconcile_reviews_scheduled.labels(platform=platform)

    def set_job_counts(self, counts: Mapping[str, int]) -> None:
        for state, n in counts.items():
            self.jobs.labels(state=state).set(n)

    def set_pool(self, usage: PoolUsage) -> None:
        self.db_pool.labels(state="in_use").set(usage.in_use)
        self.db_pool.labels(state="idle").set(usage.idle)
        self.db_pool_max.set(usage.limit)

    def render(self) -> bytes:
        return generate_latest(self.registry)
