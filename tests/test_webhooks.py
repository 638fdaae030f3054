"""The webhook endpoints in-process: every answer the framework-core issue lists."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from bot.context import Context
from bot.router import Router
from bot.runtime import Runtime
from bot.store.sql import SQLStore
from config.settings import load_settings
from tests.conftest import fixture_bytes, github_headers, gitlab_headers

SECRET = "it's-a-secret-to-everybody"
GL_TOKEN = "gitlab-hook-token"
OPENED = "github/webhooks/pull_request/opened.payload.json"
MR_OPEN = "gitlab/webhooks/merge_request.json"


def _router() -> Router:
    router = Router()

    @router.register("pull_request")
    @router.register("comment")
    async def record(ctx: Context) -> None:
        pass

    return router


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    opened: list[tuple[TestClient[Any, Any], Runtime]] = []

    async def make(**overrides: Any) -> tuple[TestClient[Any, Any], Runtime]:
        settings = load_settings(
            **{
                "database_url": f"sqlite+aiosqlite:///{tmp_path}/hooks.db",
                "github_webhook_secret": SECRET,
                "github_token": "ghp_test",
                "gitlab_webhook_token": GL_TOKEN,
                "gitlab_token": "glpat-test",
                **overrides,
            }
        )
        runtime = Runtime(settings, router=_router())
        await runtime.start()
        client = TestClient(TestServer(create_app(runtime)))
        await client.start_server()
        opened.append((client, runtime))
        return client, runtime

    yield make
    for client, runtime in opened:
        await client.close()
        await runtime.close()


async def _post_github(
    client: TestClient[Any, Any],
    body: bytes,
    *,
    event: str = "pull_request",
    delivery: str = "d-1",
    secret: str = SECRET,
    **header_overrides: str,
) -> Any:
    headers = {**github_headers(event, delivery, body, secret), **header_overrides}
    return await client.post("/webhooks/github", data=body, headers=headers)


async def test_signed_delivery_is_stored_before_the_answer(make_client: Any) -> None:
    client, runtime = await make_client()
    body = fixture_bytes(OPENED)
    response = await _post_github(client, body, delivery="abc-123")
    assert response.status == 202
    answer = await response.json()
    job = await runtime.store.get_job(answer["job_id"])
    assert job is not None and job.state == "queued" and job.delivery_id == "abc-123"
    assert json.loads(job.payload)["action"] == "opened"
    assert job.max_attempts == runtime.settings.worker_retry_attempts + 1


async def test_the_same_delivery_again_is_a_duplicate(make_client: Any) -> None:
    client, runtime = await make_client()
    body = fixture_bytes(OPENED)
    assert (await _post_github(client, body, delivery="dup")).status == 202
    again = await _post_github(client, body, delivery="dup")
    assert again.status == 200
    assert await again.json() == {"duplicate": True, "delivery_id": "dup"}
    assert len(await runtime.store.list_jobs()) == 1


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401, "does not match"),
        ({"X-Hub-Signature-256": ""}, 401, "missing X-Hub-Signature-256"),
        ({"X-Hub-Signature-256": "sha1=abc"}, 401, "sha256="),
        ({"X-GitHub-Event": ""}, 400, "missing X-GitHub-Event"),
        ({"X-GitHub-Delivery": ""}, 400, "missing X-GitHub-Delivery"),
    ],
)
async def test_bad_github_requests_store_nothing(
    make_client: Any, headers: dict[str, str], status: int, message: str
) -> None:
    client, runtime = await make_client()
    response = await _post_github(client, fixture_bytes(OPENED), **headers)
    assert response.status == status
    assert message in (await response.json())["error"]
    assert await runtime.store.list_jobs() == []
    assert not await runtime.store.seen_delivery("github", "d-1")


async def test_signed_with_another_secret_is_unauthorized(make_client: Any) -> None:
    client, runtime = await make_client()
    response = await _post_github(client, fixture_bytes(OPENED), secret="not-the-secret")
    assert response.status == 401
    assert await runtime.store.list_jobs() == []


async def test_malformed_json_is_a_bad_request(make_client: Any) -> None:
    client, _ = await make_client()
    response = await _post_github(client, b'{"action": "opened",')
    assert response.status == 400
    assert "not valid JSON" in (await response.json())["error"]
    response = await _post_github(client, b"[1, 2]")
    assert response.status == 400


async def test_a_body_over_the_limit_is_refused(make_client: Any) -> None:
    client, runtime = await make_client(max_webhook_bytes=4096)
    body = json.dumps({"action": "opened", "padding": "x" * 5000}).encode()
    response = await _post_github(client, body)
    assert response.status == 413
    assert await runtime.store.list_jobs() == []


async def test_an_unconfigured_platform_refuses_everything_naming_the_setting(
    tmp_path: Path, make_client: Any
) -> None:
    client, runtime = await make_client(github_webhook_secret=None, gitlab_token=None)
    response = await _post_github(client, fixture_bytes(OPENED))
    assert response.status == 403
    assert "ARBITER_GITHUB_WEBHOOK_SECRET" in (await response.json())["error"]
    response = await client.post(
        "/webhooks/gitlab",
        data=fixture_bytes(MR_OPEN),
        headers=gitlab_headers("Merge Request Hook", GL_TOKEN),
    )
    assert response.status == 403
    assert "ARBITER_GITLAB_TOKEN" in (await response.json())["error"]
    assert await runtime.store.list_jobs() == []


async def test_ping_and_unhandled_events(make_client: Any) -> None:
    client, runtime = await make_client()
    ping = await _post_github(
        client, fixture_bytes("github/webhooks/ping/with-app_id.payload.json"), event="ping"
    )
    assert ping.status == 200 and await ping.json() == {"pong": True}
    ignored = await _post_github(
        client,
        fixture_bytes("github/webhooks/check_run/rerequested.payload.json"),
        event="check_run",
    )
    assert ignored.status == 202
    assert await ignored.json() == {"ignored": True, "event": "check_run.rerequested"}
    assert await runtime.store.list_jobs() == []


async def test_form_encoded_github_deliveries_are_read(make_client: Any) -> None:
    client, runtime = await make_client()
    body = ("payload=" + quote(fixture_bytes(OPENED).decode())).encode()
    response = await _post_github(
        client, body, **{"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 202
    assert len(await runtime.store.list_jobs()) == 1


async def test_gitlab_token_and_idempotency_key(make_client: Any) -> None:
    client, runtime = await make_client()
    body = fixture_bytes(MR_OPEN)
    ok = await client.post(
        "/webhooks/gitlab", data=body, headers=gitlab_headers("Merge Request Hook", GL_TOKEN, "k-1")
    )
    assert ok.status == 202
    again = await client.post(
        "/webhooks/gitlab", data=body, headers=gitlab_headers("Merge Request Hook", GL_TOKEN, "k-1")
    )
    assert again.status == 200 and (await again.json())["duplicate"] is True
    wrong = await client.post(
        "/webhooks/gitlab", data=body, headers=gitlab_headers("Merge Request Hook", "nope", "k-2")
    )
    assert wrong.status == 401
    missing = await client.post(
        "/webhooks/gitlab", data=body, headers={"X-Gitlab-Event": "Merge Request Hook"}
    )
    assert missing.status == 401
    (job,) = await runtime.store.list_jobs()
    assert json.loads(job.payload)["name"] == "pull_request"


async def test_gitlab_retries_without_a_key_are_recognized_by_body(make_client: Any) -> None:
    client, runtime = await make_client()
    body = fixture_bytes(MR_OPEN)
    headers = gitlab_headers("Merge Request Hook", GL_TOKEN)
    assert (await client.post("/webhooks/gitlab", data=body, headers=headers)).status == 202
    assert (await client.post("/webhooks/gitlab", data=body, headers=headers)).status == 200
    assert len(await runtime.store.list_jobs()) == 1


async def test_a_store_that_is_down_answers_503_so_the_platform_retries(
    make_client: Any,
) -> None:
    _, runtime = await make_client()
    # Swap in a store whose server is not there (nothing listens on port 1).
    down = SQLStore("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    await down.open()
    runtime.store = down
    # The receiver holds the store it was built with: build an app on the dead one.
    dead_client = TestClient(TestServer(create_app(runtime)))
    await dead_client.start_server()
    try:
        response = await _post_github(dead_client, fixture_bytes(OPENED))
        assert response.status == 503
        assert response.headers["Retry-After"] == "30"
        ready = await dead_client.get("/health/ready")
        assert ready.status == 503
        assert (await ready.json())["status"] == "unavailable"
    finally:
        await dead_client.close()
        await down.close()


async def test_health_and_metrics(make_client: Any) -> None:
    client, _ = await make_client()
    for path in ("/health", "/health/live"):
        response = await client.get(path)
        assert response.status == 200 and (await response.json())["status"] == "ok"
    ready = await client.get("/health/ready")
    assert ready.status == 200
    assert (await ready.json())["store"] == "sqlite"
    await _post_github(client, fixture_bytes(OPENED), delivery="m-1")
    await _post_github(client, fixture_bytes(OPENED), delivery="m-1")
    text = await (await client.get("/metrics")).text()
    for name in (
        "arbiter_reviews_total",
        "arbiter_review_duration_seconds",
        "arbiter_llm_requests_total",
        "arbiter_llm_cache_hits_total",
        "arbiter_cost_usd_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text or f"# TYPE {name}" in text
    assert (
        'arbiter_webhooks_total{event="pull_request",outcome="accepted",platform="github"} 1.0'
        in text
    )
    assert (
        'arbiter_webhooks_total{event="pull_request",outcome="duplicate",platform="github"} 1.0'
        in text
    )
    assert 'arbiter_jobs{state="queued"} 1.0' in text
