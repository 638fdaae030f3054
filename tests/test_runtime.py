"""The runtime wires the platform in: a handler's `ctx.platform` reaches GitHub as configured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.events import from_github
from bot.runtime import Runtime
from config.settings import SettingsError, load_settings
from platforms.base import PlatformNotConfigured
from tests.conftest import fixture_json
from tests.fakes.github import AppKey, FakeGitHub, PullFile

APP_ID = "4242"
PAT = "ghp_" + "r" * 36
REPO = "Codertocat/Hello-World"  # the repository of the shared fixtures


@pytest.fixture(scope="module")
def key() -> AppKey:
    return AppKey.generate()


@pytest.fixture
async def fake(key: AppKey) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(app_id=APP_ID, public_key=key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=1)
        github.add_pull(
            REPO, 2, title="Update the README", files=[PullFile.added("a.py", "x = 1\n")]
        )
        yield github


async def _runtime(tmp_path: Path, **settings: Any) -> Runtime:
    runtime = Runtime(
        load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/r.db", **settings)
    )
    await runtime.start()
    return runtime


@pytest.mark.parametrize("mode", ["app", "token"])
async def test_a_handler_context_reaches_github(
    tmp_path: Path, fake: FakeGitHub, key: AppKey, mode: str
) -> None:
    auth: dict[str, Any] = (
        {"github_app_id": APP_ID, "github_private_key": key.private_pem}
        if mode == "app"
        else {"github_token": PAT}
    )
    runtime = await _runtime(tmp_path, github_base_url=fake.url, **auth)
    try:
        payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
        ctx = runtime.context(from_github("pull_request", "delivery-42", payload))
        pr = await ctx.platform.pull_request(2)
    finally:
        await runtime.close()
    assert (pr.repo, pr.number, pr.title) == (REPO, 2, "Update the README")
    (call,) = fake.requests_to("GET", f"/repos/{REPO}/pulls/2")
    assert call.headers["x-arbiter-delivery"] == "delivery-42"
    assert call.headers["user-agent"].startswith("Arbiter/")
    # App mode used the event's installation (1) for its token; token mode used the PAT.
    assert len(fake.minted) == (1 if mode == "app" else 0)


async def test_without_credentials_the_context_says_what_to_set(tmp_path: Path) -> None:
    runtime = await _runtime(tmp_path)
    try:
        payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
        ctx = runtime.context(from_github("pull_request", "d", payload))
        with pytest.raises(PlatformNotConfigured, match="ARBITER_GITHUB_WEBHOOK_SECRET"):
            _ = ctx.platform
    finally:
        await runtime.close()


async def test_a_bad_private_key_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ARBITER_GITHUB_PRIVATE_KEY"):
        await _runtime(tmp_path, github_app_id=APP_ID, github_private_key="not a key")


def test_serve_refuses_a_bad_private_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARBITER_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/s.db")
    monkeypatch.setenv("ARBITER_GITHUB_APP_ID", APP_ID)
    monkeypatch.setenv("ARBITER_GITHUB_PRIVATE_KEY_PATH", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("ARBITER_LOG_FORMAT", "json")
    assert main(["serve", "--port", "0"]) == 2
    assert "ARBITER_GITHUB_PRIVATE_KEY_PATH" in capsys.readouterr().err
