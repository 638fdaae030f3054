"""The alert rules (and their unit tests, and docs/deployment.md) speak of metrics, labels and
label values that `/metrics` really exposes; promtool checks the rules where it is installed."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bot.app import create_app
from bot.events import Platform as EventPlatform
from bot.metrics import PoolUsage
from bot.runtime import Runtime
from config.settings import load_settings
from tests.deploy import project

ALERTS = project.PROMETHEUS / "alerts.yml"
ALERT_TESTS = project.PROMETHEUS / "alerts.test.yml"
WEBHOOKS_SOURCE = project.ROOT / "bot" / "webhooks.py"
# Labels Prometheus adds to every scraped series, and the one series it makes itself.
TARGET_LABELS = {"job", "instance"}
PROMETHEUS_SERIES = {"up"}


@dataclass
class Exposed:
    """What /metrics exposes: queryable series names → label → the values seen."""

    series: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    families: set[str] = field(default_factory=set)  # documented names (counters with _total)
    # (series, label) whose every possible value is in `series` (others, like `event`, are open)
    closed: set[tuple[str, str]] = field(default_factory=set)


def _webhook_outcomes() -> set[str]:
    """Every `outcome` bot/webhooks.py can count: `_count(…, "x")` and `Rejected(…, "x")`."""
    outcomes = set()
    for node in ast.walk(ast.parse(WEBHOOKS_SOURCE.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or len(node.args) < 3:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else None
        name = node.func.id if isinstance(node.func, ast.Name) else name
        third = node.args[2]
        if name in {"_count", "Rejected"} and isinstance(third, ast.Constant):
            outcomes.add(str(third.value))
    return outcomes


@pytest.fixture
async def exposed(tmp_path: Path) -> Exposed:
    runtime = Runtime(load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/metrics.db"))
    await runtime.start()
    client = TestClient(TestServer(create_app(runtime)))
    await client.start_server()
    try:
        # One refused delivery gives arbiter_webhooks_total a sample with its labels; the pool
        # gauges are what the PostgreSQL store reports (test_pool_gauges_on_postgresql).
        await client.post("/webhooks/github", data=b"{}")
        runtime.metrics.set_pool(PoolUsage(in_use=2, idle=3, limit=15))
        response = await client.get("/metrics")
        assert response.status == 200
        text = await response.text()
    finally:
        await client.close()
        await runtime.close()
    found = Exposed()
    for family in text_string_to_metric_families(text):
        names = {
            "counter": [f"{family.name}_total"],
            "histogram": [family.name, *(f"{family.name}_{s}" for s in ("bucket", "sum", "count"))],
        }.get(family.type, [family.name])
        found.families.add(names[0])
        for name in names:
            found.series.setdefault(name, {})
        for sample in family.samples:
            labels = found.series.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    webhooks = found.series["arbiter_webhooks_total"]
    webhooks.setdefault("outcome", set()).update(_webhook_outcomes())
    webhooks.setdefault("platform", set()).update(get_args(EventPlatform))
    found.closed = {
        ("arbiter_webhooks_total", "outcome"),
        ("arbiter_webhooks_total", "platform"),
        ("arbiter_jobs", "state"),  # /metrics sets every state, zero or not
        ("arbiter_db_pool_connections", "state"),
    }
    return found


# --- Reading PromQL ----------------------------------------------------------------------------

_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]


def selectors(expr: str) -> list[Selector]:
    """The series selectors of a PromQL expression: Arbiter's metrics and Prometheus's `up`."""
    found = []
    for match in _SELECTOR.finditer(expr):
        name = match[1]
        if name.startswith("arbiter_") or name in PROMETHEUS_SERIES:
            found.append(Selector(name, tuple(_MATCHER.findall(match[2] or ""))))
    return found


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",")}


def _rules() -> list[dict[str, Any]]:
    return [rule for group in project.load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert, and every series of the alerts' unit tests."""
    found = [(f"alert {rule['alert']}", str(rule["expr"])) for rule in _rules()]
    for test in project.load_yaml(ALERT_TESTS)["tests"]:
        for series in test.get("input_series", []):
            found.append((f"alerts.test.yml {test['name']!r}", str(series["series"])))
    return found


def _check(where: str, expr: str, exposed: Exposed) -> list[str]:
    problems = []
    used = selectors(expr)
    if not used:
        problems.append(f"{where}: no metric found in {expr!r}")
    for selector in used:
        if selector.metric in PROMETHEUS_SERIES:
            continue
        if selector.metric not in exposed.series:
            problems.append(f"{where}: {selector.metric} is not exposed by /metrics")
            continue
        labels = exposed.series[selector.metric]
        for label, op, value in selector.matchers:
            if label in TARGET_LABELS:
                continue
            if label not in labels:
                problems.append(f"{where}: {selector.metric} has no label {label!r}")
            elif (selector.metric, label) in exposed.closed:
                values = [value] if op in {"=", "!="} else value.split("|")
                for alternative in values:
                    if alternative not in labels[label]:
                        problems.append(
                            f"{where}: {selector.metric}{{{label}={alternative!r}}} never occurs"
                        )
    known = TARGET_LABELS | {
        label for s in used if s.metric in exposed.series for label in exposed.series[s.metric]
    }
    for label in grouping_labels(expr) - known:
        problems.append(f"{where}: groups by {label!r}, which no metric of it carries")
    return problems


def test_alerts_use_only_exposed_metrics_labels_and_values(exposed: Exposed) -> None:
    expressions = _expressions()
    assert len([w for w, _ in expressions if w.startswith("alert ")]) >= 4
    problems = [p for where, expr in expressions for p in _check(where, expr, exposed)]
    assert not problems, "\n".join(problems)


def test_the_guides_alerts_are_all_there() -> None:
    exprs = " ".join(str(rule["expr"]) for rule in _rules())
    for metric in (
        "arbiter_webhooks_total",  # error rate on the webhook endpoints
        "arbiter_jobs",  # queue depth
        "arbiter_cost_usd_today",  # daily LLM cost …
        "arbiter_daily_budget_usd",  # … against ARBITER_DAILY_BUDGET_USD
        "arbiter_db_pool_connections",  # database pool exhaustion
    ):
        assert metric in exprs, f"no alert uses {metric}"


def test_alerts_select_the_scrape_job_prometheus_runs() -> None:
    jobs = {
        job["job_name"]
        for config in ("prometheus.yml", "prometheus-kubernetes.yml")
        for job in project.load_yaml(project.PROMETHEUS / config)["scrape_configs"]
    }
    for rule in _rules():
        for selector in selectors(str(rule["expr"])):
            for label, _, value in selector.matchers:
                if label == "job":
                    assert value in jobs, f"{rule['alert']}: job={value!r} is never scraped"
    for config in ("prometheus.yml", "prometheus-kubernetes.yml"):
        assert project.load_yaml(project.PROMETHEUS / config)["rule_files"] == ["alerts.yml"]


def test_docs_name_only_exposed_metrics_and_every_one_of_them(exposed: Exposed) -> None:
    text = project.DEPLOYMENT_DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"\barbiter_[a-z0-9_]*[a-z0-9]\b", text))
    unknown = sorted(n for n in named if n not in exposed.series)
    undocumented = sorted(exposed.families - named)
    assert not unknown, f"docs/deployment.md names metrics /metrics does not expose: {unknown}"
    assert not undocumented, f"docs/deployment.md does not document {undocumented}"


async def test_pool_gauges_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    runtime = Runtime(
        load_settings(database_url=postgres_url, database_pool_size=4, database_max_overflow=3)
    )
    await runtime.start(migrate=True)
    client = TestClient(TestServer(create_app(runtime)))
    await client.start_server()
    try:
        response = await client.get("/metrics")
        text = await response.text()
    finally:
        await client.close()
        await runtime.close()
    samples = {
        (s.name, s.labels.get("state", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("arbiter_db_pool_max_connections", "")] == 7
    assert samples[("arbiter_db_pool_connections", "idle")] >= 1  # the scrape's own, given back
    assert samples[("arbiter_db_pool_connections", "in_use")] == 0


# --- promtool, where it is installed -----------------------------------------------------------

PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: prometheus)")
@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
        ["check", "config", "prometheus.yml"],
    ],
    ids=" ".join,
)
def test_promtool(args: list[str]) -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], cwd=project.PROMETHEUS, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
