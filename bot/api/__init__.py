"""The operator API (`/api/…`, JSON, token-authenticated, rate-limited, described by OpenAPI
3.1 at `/api/openapi.json`) and the static dashboard that reads it (`/`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from bot.api.dashboard import add_dashboard_routes
from bot.api.server import API_PREFIX, build_api
from bot.runtime import Runtime

__all__ = ["API_PREFIX", "add_dashboard_and_api", "build_api"]


def add_dashboard_and_api(
    app: web.Application, runtime: Runtime, *, clock: Callable[[], float] = time.time
) -> None:
    """Mount the API at /api and the dashboard at /. `clock` (UNIX seconds) drives the rate
    limit and what "today" is; tests pass their own."""
    app.add_subapp(API_PREFIX, build_api(runtime, clock=clock))
    add_dashboard_routes(app)
