"""The fake GitHub, an in-process Arbiter wired to it, and a reader for the set-up page."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from bot.runtime import Runtime
from config.settings import load_settings
from tests.conftest import free_port
from tests.fakes.github import AppKey, FakeGitHub

SETUP_TOKEN = "setup-token-for-tests"


@pytest.fixture(scope="session")
def app_key() -> AppKey:
    """One key pair per run for the Apps the fake creates (generating one takes a while)."""
    return AppKey.generate()


@pytest.fixture
async def fake_github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub() as github:
        yield github


@dataclass(frozen=True)
class SetupForm:
    """The manifest form of the set-up page, as a browser would submit it."""

    action: str
    manifest: dict[str, Any]

    @property
    def state(self) -> str:
        return parse_qs(urlsplit(self.action).query)["state"][0]

    @property
    def path(self) -> str:
        return urlsplit(self.action).path


class _FormReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.manifest: str | None = None
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and values.get("id") == "create-app":
            self._inside, self.action = True, values.get("action")
        elif tag == "input" and self._inside and values.get("name") == "manifest":
            self.manifest = values.get("value")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def setup_form(page: str) -> SetupForm | None:
    """The page's manifest form (attribute values unescaped, as a browser reads them)."""
    reader = _FormReader()
    reader.feed(page)
    if reader.action is None or reader.manifest is None:
        return None
    return SetupForm(reader.action, json.loads(reader.manifest))


@dataclass(frozen=True)
class SavedApp:
    """What the set-up left in a directory: `.env`'s assignments and the key file."""

    env: dict[str, str]
    env_mode: int
    key_path: Path
    key_mode: int
    key_text: str

    @classmethod
    def read(cls, directory: Path) -> SavedApp:
        env_file = directory / ".env"
        env = dict(
            line.split("=", 1)
            for line in env_file.read_text().splitlines()
            if line and not line.startswith("#")
        )
        key_path = Path(env["ARBITER_GITHUB_PRIVATE_KEY_PATH"])
        return cls(
            env=env,
            env_mode=stat.S_IMODE(env_file.stat().st_mode),
            key_path=key_path,
            key_mode=stat.S_IMODE(key_path.stat().st_mode),
            key_text=key_path.read_text(),
        )


@dataclass
class Arbiter:
    client: TestClient[Any, Any]
    runtime: Runtime
    url: str

    async def form(self, query: str = "") -> SetupForm:
        joiner = "&" if query else "?"
        response = await self.client.get(f"/setup{query}{joiner}token={SETUP_TOKEN}")
        assert response.status == 200, await response.text()
        form = setup_form(await response.text())
        assert form is not None
        return form


MakeArbiter = Callable[..., Awaitable[Arbiter]]


@pytest.fixture
async def make_arbiter(tmp_path: Path, fake_github: FakeGitHub) -> AsyncIterator[MakeArbiter]:
    """Arbiter in this process (its working directory is the test's tmp_path, so `.env` is
    tmp_path/.env), with GitHub at the fake and the public URL its own."""
    opened: list[Arbiter] = []

    async def make(**overrides: Any) -> Arbiter:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path}/setup.db",
            "github_base_url": fake_github.url,
            "public_url": url,
            "integration_timeout": 10,
            "setup_token": SETUP_TOKEN,
        }
        settings = load_settings(**{**values, **overrides})
        runtime = Runtime(settings)
        await runtime.start()
        client = TestClient(TestServer(create_app(runtime), host="127.0.0.1", port=port))
        await client.start_server()
        arbiter = Arbiter(client, runtime, url)
        opened.append(arbiter)
        return arbiter

    yield make
    for arbiter in opened:
        await arbiter.client.close()
        await arbiter.runtime.close()
