"""The webhook endpoints in-process: every answer the framework-core issue lists."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot import webhook_body, webhooks
from bot.app import create_app
from bot.context import Context
from bot.router import Router
from bot.runtime import Runtime
from bot.store.sql import SQLStore
from config.settings import load_settings
from tests.bad_input import WRONG_TYPES, gzip_bomb, raw_deflate, sign, zlib_bomb
from tests.conftest import fixture_bytes, github_headers, gitlab_headers
from tests.rawhttp import Answer, exchange, read_answer, request_bytes

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


# --- Hostile and malformed input (issue 16, items 6-8) -----------------------------------------


def _address(client: TestClient[Any, Any]) -> tuple[str, int]:
    server = client.server
    assert server.port is not None
    return "127.0.0.1", server.port


def _github_head(
    delivery: str = "d-1",
    signature: bytes | str | None = None,
    extra: Mapping[str, bytes | str] | None = None,
) -> list[tuple[str, bytes | str]]:
    headers: dict[str, bytes | str] = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": delivery,
    }
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return list({**headers, **(extra or {})}.items())


async def _nothing_stored(runtime: Runtime, *deliveries: tuple[str, str]) -> None:
    assert await runtime.store.list_jobs() == []
    for platform, delivery in deliveries:
        assert not await runtime.store.seen_delivery(platform, delivery)


@pytest.mark.parametrize(
    "signature",
    [
        b"sha256=" + b"a" * 63 + b"\xff",
        "sha256=é".encode(),
        b"\xff\xfe",
        "sha256=" + "é" * 64,
    ],
    ids=["a Latin-1 byte last", "a UTF-8 letter", "binary only", "64 UTF-8 letters"],
)
async def test_a_non_ascii_signature_is_unauthorized_not_a_crash(
    make_client: Any, signature: bytes | str
) -> None:
    client, runtime = await make_client()
    body = fixture_bytes(OPENED)
    request = request_bytes("/webhooks/github", _github_head(signature=signature), body)
    answer = await exchange(*_address(client), request)
    assert answer is not None and answer.status == 401
    assert "X-Hub-Signature-256" in answer.json()["error"]
    await _nothing_stored(runtime, ("github", "d-1"))


async def test_a_non_ascii_gitlab_token_is_unauthorized_not_a_crash(make_client: Any) -> None:
    client, runtime = await make_client()
    headers: list[tuple[str, bytes | str]] = [
        ("X-Gitlab-Event", "Merge Request Hook"),
        ("X-Gitlab-Token", GL_TOKEN.encode() + b"\xff"),
    ]
    answer = await exchange(
        *_address(client), request_bytes("/webhooks/gitlab", headers, fixture_bytes(MR_OPEN))
    )
    assert answer is not None and answer.status == 401
    assert "X-Gitlab-Token" in answer.json()["error"]
    await _nothing_stored(runtime)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-GitHub-Delivery", b"abc-\xff"),
        ("X-GitHub-Delivery", "abc é".encode()),
        ("X-GitHub-Delivery", "has space"),
        ("X-GitHub-Event", b"pull_request\xff"),
        ("X-GitHub-Event", "../pull_request"),
    ],
    ids=["delivery-latin1", "delivery-utf8", "delivery-space", "event-latin1", "event-slash"],
)
async def test_signed_deliveries_with_unusable_headers_are_bad_requests(
    make_client: Any, header: str, value: bytes
) -> None:
    client, runtime = await make_client()
    body = fixture_bytes(OPENED)
    head = _github_head(signature=sign(body, SECRET), extra={header: value})
    answer = await exchange(*_address(client), request_bytes("/webhooks/github", head, body))
    assert answer is not None and answer.status == 400
    assert header in answer.json()["error"]
    await _nothing_stored(runtime)


async def test_signed_payloads_with_wrong_field_types_are_bad_requests(make_client: Any) -> None:
    """Every field normalization reads has its type checked: 400 naming it, never a 500."""
    client, runtime = await make_client()
    answers = {}
    for n, wrong in enumerate(WRONG_TYPES):
        body, delivery = wrong.body(), f"wrong-{n}"
        if wrong.platform == "github":
            headers = github_headers(wrong.event, delivery, body, SECRET)
        else:
            headers = gitlab_headers(wrong.event, GL_TOKEN, delivery)
        response = await client.post(f"/webhooks/{wrong.platform}", data=body, headers=headers)
        reason = (await response.json()).get("error", "") if response.status < 500 else ""
        answers[wrong.label] = (response.status, wrong.named_in(reason))
    assert answers == {wrong.label: (400, True) for wrong in WRONG_TYPES}
    await _nothing_stored(runtime, *((w.platform, f"wrong-{n}") for n, w in enumerate(WRONG_TYPES)))


@pytest.mark.parametrize(
    ("platform", "headers", "status", "reason"),
    [
        ("github", {"X-Hub-Signature-256": None}, 401, "missing X-Hub-Signature-256"),
        ("github", {"X-Hub-Signature-256": "sha256=short"}, 401, "sha256=<64 hex digits>"),
        ("github", {"X-GitHub-Event": None}, 400, "missing X-GitHub-Event"),
        ("github", {"X-GitHub-Delivery": None}, 400, "missing X-GitHub-Delivery"),
        ("github", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
        ("github", {"Content-Length": str(26 * 1024 * 1024)}, 413, "larger than"),
        ("gitlab", {"X-Gitlab-Token": "wrong"}, 401, "X-Gitlab-Token"),
        ("gitlab", {"X-Gitlab-Event": None}, 400, "missing X-Gitlab-Event"),
        ("gitlab", {"Content-Encoding": "compress"}, 415, "Content-Encoding"),
    ],
)
async def test_what_the_headers_refuse_is_refused_before_the_body_is_read(
    make_client: Any,
    platform: str,
    headers: dict[str, str | None],
    status: int,
    reason: str,
) -> None:
    """Only the head is sent, announcing a 1 MB body that never comes: the answer comes anyway."""
    client, runtime = await make_client()
    base: dict[str, bytes | str | None] = {"Content-Length": "1000000"}
    if platform == "github":
        base.update(_github_head(signature="sha256=" + "0" * 64))
    else:
        base.update({"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": GL_TOKEN})
    merged = {**base, **headers}
    pairs = [(k, v) for k, v in merged.items() if v is not None]
    head = request_bytes(f"/webhooks/{platform}", pairs, length=None)
    answer = await exchange(*_address(client), head, timeout=20)
    assert answer is not None and answer.status == status
    assert reason in answer.json()["error"]
    await _nothing_stored(runtime)


async def _refused_then_next(
    client: Any, head: list[tuple[str, bytes | str]], body: bytes
) -> tuple[Answer | None, Answer | None]:
    """A GitHub delivery of `body`, then a GET /health on the same connection: the answers to
    both (the second None if the connection closed first)."""
    first = request_bytes("/webhooks/github", head, body, close=False)
    then = request_bytes("/health", [], method="GET", length=None)
    reader, writer = await asyncio.open_connection(*_address(client))
    try:
        writer.write(first + then)
        async with asyncio.timeout(30):
            return await read_answer(reader), await read_answer(reader)
    finally:
        writer.close()


@pytest.mark.parametrize(("coding", "bomb"), [("gzip", gzip_bomb), ("deflate", zlib_bomb)])
async def test_a_bomb_is_refused_at_the_limit_and_the_rest_is_never_inflated(
    make_client: Any, coding: str, bomb: Any
) -> None:
    """A 256 MiB bomb against a 64 KiB limit: 413, and the connection is closed with the rest of
    the bomb unread (before, the server went on inflating it to drain the connection, then
    answered the next request on it)."""
    client, runtime = await make_client(max_webhook_bytes=64 * 1024)
    head = _github_head(signature="sha256=" + "0" * 64, extra={"Content-Encoding": coding})
    refused, after = await _refused_then_next(client, head, bomb(256))
    assert refused is not None and refused.status == 413
    assert "65536 bytes" in refused.json()["error"]
    assert refused.headers.get("connection") == "close"
    assert after is None  # the request behind the bomb was never read: the connection closed
    await _nothing_stored(runtime)


async def test_a_body_over_the_limit_closes_the_connection_even_if_it_all_arrived(
    make_client: Any,
) -> None:
    """1 MiB of zeros deflated to ~1 KB: all of it is in before the answer. The connection is
    closed all the same, so whether the request behind it is served never depends on how fast
    its sender was (it did for bombs, which made their test fail under load)."""
    client, runtime = await make_client(max_webhook_bytes=64 * 1024)
    head = _github_head(signature="sha256=" + "0" * 64, extra={"Content-Encoding": "deflate"})
    refused, after = await _refused_then_next(client, head, zlib_bomb(1))
    assert refused is not None and refused.status == 413
    assert refused.headers.get("connection") == "close"
    assert after is None
    await _nothing_stored(runtime)


async def test_the_inflater_stops_at_the_limit_without_reading_the_rest(make_client: Any) -> None:
    """Only the first 64 KiB of a 2 MB bomb (2 GiB inflated) are sent, and the connection stays
    open: the 413 comes without the server waiting for (or inflating) the rest."""
    client, _ = await make_client(max_webhook_bytes=4 * 1024 * 1024)
    bomb = gzip_bomb(2048)
    head = _github_head(signature="sha256=" + "0" * 64, extra={"Content-Encoding": "gzip"})
    start = request_bytes("/webhooks/github", head, bomb, close=False)[: -len(bomb) + 64 * 1024]
    answer = await exchange(*_address(client), start, timeout=20)
    assert answer is not None and answer.status == 413
    assert "inflates to more than 4194304 bytes" in answer.json()["error"]


@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", raw_deflate),
        ("GZip", gzip.compress),
        ("identity", lambda body: body),
    ],
)
async def test_compressed_deliveries_are_inflated_and_verified_as_sent(
    make_client: Any, coding: str, packed: Any
) -> None:
    client, runtime = await make_client()
    body = fixture_bytes(OPENED)
    head = _github_head(signature=sign(body, SECRET), extra={"Content-Encoding": coding})
    answer = await exchange(
        *_address(client), request_bytes("/webhooks/github", head, packed(body))
    )
    assert answer is not None and answer.status == 202, answer
    (job,) = await runtime.store.list_jobs()
    assert json.loads(job.payload)["payload"] == json.loads(body)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x1f\x8b\x08\x00" + b"garbage" * 20, "not valid gzip"),
        (gzip.compress(b'{"a": 1}', mtime=0)[:12], "is cut short"),
        (gzip.compress(b'{"a": 1}', mtime=0) + b"trailing", "follows the end"),
        (b"", "is cut short"),
    ],
)
async def test_corrupt_compressed_bodies_are_bad_requests(
    make_client: Any, wire: bytes, reason: str
) -> None:
    client, runtime = await make_client()
    head = _github_head(signature="sha256=" + "0" * 64, extra={"Content-Encoding": "gzip"})
    answer = await exchange(*_address(client), request_bytes("/webhooks/github", head, wire))
    assert answer is not None and answer.status == 400
    assert reason in answer.json()["error"]
    await _nothing_stored(runtime)


async def test_unverified_bodies_share_a_fixed_budget(make_client: Any) -> None:
    """Bodies not yet authenticated hold at most ARBITER_MAX_UNVERIFIED_BYTES between them: one
    more is answered 429 with Retry-After before its body is read; an authenticated GitLab body
    is not counted; the budget is whole again once the holder is answered."""
    client, runtime = await make_client(max_webhook_bytes=100_000, max_unverified_bytes=150_000)
    host, port = _address(client)
    wrong = "sha256=" + "0" * 64

    # A holds 100 000 bytes (its Content-Length) while its body trickles in.
    reader, writer = await asyncio.open_connection(host, port)
    body = b'{"zen": "' + b"x" * (100_000 - 11) + b'"}'
    held = request_bytes("/webhooks/github", _github_head("a", signature=wrong), body)
    writer.write(held[:-50_000])
    await writer.drain()

    async def another(delivery: str, **framing: Any) -> Any:
        head = _github_head(delivery, signature=wrong)
        return await exchange(host, port, request_bytes("/webhooks/github", head, body, **framing))

    # B, whole, needs 100 000 more: refused once A's handler holds its share (until then B is
    # read, refused for its signature, and its share given back at once).
    for _ in range(200):
        refused = await another("b")
        if refused is None or refused.status != 401:
            break
        await asyncio.sleep(0.05)
    assert refused is not None and refused.status == 429
    assert refused.headers["retry-after"].isdigit()
    assert "ARBITER_MAX_UNVERIFIED_BYTES" in refused.json()["error"]
    # Chunked (no length to reserve up front): refused once what it sent passes the budget.
    chunked_too = await another("c", chunk=True)
    assert chunked_too is not None and chunked_too.status == 429
    # An authenticated GitLab delivery is not held against the budget.
    mr = fixture_bytes(MR_OPEN)
    ok = await client.post(
        "/webhooks/gitlab", data=mr, headers=gitlab_headers("Merge Request Hook", GL_TOKEN, "gl")
    )
    assert ok.status == 202

    writer.write(held[-50_000:])
    first = await read_answer(reader)
    writer.close()
    assert first is not None and first.status == 401  # read whole, then refused: bad signature
    again = await another("d")
    assert again is not None and again.status == 401  # the budget was given back
    assert [job.delivery_id for job in await runtime.store.list_jobs()] == ["gl"]


async def test_a_body_that_stops_arriving_is_refused_in_time(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender that announces a body and stalls cannot hold its share of the budget forever."""
    monkeypatch.setattr(webhook_body, "BODY_SECONDS", 0.5)
    client, runtime = await make_client()
    head = _github_head(signature="sha256=" + "0" * 64)
    start = request_bytes("/webhooks/github", head, b'{"zen": "' + b"x" * 5000)
    answer = await exchange(*_address(client), start[:-2000], timeout=20)
    assert answer is not None and answer.status == 408
    assert "did not arrive" in answer.json()["error"]
    await _nothing_stored(runtime)


async def test_large_deliveries_are_verified_and_read_off_the_loop_all_the_same(
    make_client: Any,
) -> None:
    """Past OFF_LOOP_BYTES the signature and the JSON are worked in a thread: same answers."""
    client, runtime = await make_client()
    payload = json.loads(fixture_bytes(OPENED))
    payload["pull_request"]["body"] = "x" * (webhooks.OFF_LOOP_BYTES + 1)
    body = json.dumps(payload).encode()
    assert (await _post_github(client, body, secret="not-the-secret")).status == 401
    response = await _post_github(client, body, delivery="large")
    assert response.status == 202
    (job,) = await runtime.store.list_jobs()
    assert json.loads(job.payload)["payload"] == payload
