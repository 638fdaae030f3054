"""The HTTP surface: webhooks, health, metrics, the operator API and dashboard. One aiohttp
application per process."""

from __future__ import annotations

import asyncio
import functools
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot import __version__
from bot.api import add_dashboard_and_api
from bot.core.budget import utc_day_start
from bot.llm.status import model_status
from bot.metrics import ReportsPool
from bot.runtime import Runtime
from bot.setup import add_setup_routes
from bot.store import StoreUnavailable
from bot.webhooks import WebhookReceiver

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
READY_TIMEOUT = 3.0


def create_app(runtime: Runtime) -> web.Application:
    # Webhooks read their bodies themselves, within ARBITER_MAX_WEBHOOK_BYTES as inflated
    # (bot/webhook_body.py): aiohttp must not inflate them first, nor inflate what is left of a
    # refused one while draining its connection.
    app = web.Application(handler_args={"auto_decompress": False})
    app[RUNTIME] = runtime
    receiver = WebhookReceiver(
        lambda: runtime.settings,  # read per delivery: /setup can switch credentials live
        runtime.store,
        runtime.router,
        runtime.metrics,
        on_enqueued=functools.partial(runtime.notify_worker, delivery=True),
    )
    app.router.add_post("/webhooks/github", receiver.github)
    app.router.add_post("/webhooks/gitlab", receiver.gitlab)
    app.router.add_get("/health", live)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    add_dashboard_and_api(app, runtime)  # /api/… (index at /api/) and the dashboard at /
    add_setup_routes(app, runtime)  # /setup and /setup/callback, open until an App is set up
    return app


def create_worker_app(runtime: Runtime) -> web.Application:
    """What `arbiter worker` serves: health and metrics, for probes and Prometheus (a worker
    process counts the reviews, LLM calls and cost it runs; only it can report them)."""
    app = web.Application()
    app[RUNTIME] = runtime
    app.router.add_get("/health", live)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app


async def live(request: web.Request) -> web.Response:
    """The process is up and serving HTTP."""
    return web.json_response({"status": "ok", "version": __version__})


async def ready(request: web.Request) -> web.Response:
    """Ready when the store answers: without it no delivery can be accepted (503).

    What works without being ready for everything is "degraded", still 200, so an orchestrator
    keeps the process that takes the deliveries: no model configured (reviews would fail; the
    detail says what to set), Redis unreachable (the API rate limit falls back to this process).
    """
    runtime = request.app[RUNTIME]
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await runtime.store.ping()
    except (StoreUnavailable, TimeoutError) as exc:
        return web.json_response(
            {"status": "unavailable", "store": str(exc) or "timed out"}, status=503
        )
    model = model_status(runtime.settings)
    problems = [] if model.problem is None else [f"llm: {model.problem}"]
    body: dict[str, object] = {
        "status": "ready",
        "store": runtime.store.backend,
        "llm": "configured" if model.configured else "not configured",
        "model": f"{model.provider}:{model.name}",
        "platforms": {name: s.enabled for name, s in runtime.platforms.items()},
    }
    if runtime.redis is not None:
        redis = await runtime.redis_problem()
        body["redis"] = "ok" if redis is None else "unavailable"
        if redis is not None:
            problems.append(f"redis: {redis}; the API rate limit is counted per process")
    if problems:
        body["status"] = "degraded"
        body["problems"] = problems
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    runtime.metrics.daily_budget.set(runtime.settings.daily_budget_usd)
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            counts = await runtime.store.job_counts()
            spent_today = await runtime.store.spent_since(utc_day_start(time.time()))
    except (StoreUnavailable, TimeoutError):
        runtime.metrics.store_up.set(0)
    else:
        runtime.metrics.store_up.set(1)
        runtime.metrics.set_job_counts(counts)
        runtime.metrics.cost_today.set(spent_today)
    if isinstance(runtime.store, ReportsPool) and (usage := runtime.store.pool_usage()):
        runtime.metrics.set_pool(usage)
    return web.Response(
        body=runtime.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
