"""An in-process Arbiter over a seeded SQLite store, its API clock in the test's hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.api import add_dashboard_and_api
from bot.runtime import Runtime
from bot.store.sql import SQLStore
from config.settings import load_settings
from tests.api.seed import Seeded, seed
from tests.conftest import FakeClock

READ = "read-token-5f2c9d1e7a"
ADMIN = "admin-token-8b3e6a0f4c"
TOKENS = f"{READ}:read,{ADMIN}:admin"
DASHBOARD = "http://localhost:3000"  # the default of ARBITER_CORS_ORIGINS


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    client: TestClient[Any, Any]
    runtime: Runtime
    store: SQLStore
    clock: FakeClock
    seeded: Seeded | None
    notified: list[None]

    async def get(self, path: str, token: str | None = READ, **kwargs: Any) -> Any:
        headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
        return await self.client.get(path, headers=headers, **kwargs)

    async def post(self, path: str, token: str | None = ADMIN, **kwargs: Any) -> Any:
        headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
        return await self.client.post(path, headers=headers, **kwargs)


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MakeApi]:
    """`await make_api(seeded=True, **settings)`: the API and dashboard on a fresh store."""
    opened: list[tuple[TestClient[Any, Any], SQLStore]] = []

    async def make(*, seeded: bool = True, **overrides: Any) -> Api:
        n = len(opened)
        settings = load_settings(
            **{
                "database_url": f"sqlite+aiosqlite:///{tmp_path}/api-{n}.db",
                "api_tokens": TOKENS,
                **overrides,
            }
        )
        store = SQLStore(settings.database_url, clock=clock)
        await store.open()
        await store.migrate()
        facts = await seed(store, clock) if seeded else None
        runtime = Runtime(settings, store=store)
        notified: list[None] = []
        runtime.notify_worker = lambda **_: notified.append(None)  # type: ignore[method-assign]
        app = web.Application()
        add_dashboard_and_api(app, runtime, clock=clock)
        client = TestClient(TestServer(app))
        await client.start_server()
        opened.append((client, store))
        return Api(client, runtime, store, clock, facts, notified)

    yield make
    for client, store in opened:
        await client.close()
        await store.close()
