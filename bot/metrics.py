"""Prometheus metrics. One `Metrics` per runtime, on its own registry, passed explicitly."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

REVIEW_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600)


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

    def set_job_counts(self, counts: Mapping[str, int]) -> None:
        for state, n in counts.items():
            self.jobs.labels(state=state).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
