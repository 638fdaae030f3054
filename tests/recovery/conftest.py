"""A world for the recovery passes, in one process: the fake GitHub (and GitLab) and Arbiter's
own web application (a real server on 127.0.0.1) that their webhooks reach, on one SQLite
store. The passes are run by hand; no worker runs the jobs they lead to."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot.app import create_app
from bot.recovery import Recovery, RecoveryParts, Tally
from bot.runtime import Runtime
from bot.store.base import Job
from config.settings import load_settings
from tests.conftest import FakeClock, fixture_json
from tests.fakes.github import AppKey, FakeGitHub
from tests.fakes.gitlab import FakeGitLab

SECRET = "recovery-webhook-secret"
PAT = "ghp_" + "r" * 36
GL_TOKEN = "glpat-" + "r" * 20
GL_HOOK_TOKEN = "recovery-gitlab-token"
REPO = "Codertocat/Hello-World"  # the shared fixtures' repository
PROJECT = "gitlabhq/gitlab-test"  # the shared GitLab fixtures' project
INSTALLATION = 1
GL_HOOK = 41


@dataclass
class RecoveryWorld:
    runtime: Runtime
    recovery: Recovery
    github: FakeGitHub
    gitlab: FakeGitLab
    clock: FakeClock
    server: TestServer

    async def redeliver(self) -> Tally:
        tally = Tally()
        await self.recovery.redelivery.run(tally)
        await self.github.sent()  # GitHub sends right after its 202
        return tally

    async def reconcile(self) -> Tally:
        tally = Tally()
        await self.recovery.reconcile.run(tally)
        return tally

    async def jobs(self, kind: str) -> list[Job]:
        return await self.runtime.store.list_jobs(kind=kind, limit=1000)


MakeWorld = Callable[..., Any]


@pytest.fixture(scope="session")
def app_key() -> AppKey:
    return AppKey.generate()


@pytest.fixture
async def make_world(tmp_path: Path, app_key: AppKey) -> AsyncIterator[MakeWorld]:
    """A world in App mode (`mode="app"`) or token mode; settings as keyword overrides."""
    made: list[tuple[Runtime, Recovery, TestServer]] = []
    async with (
        FakeGitHub(app_id="4242", public_key=app_key.public_pem, token=PAT) as github,
        FakeGitLab(token=GL_TOKEN) as gitlab,
    ):
        github.add_repo(REPO, installation_id=INSTALLATION)
        gitlab.add_project(PROJECT, bot_access="maintainer")

        async def make(mode: str = "app", **overrides: Any) -> RecoveryWorld:
            values: dict[str, Any] = {
                "database_url": f"sqlite+aiosqlite:///{tmp_path}/recovery.db",
                "github_webhook_secret": SECRET,
                "github_base_url": github.url,
                "gitlab_base_url": gitlab.url,
                "gitlab_token": GL_TOKEN,
                "gitlab_webhook_token": GL_HOOK_TOKEN,
                "integration_max_retries": 0,
                "github_rate_limit_max_wait": 0,
                "gitlab_rate_limit_max_wait": 0,
            }
            if mode == "app":
                values |= {"github_app_id": "4242", "github_private_key": app_key.private_pem}
            else:
                values |= {"github_token": PAT}
            clock = FakeClock(time.time())
            runtime = Runtime(load_settings(**(values | overrides)), clock=clock)
            await runtime.start()
            server = TestServer(create_app(runtime), host="127.0.0.1")
            await server.start_server()
            github.set_app_webhook(str(server.make_url("/webhooks/github")), SECRET)
            recovery = Recovery(
                RecoveryParts(
                    settings=lambda: runtime.settings,
                    store=runtime.store,
                    router=runtime.router,
                    metrics=runtime.metrics,
                    github=lambda: runtime.github,
                    gitlab=lambda: runtime.gitlab,
                    notify=runtime.notify_worker,
                    clock=clock,
                )
            )
            made.append((runtime, recovery, server))
            return RecoveryWorld(runtime, recovery, github, gitlab, clock, server)

        try:
            yield make
        finally:
            for runtime, recovery, server in made:
                await recovery.stop()
                await server.close()
                await runtime.close()


def pull_request_payload(number: int = 2, action: str = "opened") -> dict[str, Any]:
    payload: dict[str, Any] = copy.deepcopy(
        fixture_json("github/webhooks/pull_request/opened.payload.json")
    )
    payload["action"] = action
    payload["number"] = number
    payload["pull_request"]["number"] = number
    return payload


def merge_request_hook(iid: int = 1) -> dict[str, Any]:
    payload: dict[str, Any] = copy.deepcopy(fixture_json("gitlab/webhooks/merge_request.json"))
    payload["object_attributes"]["iid"] = iid
    return payload
