"""The fake GitHub, and GitHub clients pointed at it in either auth mode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from config.settings import Settings, load_settings
from platforms.github import GitHub, GitHubPlatform
from platforms.gitlab import GitLab, GitLabPlatform
from tests.fakes.github import AppKey, FakeGitHub, ManualClock
from tests.fakes.gitlab import FakeGitLab

APP_ID = "4242"
PAT = "ghp_" + "t" * 36
REPO = "octo/demo"
INSTALLATION = 7
DELIVERY = "delivery-1"

MakeGitHub = Callable[..., GitHub]


def visible(body: str) -> str:
    """A comment's text as people read it: Arbiter's hidden markers (HTML comments) left out."""
    kept = [line for line in body.split("\n") if not line.startswith("<!-- arbiter:")]
    return "\n".join(kept).strip()


@pytest.fixture(scope="session")
def app_key() -> AppKey:
    return AppKey.generate()


@pytest.fixture
def manual_clock() -> ManualClock:
    """Shared by the fake and the client: a client's sleep moves the fake's time too."""
    return ManualClock()


@pytest.fixture
async def fake(app_key: AppKey, manual_clock: ManualClock) -> AsyncIterator[FakeGitHub]:
    github = FakeGitHub(app_id=APP_ID, public_key=app_key.public_pem, token=PAT, clock=manual_clock)
    async with github:
        github.add_repo(REPO, installation_id=INSTALLATION)
        yield github


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def github_settings(fake: FakeGitHub, mode: str, key: AppKey, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "github_base_url": fake.url,
        "integration_timeout": 5,
        "integration_max_retries": 3,
    }
    if mode == "app":
        values |= {"github_app_id": APP_ID, "github_private_key": SecretStr(key.private_pem)}
    else:
        values |= {"github_token": SecretStr(PAT)}
    # tests/conftest.py clears ARBITER_* variables and runs each test in an empty directory.
    return load_settings(**(values | overrides))


@pytest.fixture
def make_github(
    fake: FakeGitHub, session: aiohttp.ClientSession, app_key: AppKey, manual_clock: ManualClock
) -> MakeGitHub:
    def make(mode: str = "app", *, clock: ManualClock | None = None, **overrides: Any) -> GitHub:
        clock = clock or manual_clock
        settings = github_settings(fake, mode, app_key, **overrides)
        return GitHub(settings, session, clock=clock, sleep=clock.sleep)

    return make


@pytest.fixture(params=["app", "token"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def platform(make_github: MakeGitHub, mode: str) -> GitHubPlatform:
    return make_github(mode).for_repo(REPO, INSTALLATION, delivery_id=DELIVERY)


# --- GitLab ---------------------------------------------------------------------------------------

GL_TOKEN = "glpat-" + "g" * 20
GL_PROJECT = "acme/shop"
GL_DELIVERY = "delivery-gl-1"

MakeGitLab = Callable[..., GitLab]


class Sleeps:
    """The GitLab client's blocking sleep, recorded instead of slept (it runs in the pool)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def gitlab_fake() -> AsyncIterator[FakeGitLab]:
    async with FakeGitLab(token=GL_TOKEN) as fake:
        fake.add_project(GL_PROJECT)
        yield fake


def gitlab_settings(fake: FakeGitLab, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "gitlab_base_url": fake.url,
        "gitlab_token": SecretStr(GL_TOKEN),
        "integration_timeout": 5,
        "integration_max_retries": 3,
    }
    return load_settings(**(values | overrides))


@pytest.fixture
async def make_gitlab(gitlab_fake: FakeGitLab, sleeps: Sleeps) -> AsyncIterator[MakeGitLab]:
    made: list[GitLab] = []

    def make(*, executor: Executor | None = None, **overrides: Any) -> GitLab:
        client = GitLab(gitlab_settings(gitlab_fake, **overrides), sleep=sleeps, executor=executor)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def gitlab_platform(make_gitlab: MakeGitLab) -> GitLabPlatform:
    return make_gitlab().for_repo(GL_PROJECT, delivery_id=GL_DELIVERY)
