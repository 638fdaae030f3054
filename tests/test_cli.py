"""The `arbiter` command: migrate, receive (the handler playground), usage errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.store.migrations import head_revision
from bot.store.sql import SQLStore
from tests.conftest import fixtures_dir


def _db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("ARBITER_DATABASE_URL", url)
    monkeypatch.setenv("ARBITER_LOG_FORMAT", "json")
    return url


async def _installations(url: str) -> list[tuple[int, str, str, tuple[str, ...]]]:
    store = SQLStore(url)
    await store.open()
    try:
        return [
            (i.installation_id, i.account, i.state, i.repositories)
            for i in await store.list_installations()
        ]
    finally:
        await store.close()


def test_migrate_brings_the_schema_to_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _db(tmp_path, monkeypatch)
    assert main(["migrate"]) == 0
    head = head_revision()
    assert f"sqlite store at revision {head} (head {head})" in capsys.readouterr().out
    assert main(["migrate"]) == 0  # again: nothing to do, still fine


def test_receive_runs_the_handlers_on_a_saved_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _db(tmp_path, monkeypatch)
    payload = fixtures_dir() / "github/webhooks/installation/created.payload.json"
    argv = ["receive", "--platform", "github", "--event", "installation", str(payload)]
    code = main([*argv, "--store", url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "event    installation.created" in out
    assert "handler  handlers.installation.installed" in out
    assert "ok       handlers.installation.installed" in out
    (installation,) = asyncio.run(_installations(url))
    assert installation[:3] == (957387, "Codertocat", "active")
    assert installation[3] == ("Codertocat/Hello-World",)


def test_receive_dry_run_and_unhandled_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _db(tmp_path, monkeypatch)
    suspend = fixtures_dir() / "github/webhooks/installation/suspend.payload.json"
    assert (
        main(
            [
                "receive",
                "--platform",
                "github",
                "--event",
                "installation",
                "--dry-run",
                str(suspend),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "handler  handlers.installation.uninstalled" in out
    assert "ok " not in out
    assert not (tmp_path / "cli.db").exists()  # a dry run touches nothing

    push = fixtures_dir() / "gitlab/webhooks/push.json"
    assert main(["receive", "--platform", "gitlab", str(push)]) == 0
    assert "handlers none: a delivery like this is answered 202 ignored" in capsys.readouterr().out


def test_receive_reports_unreadable_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _db(tmp_path, monkeypatch)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["receive", "--platform", "github", "--event", "pull_request", str(broken)]) == 2
    assert "cannot read" in capsys.readouterr().err
    payload = fixtures_dir() / "github/webhooks/pull_request/opened.payload.json"
    assert main(["receive", "--platform", "github", str(payload)]) == 2
    assert "--event is required" in capsys.readouterr().err


def test_extra_handler_modules_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _db(tmp_path, monkeypatch)
    monkeypatch.setenv("ARBITER_HANDLERS", "no.such.module")
    payload = fixtures_dir() / "github/webhooks/installation/created.payload.json"
    assert main(["receive", "--platform", "github", "--event", "installation", str(payload)]) == 1
    assert "ARBITER_HANDLERS: cannot import 'no.such.module'" in capsys.readouterr().err


def test_receive_leaves_nothing_queued_for_a_later_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a fresh folder, with the default store: the handlers run against a throw-away store,
    so no ./arbiter.db keeps a queued review that a later `arbiter serve` there would run."""
    monkeypatch.setenv("ARBITER_LOG_FORMAT", "json")
    payload = fixtures_dir() / "github/webhooks/pull_request/opened.payload.json"
    argv = ["receive", "--platform", "github", "--event", "pull_request", str(payload)]
    assert main(argv) == 0
    assert not (tmp_path / "arbiter.db").exists()
    out = capsys.readouterr().out
    assert "ok       handlers.pull_request.review_wanted" in out
    assert "store    throw-away (deleted after this run)" in out
    assert "queued   review job review:github:Codertocat/Hello-World#2" in out
    assert "not run; gone with the store" in out
    assert list(tmp_path.iterdir()) == []  # nothing at all is left in the folder


def test_receive_with_a_store_keeps_what_the_handlers_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARBITER_LOG_FORMAT", "json")
    kept = f"sqlite:///{tmp_path}/kept.db"
    payload = fixtures_dir() / "github/webhooks/pull_request/opened.payload.json"
    argv = ["receive", "--platform", "github", "--event", "pull_request", str(payload)]
    assert main([*argv, "--store", kept]) == 0
    out = capsys.readouterr().out
    assert f"store    {kept}" in out
    assert "a worker on that store will run it" in out
    assert [job.key for job in asyncio.run(_queued(kept))] == [
        "review:github:Codertocat/Hello-World#2"
    ]
    assert main([*argv, "--store", "mysql://db/x"]) == 2
    assert "--store: not a URL Arbiter can store in" in capsys.readouterr().err


async def _queued(url: str) -> list[Any]:
    store = SQLStore(url)
    await store.open()
    try:
        return await store.list_jobs(state="queued")
    finally:
        await store.close()
