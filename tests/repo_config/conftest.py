"""The fake GitHub with one repository, a GitHub client on it, and a fake model.

Everything goes over real HTTP on 127.0.0.1: `platform` is the production GitHubPlatform, and
the model client is the production LLM client pointed at the fake OpenAI.
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bot.llm import LLM, make_llm
from bot.metrics import Metrics
from config.settings import Settings, load_settings
from platforms.github import GitHub, GitHubPlatform
from tests.fakes.github import AppKey, FakeGitHub
from tests.fakes.openai import FakeOpenAI

REPO = "octo/demo"
INSTALLATION = 7
APP_ID = "4242"
PAT = "ghp_" + "c" * 36

MakeSettings = Callable[..., Settings]
MakePlatform = Callable[..., GitHubPlatform]


@pytest.fixture(scope="session")
def app_key() -> AppKey:
    return AppKey.generate()


@pytest.fixture
async def fake(app_key: AppKey) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(app_id=APP_ID, public_key=app_key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=INSTALLATION)
        yield github


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def make_settings(fake: FakeGitHub, app_key: AppKey) -> MakeSettings:
    """Settings for the fake GitHub, in App mode (`mode="token"`: a personal token)."""

    def make(mode: str = "app", **overrides: Any) -> Settings:
        values: dict[str, Any] = {"github_base_url": fake.url, "integration_timeout": 5}
        if mode == "app":
            values |= {
                "github_app_id": APP_ID,
                "github_private_key": SecretStr(app_key.private_pem),
            }
        else:
            values |= {"github_token": SecretStr(PAT)}
        return load_settings(**(values | overrides))

    return make


@pytest.fixture
def make_platform(session: aiohttp.ClientSession) -> MakePlatform:
    def make(settings: Settings, repo: str = REPO, installation: int | None = INSTALLATION):
        return GitHub(settings, session).for_repo(repo, installation, delivery_id="d-1")

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
def platform(make_platform: MakePlatform, settings: Settings) -> GitHubPlatform:
    return make_platform(settings)


# --- The model --------------------------------------------------------------------------------


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def llm(fake_openai: FakeOpenAI) -> AsyncIterator[LLM]:
    client = make_llm(
        load_settings(**fake_openai.settings(), llm_timeout=10, llm_max_retries=0),
        None,
        Metrics(),
    )
    yield client
    await client.close()


def patch_of(files: Mapping[str, str]) -> str:
    """A git-style diff adding each file with the given text."""
    out: list[str] = []
    for path, text in files.items():
        out.append(f"diff --git a/{path} b/{path}\nnew file mode 100644\n")
        lines = difflib.unified_diff([], text.splitlines(keepends=True), "/dev/null", f"b/{path}")
        out += [line if line.endswith("\n") else line + "\n" for line in lines]
    return "".join(out)


def numbered(n: int, prefix: str) -> str:
    return "".join(f"{prefix} {i}\n" for i in range(1, n + 1))
