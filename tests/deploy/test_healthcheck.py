"""The image's HEALTHCHECK (`python -m bot.healthcheck`) passes for a container running
`arbiter serve` (web port) and for one running `arbiter worker` (its own port), and fails,
saying where it asked, when neither answers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import ROOT, free_port
from tests.deploy import project


@asynccontextmanager
async def _live(port: int, status: int = 200) -> AsyncIterator[None]:
    async def live(request: web.Request) -> web.Response:
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_get("/health/live", live)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def _check(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot.healthcheck"),
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return subprocess.CompletedProcess([], process.returncode or 0, out.decode(), err.decode())


@pytest.mark.parametrize("role", ["serve", "worker"])
async def test_the_check_passes_for_the_process_the_container_runs(
    tmp_path: Path, role: str
) -> None:
    web_port, worker_port = free_port(), free_port()
    ports = {"ARBITER_PORT": str(web_port), "ARBITER_WORKER_HTTP_PORT": str(worker_port)}
    async with _live(web_port if role == "serve" else worker_port):
        result = await _check(tmp_path, **ports)
    assert result.returncode == 0, result.stderr


async def test_the_check_reads_the_ports_from_the_env_file_too(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / ".env").write_text(f"ARBITER_WORKER_HTTP_PORT={port}\n")
    async with _live(port):
        result = await _check(tmp_path, ARBITER_PORT=str(free_port()))
    assert result.returncode == 0, result.stderr


async def test_the_check_fails_naming_where_it_asked(tmp_path: Path) -> None:
    web_port, worker_port = free_port(), free_port()
    async with _live(web_port, status=503):
        result = await _check(
            tmp_path, ARBITER_PORT=str(web_port), ARBITER_WORKER_HTTP_PORT=str(worker_port)
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{web_port}/health/live" in result.stderr
    assert f"127.0.0.1:{worker_port}/health/live" in result.stderr


def test_the_image_runs_this_check() -> None:
    healthcheck = project.last(project.final_stage(), "HEALTHCHECK")
    assert healthcheck is not None
    assert healthcheck.value[-3:] == ("python", "-m", "bot.healthcheck")
