"""Shared test helpers: the fixture payloads, clean settings, signed deliveries, a real store."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import socket
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.store.sql import SQLStore

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
FIXTURES_ENV = "ARBITER_FIXTURES_DIR"
# Read now: every test runs with the ARBITER_* variables cleared (clean_environment).
_FIXTURES_ENVIRON = {k: v for k, v in os.environ.items() if k == FIXTURES_ENV}


class FixturesNotFound(Exception):
    """The shared webhook payloads are not where the tests look; the message says where."""


def find_fixtures(root: Path, environ: Mapping[str, str]) -> Path:
    """The shared webhook payloads: ARBITER_FIXTURES_DIR when set, else `../shared/fixtures`
    beside the repository `root`."""
    given = environ.get(FIXTURES_ENV)
    if given:
        if (Path(given) / "github" / "webhooks").is_dir():
            return Path(given)
        raise FixturesNotFound(
            f"{FIXTURES_ENV}={given} holds no github/webhooks folder: point it at the shared "
            "webhook fixtures, or unset it to use ../shared/fixtures beside the repository"
        )
    beside = root.parent / "shared" / "fixtures"
    if (beside / "github" / "webhooks").is_dir():
        return beside
    raise FixturesNotFound(
        f"the shared webhook fixtures are not in {beside} (../shared/fixtures beside the "
        f"repository): put them there, or set {FIXTURES_ENV} to their folder"
    )


@functools.cache
def fixtures_dir() -> Path:
    """The shared webhook payloads; the test fails, saying where they were looked for."""
    try:
        return find_fixtures(ROOT, _FIXTURES_ENVIRON)
    except FixturesNotFound as exc:
        pytest.fail(str(exc), pytrace=False)


def fixture_bytes(relative: str) -> bytes:
    return (fixtures_dir() / relative).read_bytes()


def fixture_json(relative: str) -> Any:
    return json.loads(fixture_bytes(relative))


def github_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(event: str, delivery_id: str, body: bytes, secret: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id,
        "X-Hub-Signature-256": github_signature(body, secret),
    }


def gitlab_headers(event: str, token: str, idempotency_key: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": event, "X-Gitlab-Token": token}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class FakeClock:
    """A clock the test moves by hand: lease expiry and TTLs without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's ARBITER_* variables or .env file."""
    for key in list(os.environ):
        upper = key.upper()
        if (upper.startswith("ARBITER_") and not upper.startswith("ARBITER_TEST_")) or upper in {
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "OPENAI_BASE_URL",
            "ANTHROPIC_BASE_URL",
        }:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """`arbiter` commands configure logging onto the stream of the moment; undo it after."""
    yield
    import logging

    import structlog

    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLStore]:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/arbiter.db")
    await store.open()
    await store.migrate()
    yield store
    await store.close()


# --- PostgreSQL --------------------------------------------------------------------------------

POSTGRES_ENV = "ARBITER_TEST_POSTGRES_URL"


def run_in_own_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on a loop of its own, in a thread of its own: session
    fixtures set up by an async fixture are called inside that fixture's running loop."""
    import asyncio
    import threading

    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(asyncio.run(coroutine))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _admin(url: str, statement: str) -> None:
    """Run one statement on the server (callers may be inside a loop)."""
    import asyncpg  # only needed when PostgreSQL tests run

    async def run() -> None:
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    run_in_own_loop(run())


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own for this test run on the server of ARBITER_TEST_POSTGRES_URL.

    Skips when the variable is unset; fails, loudly, when it is set and the server is gone.
    """
    import uuid

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (.ci/run sets it)")
    name = f"arbiter_test_{uuid.uuid4().hex[:12]}"
    try:
        _admin(base, f'CREATE DATABASE "{name}"')
    except Exception as exc:
        pytest.fail(f"{POSTGRES_ENV} is set but PostgreSQL is unreachable: {exc}", pytrace=False)
    head, _, _ = base.rpartition("/")
    yield f"{head}/{name}"
    _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def reset_sql_schema(store: SQLStore) -> None:
    """Drop every table (and Alembic's record), so each test starts from an empty database."""
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

    def drop_all(conn: Connection) -> None:
        for name in sa.inspect(conn).get_table_names():
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))

    await store.run_sql(drop_all)
