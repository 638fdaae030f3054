"""schemathesis against /api/openapi.json: every operation, valid and invalid requests, no 5xx,
every answer as the document says (status, content type, headers, schema), auth not ignored.

The server is the real application (`create_app`) over a seeded SQLite store, in a thread of
its own, since schemathesis calls it synchronously. Deterministic: Hypothesis derandomized,
no example database, a bounded number of examples.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from bot.api.views import OPERATIONS
from bot.app import create_app
from bot.runtime import Runtime
from bot.store.sql import SQLStore
from config.settings import load_settings
from tests.api.conftest import ADMIN, TOKENS
from tests.api.seed import seed
from tests.conftest import FakeClock, free_port

AUTH = {"Authorization": f"Bearer {ADMIN}"}
EXAMPLES = 50  # per operation and mode


class ThreadedServer:
    """An aiohttp application served from a thread with its own event loop."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._store: SQLStore | None = None

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(60)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        settings_ = load_settings(
            database_url=f"sqlite+aiosqlite:///{self.database}",
            api_tokens=TOKENS,
            api_rate_limit_per_minute=1_000_000,  # the fuzzer is one very busy client
            daily_budget_usd=1.0,
        )
        clock = FakeClock(time.time())
        self._store = SQLStore(settings_.database_url, clock=clock)
        await self._store.open()
        await self._store.migrate()
        await seed(self._store, clock)
        runtime = Runtime(settings_, store=self._store)
        self._runner = web.AppRunner(create_app(runtime), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._store is not None:
            await self._store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with ThreadedServer(tmp_path_factory.mktemp("schemathesis") / "api.db") as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(server: ThreadedServer) -> Any:
    """The document as the server serves it, at /api/openapi.json."""
    return schemathesis.openapi.from_url(f"{server.url}/api/openapi.json")


# (schemathesis.pytest.from_fixture would do this, but it reads a pytest attribute that
# pytest 9 no longer has: each operation and mode is parametrized here instead.)
def _cases() -> list[Any]:
    cases = []
    for op in OPERATIONS:
        cases.append(pytest.param(op.operation_id, GenerationMode.POSITIVE, id=op.operation_id))
        if op.query is not None or op.path_model is not None:
            name = f"{op.operation_id}-invalid"
            cases.append(pytest.param(op.operation_id, GenerationMode.NEGATIVE, id=name))
    cases.append(pytest.param("getOpenApi", GenerationMode.POSITIVE, id="getOpenApi"))
    return cases


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    fuzzed = {c.values[0] for c in _cases()}
    # (It lists every operation but the document's own, which it finds all the same.)
    listed = {r.ok().label for r in api_schema.get_all_operations()}
    found = {api_schema.find_operation_by_id(operation_id).label for operation_id in fuzzed}
    assert listed <= found and len(found) == len(fuzzed) == 10


@pytest.mark.parametrize(("operation_id", "mode"), _cases())
def test_the_api_keeps_its_openapi_document(
    api_schema: Any, operation_id: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_id(operation_id)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def holds(case: Any) -> None:
        case.call_and_validate(headers=AUTH)

    holds()


def test_the_seeded_records_answer_as_documented(api_schema: Any) -> None:
    """Found, not only missing: the seed's review 1 and dead job 1 (retried once, then 409)."""
    for operation_id in ("getReview", "retryJob", "retryJob"):
        operation = api_schema.find_operation_by_id(operation_id)
        case = operation.Case(path_parameters={"id": 1})
        response = case.call_and_validate(headers=AUTH)
        assert response.status_code in (200, 409)
