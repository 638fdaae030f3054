"""`arbiter serve` as real processes: what start-up and readiness say of the model and of a
mistyped setting, and the API rate limit shared by two web processes through one Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.serve import ServeProcess
from tests.redis_server import redis_prefix, redis_url

__all__ = ["redis_prefix", "redis_url"]

pytestmark = pytest.mark.e2e

TOKEN = "e2e-api-token-0123456789"


def _records(server: ServeProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


async def test_start_up_names_what_is_missing_and_what_is_mistyped(tmp_path: Path) -> None:
    env = {"ARBITER_GITHUB_TOKN": "ghp_typo", "ARBITER_DEFAULT_MODEL": "claude-sonnet-4-6"}
    async with (
        ServeProcess(tmp_path, env) as server,
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}/health/ready") as response,
    ):
        assert response.status == 200  # degraded, not down: the pod stays in service
        body = await response.json()
    assert body["status"] == "degraded" and body["llm"] == "not configured"
    assert body["model"] == "anthropic:claude-sonnet-4-6"
    assert any("set ANTHROPIC_API_KEY" in problem for problem in body["problems"])
    records = _records(server)
    (model,) = [r for r in records if r.get("msg", "").startswith("no model configured")]
    assert "set ANTHROPIC_API_KEY" in model["missing"]
    (typo,) = [r for r in records if r.get("variable") == "ARBITER_GITHUB_TOKN"]
    assert typo["closest"] == "ARBITER_GITHUB_TOKEN"
    assert "ghp_typo" not in server.log()


async def _hits_until_refused(servers: list[ServeProcess], most: int) -> int:
    """Requests to the API, taking turns between the servers, until one answers 429."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        for n in range(most):
            server = servers[n % len(servers)]
            async with http.get(f"{server.url}/api/me", headers=headers) as response:
                if response.status == 429:
                    return n
                assert response.status == 200, await response.text()
    return most


def _env(tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    return {
        "ARBITER_DATABASE_URL": f"sqlite:///{tmp_path}/{name}.db",
        "ARBITER_API_TOKENS": f"{TOKEN}:read",
        "ARBITER_API_RATE_LIMIT_PER_MINUTE": "4",
        **extra,
    }


async def test_two_web_processes_share_the_api_rate_limit_through_redis(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    shared = {"ARBITER_REDIS_URL": redis_url, "ARBITER_REDIS_KEY_PREFIX": redis_prefix}
    one = ServeProcess(tmp_path, _env(tmp_path, "one", **shared), args=("--no-workers",))
    two = ServeProcess(tmp_path, _env(tmp_path, "two", **shared), args=("--no-workers",))
    async with one, two:
        assert await _hits_until_refused([one, two], 10) == 4  # not 4 each
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{two.url}/health/ready") as response,
        ):
            assert (await response.json())["redis"] == "ok"
    assert any(r.get("msg") == "api rate limit shared through redis" for r in _records(one))


async def test_without_redis_each_web_process_still_limits(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, _env(tmp_path, "alone"), args=("--no-workers",))
    async with server:
        assert await _hits_until_refused([server], 10) == 4
