"""Secrets never leave, end to end (issue 16, items 10 and 11): `arbiter serve` as a process, a
model provider whose errors echo the API key (some proxies do), the fake GitHub.

The key must appear nowhere text leaves Arbiter: the commit status, any comment, the stored
job error, review reason and exchange, the operator API read with a read-only token, and the
log, whose every line is JSON at the configured level, whichever module or library wrote it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.store.sql import SQLStore
from tests.conversation.model import answer, is_question
from tests.e2e.world import PAT, REPO, World, wait_for
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, LLMRequest, Reply, ServerError, finding, review_answer

pytestmark = pytest.mark.e2e

KEY = "pk-live-0c5e91f2d84a7b36e1f0"  # an API key of no known shape: only "known" catches it
LEAKED = "ghp_" + "L3akedT0kenInTheDiff" * 2  # a credential in the pull request itself
ECHO = f"Incorrect API key provided: {KEY}. Find your key at https://platform.example/keys."
READ = "read-token-3c7a9e51f0b2"
ADMIN = "admin-token-8e2d4b6a1c97"
H1, H3, BASE = "a1" * 20, "b3" * 20, "c3" * 20
SMALL = "def run(command):\n    return command\n"


def _big(name: str) -> str:
    """A file too large to share a chunk with another (about 8,000 estimated tokens)."""
    return "".join(f"{name}_{i} = {i}  # a line of padding, padding\n" for i in range(600))


class Provider:
    """The model behind a proxy that echoes the key in its errors: pull request 1 fails
    whole; of pull request 3's two chunks, the first answered succeeds and the second fails;
    a question is answered with text carrying the key and the diff's token."""

    def __init__(self) -> None:
        self.big_chunks = 0

    def __call__(self, request: LLMRequest) -> Reply:
        if is_question(request):
            return answer(f"It holds {LEAKED}; the proxy said {KEY}.")
        if "=== FILE one.py (" in request.user:
            return ServerError(401, ECHO)
        self.big_chunks += 1
        if self.big_chunks > 1:
            return ServerError(401, ECHO)
        shown = "big_a.py" if "=== FILE big_a.py (" in request.user else "big_b.py"
        return review_answer(finding(shown, 3, severity="minor", title="Padding"))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    key = AppKey.generate()
    async with FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=1)
        github.add_pull(REPO, 1, files=[PullFile.added("one.py", SMALL)], head_sha=H1)
        github.add_pull(
            REPO,
            3,
            files=[
                PullFile.added("big_a.py", _big("a")),
                PullFile.added("big_b.py", _big("b")),
                PullFile.added("config.py", f"TOKEN = '{LEAKED}'\n"),
            ],
            head_sha=H3,
            base_sha=BASE,
        )
        github.set_permission(REPO, "alice", "write")
        async with FakeOpenAI() as openai:
            openai.respond(Provider())
            w = World(tmp_path, github, openai)
            try:
                yield w
            finally:
                w.stop()


def _env(**extra: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": KEY,
        "ARBITER_WORKER_RETRY_ATTEMPTS": "0",  # the first failure is the last: the job dies
        "ARBITER_API_TOKENS": f"{READ}:read,{ADMIN}:admin",
        **extra,
    }


async def _api(world: World, path: str, token: str = READ, method: str = "GET") -> Any:
    assert world.server is not None
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{world.server.url}{path}", headers=headers) as r,
    ):
        return r.status, await r.text()


def _log_lines(world: World) -> list[dict[str, Any]]:
    """Every line the server wrote, each of which must be a JSON object."""
    assert world.server is not None
    lines = []
    for line in world.server.log().splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            pytest.fail(f"a log line that is not JSON: {line[:300]!r}")
        assert isinstance(parsed, dict), line
        lines.append(parsed)
    return lines


def _no_secret(where: str, text: str) -> None:
    for secret in (KEY, KEY[:10], LEAKED, LEAKED[:12]):
        assert secret not in text, f"{secret!r} in {where}: {text[:2000]}"


async def test_an_echoed_api_key_leaves_through_no_door(world: World) -> None:
    await world.start(**_env(ARBITER_LOG_LEVEL="DEBUG"))
    for number in (1, 3):
        status, body = await world.deliver(
            "pull_request", world.pull_request_payload(number, "opened")
        )
        assert status == 202, body
    failed, partial = await world.settled(H1), await world.settled(H3)

    # The commit statuses say why, with the key masked.
    assert failed[-1][0] == "error" and "rejected our credentials" in failed[-1][1]
    assert "Incorrect API key provided: ***" in failed[-1][1]
    assert partial[-1][0] == "error"
    assert partial[-1][1].startswith("Incomplete review: the model provider rejected")
    for state, description in failed + partial:
        _no_secret(f"the {state} status", description)

    # A question whose answer carries the key and the diff's token; the question the token.
    asked = world.github.add_issue_comment(
        REPO, 3, f"@arbiter is {LEAKED} a live token?", author="alice"
    )
    status, body = await world.deliver("issue_comment", world.issue_comment_payload(3, asked))
    assert status == 202, body

    def replied() -> bool:
        return any("the proxy said" in c["body"] for c in world.github.issue_comments(REPO, 3))

    await wait_for(replied, what="the answer")

    # Everything posted: the partial review, the summary naming what was not reviewed and
    # why, the answer.
    posted = [
        *(
            c["body"]
            for n in (1, 3)
            for c in world.github.issue_comments(REPO, n)
            if c["id"] != asked["id"]
        ),
        *(r["body"] or "" for n in (1, 3) for r in world.github.reviews(REPO, n)),
        *(c["body"] for n in (1, 3) for c in world.github.review_comments(REPO, n)),
    ]
    for text in posted:
        _no_secret("a comment", text)
    (summary,) = [t for t in posted if "arbiter:summary" in t]
    assert "Incorrect API key provided: ***" in summary
    (reply,) = [t for t in posted if "the proxy said" in t]
    assert "It holds ***; the proxy said ***." in reply

    # What the store keeps.
    store = await world.store()
    try:
        jobs = await store.list_jobs(limit=100)
        reviews = await store.list_reviews()
        exchanges = await store.list_exchanges(limit=100)
    finally:
        await store.close()
    (dead,) = [j for j in jobs if j.state == "dead"]
    assert dead.last_error is not None and "Incorrect API key provided: ***" in dead.last_error
    for job in jobs:
        _no_secret(f"job {job.id}'s error", job.last_error or "")
    assert {r.number: r.outcome for r in reviews} == {1: "error", 3: "error"}
    for review in reviews:
        _no_secret(f"review {review.id}", f"{review.reason} {review.not_reviewed}")
        assert "***" in (review.reason or "")
    (exchange,) = exchanges
    _no_secret("the exchange", f"{exchange.question} {exchange.answer}")
    assert exchange.question == "@arbiter is *** a live token?"

    # What the operator API answers a read-only token.
    for path in ["/api/jobs", "/api/reviews", *(f"/api/reviews/{r.id}" for r in reviews)]:
        status, text = await _api(world, path)
        assert status == 200, text
        _no_secret(path, text)

    # The log: every line JSON, none with a secret; the failure is there, masked.
    lines = _log_lines(world)
    _no_secret("the log", world.server.log() if world.server else "")
    assert any(
        line["msg"] == "job dead after its last attempt"
        and "Incorrect API key provided: ***" in line["error"]
        for line in lines
    )


def _bad_request(url: str) -> bytes:
    """A request aiohttp cannot parse, carrying the key, sent over a raw socket."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\nBad Header {KEY}\r\n\r\n".encode())
        return raw.recv(1000)


async def test_every_log_line_goes_through_the_configured_pipeline(world: World) -> None:
    # A repository config with problems: bot/repo_config.py reports them.
    world.github.add_file(REPO, ".arbiter.yml", "review:\n  fail_on: sometimes\ncolour: blue\n")
    server = await world.start(**_env(ARBITER_LOG_LEVEL="WARNING"))
    status, body = await world.deliver("pull_request", world.pull_request_payload(1, "opened"))
    assert status == 202, body
    await world.settled(H1)
    store = await world.store()
    try:
        (review,) = await store.list_reviews()
        (dead,) = await store.list_jobs(state="dead")
        # A stored value the API cannot render: bot/api/server.py logs the failure, traceback
        # and all; the value, echoed in the exception's message, carries the key.
        await store.update_review(review.id, severity_counts={"major": f"lots, {KEY}"})
    finally:
        await store.close()
    status, _ = await _api(world, f"/api/reviews/{review.id}")
    assert status == 500
    # bot/api/views.py logs a retried job at info: below this server's level.
    status, _ = await _api(world, f"/api/jobs/{dead.id}/retry", ADMIN, "POST")
    assert status == 200
    # aiohttp's own server logs a request it cannot parse.
    answer_ = await asyncio.to_thread(_bad_request, server.url)
    assert answer_.startswith(b"HTTP/1.0 400") or answer_.startswith(b"HTTP/1.1 400")

    def logged(message: str) -> bool:
        return any(message in line.get("msg", "") for line in _log_lines(world))

    await wait_for(lambda: logged("Error handling request"), what="aiohttp's error line")
    lines = _log_lines(world)  # every line JSON
    assert {line["level"] for line in lines} <= {"warning", "error", "critical"}
    assert not any(line["msg"] == "dead job queued again" for line in lines)
    by_message = {line["msg"]: line for line in lines}
    config = by_message["repository config problem"]
    assert config["component"] == "repo_config" and config["repo"] == REPO
    failure = by_message["api operation failed"]
    assert failure["component"] == "api" and failure["level"] == "error"
    assert "ValueError" in failure["exception"] and "lots, ***" in failure["exception"]
    assert "locals" not in failure["exception"]
    (aiohttp_error,) = [line for line in lines if line["msg"].startswith("Error handling")]
    assert aiohttp_error["logger"] == "aiohttp.server" and aiohttp_error["level"] == "error"
    assert "Bad Header ***" in aiohttp_error["exception"]
    _no_secret("the log", server.log())


async def test_the_store_is_read_back_from_a_private_file(world: World) -> None:
    """The SQLite file `arbiter serve` creates holds reviewed code: 0600, with its WAL."""
    await world.start()
    status, body = await world.deliver("pull_request", world.pull_request_payload(1, "opened"))
    assert status == 202, body
    await world.settled(H1)
    db = Path(world.db_url.removeprefix("sqlite+aiosqlite:///"))
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        assert path.exists(), path
        assert path.stat().st_mode & 0o777 == 0o600, path
    store = SQLStore(world.db_url)
    await store.open()
    try:
        assert len(await store.list_reviews()) == 1
    finally:
        await store.close()
