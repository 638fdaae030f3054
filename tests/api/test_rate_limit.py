"""A per-client rate limit on /api: the 61st request in a minute is refused, with the headers
that say when to come back. The clock is the test's: nothing waits."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bot.api.ratelimit import RateLimiter
from bot.app import create_app
from bot.runtime import Runtime
from config.settings import load_settings
from tests.api.conftest import ADMIN, READ, MakeApi, bearer
from tests.conftest import FakeClock


async def test_the_61st_request_in_a_minute_is_429(make_api: MakeApi) -> None:
    api = await make_api(seeded=False)  # ARBITER_API_RATE_LIMIT_PER_MINUTE: 60 by default
    for n in range(60):
        answer = await api.get("/api/reviews")
        assert answer.status == 200, n
        assert answer.headers["X-RateLimit-Limit"] == "60"
        assert answer.headers["X-RateLimit-Remaining"] == str(59 - n)
        api.clock.advance(0.5)  # 60 requests over 30 seconds
    refused = await api.get("/api/reviews")
    assert refused.status == 429
    body = await refused.json()
    assert (
        body["error"] == "rate_limited" and "ARBITER_API_RATE_LIMIT_PER_MINUTE" in body["message"]
    )
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["Retry-After"] == "30"  # the first request stops counting then
    assert refused.headers["X-RateLimit-Reset"] == "30"

    # Another client (another token) has its own allowance.
    assert (await api.get("/api/reviews", token=ADMIN)).status == 200

    api.clock.advance(29.9)
    assert (await api.get("/api/reviews")).status == 429
    api.clock.advance(0.2)  # the first request is now more than 60 s old
    assert (await api.get("/api/reviews")).status == 200
    assert (await api.get("/api/reviews")).status == 429  # the second is not yet


async def test_anonymous_clients_are_limited_by_address(make_api: MakeApi) -> None:
    api = await make_api(seeded=False, api_rate_limit_per_minute=3)
    for _ in range(3):
        assert (await api.get("/api/reviews", token=None)).status == 401
    assert (await api.get("/api/reviews", token="x" * 20)).status == 429  # guessing costs too
    # A valid token is its own client, whatever the address.
    assert (await api.get("/api/reviews", token=READ)).status == 200


async def test_refusals_do_not_extend_the_wait(make_api: MakeApi) -> None:
    api = await make_api(seeded=False, api_rate_limit_per_minute=2)
    assert (await api.get("/api/me")).status == 200
    assert (await api.get("/api/me")).status == 200
    for _ in range(5):
        api.clock.advance(10)
        assert (await api.get("/api/me")).status == 429
    api.clock.advance(10.1)
    assert (await api.get("/api/me")).status == 200


async def test_webhooks_health_and_the_dashboard_are_not_limited(tmp_path: Any) -> None:
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/limits.db",
        api_tokens=f"{READ}:read",
        api_rate_limit_per_minute=1,
        github_webhook_secret="limit-secret",
        github_token="ghp_limit",
    )
    runtime = Runtime(settings)
    await runtime.start()
    client = TestClient(TestServer(create_app(runtime)))
    await client.start_server()
    try:
        for _ in range(5):
            for path in ("/health", "/health/live", "/health/ready", "/", "/app.js"):
                answer = await client.get(path)
                assert answer.status == 200, path
                assert "X-RateLimit-Limit" not in answer.headers
            # Unsigned: refused for that, never for the rate.
            hook = await client.post("/webhooks/github", data=b"{}")
            assert hook.status == 401
        assert (await client.get("/api/me", headers=bearer(READ))).status == 200
        assert (await client.get("/api/me", headers=bearer(READ))).status == 429
    finally:
        await client.close()
        await runtime.close()


def test_the_window_slides() -> None:
    clock = FakeClock(1000.0)
    limiter = RateLimiter(3, 60.0, clock=clock)
    assert [limiter.hit("a").allowed for _ in range(3)] == [True, True, True]
    clock.advance(30)
    assert limiter.hit("a").allowed is False  # 3 in the last 60 s, however the minute is cut
    clock.advance(30)
    verdict = limiter.hit("a")  # the first three have aged out together
    assert verdict.allowed and verdict.remaining == 2


def test_the_headers_say_when_to_come_back() -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(1, 60.0, clock=clock)
    first = limiter.hit("a")
    assert first.headers() == {
        "X-RateLimit-Limit": "1",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "60",
    }
    clock.advance(59.5)
    refused = limiter.hit("a")
    assert not refused.allowed
    assert refused.headers()["Retry-After"] == "1"  # never 0: a 0 invites a busy loop


def test_the_least_recently_seen_client_is_forgotten_past_the_cap() -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(1, 60.0, clock=clock, max_clients=2)
    limiter.hit("a")
    limiter.hit("b")
    assert not limiter.hit("a").allowed  # "a" is now the most recently seen
    limiter.hit("c")  # "b" goes
    assert limiter.hit("b").allowed
    assert not limiter.hit("c").allowed
