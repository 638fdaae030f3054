"""The Procfile's processes, run as a process manager runs them (`sh -c LINE` with $PORT set), in
one fresh folder: the web process answers on $PORT and the worker process is the only one
running jobs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, free_port
from tests.deploy import project

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Procfile:
    processes: dict[str, subprocess.Popen[bytes]]
    web_port: int
    worker_port: int


@pytest.fixture
def procfile(tmp_path: Path) -> Iterator[Procfile]:
    web_port, worker_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "PORT": str(web_port),
        "ARBITER_WORKER_HTTP_PORT": str(worker_port),
        "ARBITER_LOG_FORMAT": "json",
    }
    started: dict[str, subprocess.Popen[bytes]] = {}
    for name, line in project.procfile_lines().items():
        with open(tmp_path / f"{name}.log", "wb") as log:
            # A session of its own: the signal goes to the process group, so the arbiter that
            # `sh` started stops with it (sh does not pass SIGTERM on to its child).
            started[name] = subprocess.Popen(
                ["sh", "-c", line],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    try:
        yield Procfile(started, web_port, worker_port)
    finally:
        for process in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in started.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            # sh may be gone before its child: wait until no process of the group is left.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.killpg(process.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


async def _answers(url: str, processes: dict[str, subprocess.Popen[bytes]], log: Path) -> int:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            for name, process in processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"Procfile {name} exited:\n{_read(log, name)}")
            try:
                async with session.get(url) as response:
                    return response.status
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"nothing answered {url}:\n{_read(log, log.stem)}")


def _read(log: Path, name: str) -> str:
    return (log.parent / f"{name}.log").read_text(errors="replace")


async def test_procfile_processes_listen_where_they_are_told(
    procfile: Procfile, tmp_path: Path
) -> None:
    processes = procfile.processes
    web = f"http://127.0.0.1:{procfile.web_port}/health/ready"
    worker = f"http://127.0.0.1:{procfile.worker_port}/health/live"
    assert await _answers(web, processes, tmp_path / "web.log") == 200
    assert await _answers(worker, processes, tmp_path / "worker.log") == 200
    await asyncio.sleep(1)  # both past start-up: neither stopped the other (one store, one schema)
    assert all(process.poll() is None for process in processes.values())
