"""Arbiter installed from its wheel, not run from the clone: from a folder of its own, the App
manifest, the migrations, the set-up page, the dashboard and readiness all work as in a
checkout, because everything read at run time ships inside the packages."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from bot.store.migrations import head_revision
from tests.conftest import ROOT, free_port
from tests.packaging.conftest import Venv

PACKAGES = ("bot", "config", "handlers", "platforms", "prompts")
SETUP_TOKEN = "packaging-test-setup-token"
PUBLIC_URL = "https://arbiter.example.com"


def _tracked(folder: str) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", folder], cwd=ROOT, capture_output=True, check=True
    )
    return [name for name in listed.stdout.decode().split("\0") if name]


def test_the_wheel_holds_every_file_of_the_packages(arbiter_wheel: Path) -> None:
    with zipfile.ZipFile(arbiter_wheel) as wheel:
        shipped = set(wheel.namelist())
    tracked = [name for package in PACKAGES for name in _tracked(package)]
    assert len(tracked) > 80, "the packages were not found: did the layout change?"
    missing = [name for name in tracked if name not in shipped]
    assert not missing, f"in the clone but not in the wheel: {missing}"


def test_arbiter_runs_from_the_installed_packages(installed: Venv, elsewhere: Path) -> None:
    found = installed.run(
        ["python", "-c", "import bot, config, prompts; print(bot.__file__, config.__file__)"],
        cwd=elsewhere,
    )
    assert found.returncode == 0, found.stderr
    assert all(Path(p).is_relative_to(installed.path) for p in found.stdout.split())


def test_github_app_manifest(installed: Venv, elsewhere: Path) -> None:
    result = installed.run(["arbiter", "github-app", "manifest", "--public-url", PUBLIC_URL],
                           cwd=elsewhere)  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    app = yaml.safe_load((ROOT / "app.yml").read_text(encoding="utf-8"))
    assert manifest["name"] == app["name"]
    assert manifest["default_permissions"] == app["default_permissions"]
    assert manifest["hook_attributes"]["url"] == f"{PUBLIC_URL}/webhooks/github"


def test_migrate(installed: Venv, elsewhere: Path) -> None:
    database = elsewhere / "arbiter.db"
    env = installed.env(ARBITER_DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    result = installed.run(["arbiter", "migrate"], cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(database) as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert revision == head_revision()
    assert {"jobs", "deliveries", "reviews"} <= tables


@pytest.fixture
async def served(installed: Venv, elsewhere: Path) -> AsyncIterator[str]:
    port = free_port()
    env = installed.env(
        ARBITER_HOST="127.0.0.1",
        ARBITER_PORT=str(port),
        ARBITER_PUBLIC_URL=PUBLIC_URL,
        ARBITER_SETUP_TOKEN=SETUP_TOKEN,
        ARBITER_LOG_FORMAT="json",
    )
    log = elsewhere / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(installed.bin / "arbiter"), "serve"],
            cwd=elsewhere,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                assert process.poll() is None, log.read_text(errors="replace")
                try:
                    async with session.get(f"{url}/health/live") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


async def test_serve_answers_as_in_a_checkout(served: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{served}/health/ready") as response:
            assert response.status == 200, await response.text()
        async with session.get(f"{served}/") as response:
            assert response.status == 200
            assert await response.read() == (ROOT / "dashboard/index.html").read_bytes()
        async with session.get(f"{served}/vendor/chart.umd.min.js") as response:
            assert response.status == 200
        async with session.get(f"{served}/setup", params={"token": SETUP_TOKEN}) as response:
            page = await response.text()
            assert response.status == 200, page
        assert "Create the GitHub App" in page
        assert f"{PUBLIC_URL}/webhooks/github" in page
