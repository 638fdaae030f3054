"""CORS from ARBITER_CORS_ORIGINS: listed origins get the headers, others get none."""

from __future__ import annotations

from typing import Any

import pytest

from bot.api.cors import CorsPolicy
from tests.api.conftest import ADMIN, DASHBOARD, READ, MakeApi

CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Allow-Credentials",
    "Access-Control-Max-Age",
)


def _cors(headers: Any) -> dict[str, str]:
    return {k: v for k, v in dict(headers).items() if k in CORS_HEADERS}


async def test_a_listed_origin_gets_cors_headers_and_no_credentials(make_api: MakeApi) -> None:
    api = await make_api(seeded=False)
    answer = await api.get("/api/reviews", headers={"Origin": DASHBOARD})
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert "X-RateLimit-Remaining" in answer.headers["Access-Control-Expose-Headers"]
    assert "Retry-After" in answer.headers["Access-Control-Expose-Headers"]
    assert "Origin" in answer.headers.getall("Vary")
    assert "Access-Control-Allow-Credentials" not in answer.headers
    # Refusals carry them too, or the page could not read why it was refused.
    refused = await api.get("/api/reviews", token=None, headers={"Origin": DASHBOARD})
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == DASHBOARD


async def test_an_origin_outside_the_list_gets_no_cors_headers(make_api: MakeApi) -> None:
    api = await make_api(seeded=False)
    for token in (READ, None):
        answer = await api.get("/api/reviews", token=token, headers={"Origin": "https://evil.test"})
        assert _cors(answer.headers) == {}
    # A look-alike is not the listed origin.
    near = await api.get("/api/reviews", headers={"Origin": "http://localhost:3000.evil.test"})
    assert _cors(near.headers) == {}


async def test_a_preflight_is_answered_for_listed_origins_only(make_api: MakeApi) -> None:
    api = await make_api(seeded=False)
    preflight = {"Origin": DASHBOARD, "Access-Control-Request-Method": "POST"}
    preflight["Access-Control-Request-Headers"] = "authorization"
    answer = await api.client.options("/api/jobs/1/retry", headers=preflight)
    assert answer.status == 204
    assert _cors(answer.headers) == {
        "Access-Control-Allow-Origin": DASHBOARD,
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
    }
    # Preflights carry no token and are not counted against the rate limit.
    assert "X-RateLimit-Remaining" not in answer.headers

    evil = await api.client.options(
        "/api/jobs/1/retry",
        headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"},
    )
    assert evil.status == 403 and _cors(evil.headers) == {}
    assert "ARBITER_CORS_ORIGINS" in (await evil.json())["message"]


async def test_a_wildcard_allows_any_origin_as_a_wildcard(make_api: MakeApi) -> None:
    api = await make_api(seeded=False, cors_origins='["*"]')
    answer = await api.get("/api/reviews", token=ADMIN, headers={"Origin": "https://any.test"})
    assert answer.headers["Access-Control-Allow-Origin"] == "*"  # never the origin reflected
    assert "Access-Control-Allow-Credentials" not in answer.headers


@pytest.mark.parametrize(
    ("listed", "origin", "allowed"),
    [
        (["https://dash.example.com"], "https://dash.example.com", "https://dash.example.com"),
        (["https://Dash.Example.com/"], "https://dash.example.com", "https://dash.example.com"),
        (["https://dash.example.com"], "http://dash.example.com", None),
        (["https://dash.example.com"], "https://dash.example.com:8443", None),
        (["https://dash.example.com"], None, None),
        ([], "https://dash.example.com", None),
        (["*"], "https://x.test", "*"),
    ],
)
def test_the_policy(listed: list[str], origin: str | None, allowed: str | None) -> None:
    assert CorsPolicy(listed).allowed(origin) == allowed
