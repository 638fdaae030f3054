"""The API rate limit through Redis: one allowance for every process that shares it, the same
sliding window as in one process, and this process's own count while Redis does not answer."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from bot.api.ratelimit import ApiRateLimit
from bot.app import create_app
from bot.logs import configure_logging
from bot.runtime import Runtime
from config.settings import load_settings
from tests.conftest import FakeClock, free_port
from tests.redis_server import redis_prefix, redis_url

__all__ = ["redis_prefix", "redis_url"]


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[Redis]]:
    made: list[Redis] = []
    yield made
    for client in made:
        await client.aclose()


def _client(url: str, made: list[Redis]) -> Redis:
    client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    made.append(client)
    return client


async def test_processes_sharing_redis_share_one_allowance(
    redis_url: str, redis_prefix: str, clients: list[Redis], clock: FakeClock
) -> None:
    # Two web processes: each with its own client, the same server and prefix.
    one = ApiRateLimit(3, redis=_client(redis_url, clients), prefix=redis_prefix, clock=clock)
    two = ApiRateLimit(3, redis=_client(redis_url, clients), prefix=redis_prefix, clock=clock)
    assert one.shared and two.shared
    verdicts = []
    for limiter in (one, two, one):
        verdicts.append(await limiter.hit("token-1"))
        clock.advance(10)
    assert [v.allowed for v in verdicts] == [True, True, True]
    assert [v.remaining for v in verdicts] == [2, 1, 0]
    refused = await two.hit("token-1")
    assert not refused.allowed
    assert refused.headers()["Retry-After"] == "30"  # the first request ages out in 30 s
    assert (await one.hit("token-2")).allowed  # another client has its own allowance
    clock.advance(30.1)
    allowed = await two.hit("token-1")
    assert allowed.allowed and allowed.remaining == 0  # only the first aged out
    assert not (await one.hit("token-1")).allowed


async def test_refusals_do_not_extend_the_wait(
    redis_url: str, redis_prefix: str, clients: list[Redis], clock: FakeClock
) -> None:
    limiter = ApiRateLimit(2, redis=_client(redis_url, clients), prefix=redis_prefix, clock=clock)
    assert (await limiter.hit("a")).allowed and (await limiter.hit("a")).allowed
    for _ in range(5):
        clock.advance(10)
        assert not (await limiter.hit("a")).allowed
    clock.advance(10.1)
    assert (await limiter.hit("a")).allowed


async def test_without_an_answer_from_redis_the_process_counts_alone(
    clients: list[Redis], clock: FakeClock
) -> None:
    stream = io.StringIO()
    configure_logging(load_settings(log_format="json"), stream=stream)
    gone = _client(f"redis://127.0.0.1:{free_port()}/0", clients)  # nothing listens there
    limiter = ApiRateLimit(2, redis=gone, clock=clock)
    verdicts = [await limiter.hit("a") for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]  # still limited, locally
    warnings = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(warnings) == 1  # once, not once per request
    assert warnings[0]["setting"] == "ARBITER_REDIS_URL"


async def _app(tmp_path: Path, **settings: Any) -> tuple[TestClient[Any, Any], Runtime]:
    runtime = Runtime(load_settings(database_url=f"sqlite:///{tmp_path}/r.db", **settings))
    await runtime.start()
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(runtime)))
    await client.start_server()
    return client, runtime


async def test_readiness_reports_redis(redis_url: str, tmp_path: Path) -> None:
    client, runtime = await _app(tmp_path, redis_url=redis_url, OPENAI_API_KEY="sk-x")
    try:
        body = await (await client.get("/health/ready")).json()
    finally:
        await client.close()
        await runtime.close()
    assert body["redis"] == "ok" and body["status"] == "ready"


async def test_readiness_says_degraded_when_redis_is_down(tmp_path: Path) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    client, runtime = await _app(tmp_path, redis_url=down, OPENAI_API_KEY="sk-x")
    try:
        answer = await client.get("/health/ready")
        body = await answer.json()
        api = await client.get("/api/me")  # the API still answers, limited per process
    finally:
        await client.close()
        await runtime.close()
    assert answer.status == 200
    assert body["status"] == "degraded" and body["redis"] == "unavailable"
    assert any(p.startswith("redis: ") for p in body["problems"])
    assert api.status == 403 and api.headers["X-RateLimit-Limit"] == "60"
