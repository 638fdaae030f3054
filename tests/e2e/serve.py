"""Run `arbiter serve` as a real process for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import aiohttp

from tests.conftest import ROOT, free_port


class ServeProcess:
    """`arbiter serve` in a subprocess, its log captured to a file."""

    def __init__(self, workdir: Path, env: dict[str, str], *, args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{self.port}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
            "PYTHONPATH": str(ROOT),
            "ARBITER_HOST": "127.0.0.1",
            "ARBITER_PORT": str(self.port),
            "ARBITER_LOG_FORMAT": "json",
            **env,
        }
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def migrate(self) -> None:
        """`arbiter migrate` with this server's settings (stores other than SQLite need it)."""
        subprocess.run(
            [*self._command(), "migrate"],
            cwd=self.workdir,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def _command(self) -> list[str]:
        # The installed console script, as an operator runs it.
        script = Path(sys.executable).with_name("arbiter")
        return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]

    async def start(self, timeout: float = 30) -> None:
        await self._run("serve", *self.args, timeout=timeout)

    async def _run(self, *command: str, timeout: float) -> None:
        """Start `arbiter COMMAND`, its output to the log, and wait until it is ready."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*self._command(), *command],
            cwd=self.workdir,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"arbiter {command[0]} exited early:\n{self.log()}")
                if await self._ready(session):
                    return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"arbiter {command[0]} not ready after {timeout} s:\n{self.log()}")

    async def _ready(self, session: aiohttp.ClientSession) -> bool:
        """Its /health/ready answers 200."""
        try:
            async with session.get(f"{self.url}/health/ready") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    def kill(self) -> None:
        """kill -9: no shutdown, no lease release."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._close_log()

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._close_log()
        return self.process.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def __aenter__(self) -> ServeProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.stop()


class WorkerProcess(ServeProcess):
    """`arbiter worker` in a subprocess, its probes on a port of its own; ready once it logs
    "worker running" or its /health/ready answers 200."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(workdir, env)
        self.env["ARBITER_WORKER_HTTP_PORT"] = str(self.port)

    async def start(self, timeout: float = 30) -> None:
        self.log_path = self.workdir / f"worker-{self.port}.log"
        await self._run("worker", timeout=timeout)

    async def _ready(self, session: aiohttp.ClientSession) -> bool:
        # Its log says so, or (where the log, at WARNING, does not) its /health/ready.
        return '"worker running"' in self.log() or await super()._ready(session)


# `arbiter serve` as the console script runs it, with one addition: SIGUSR1 writes the names in
# sys.modules to the file named by PROBE_MODULES_FILE (the serve code itself is unchanged).
_PROBE = """\
import os, signal, sys
def _dump(*_):
    path = os.environ["PROBE_MODULES_FILE"]
    with open(path + ".part", "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
    os.replace(path + ".part", path)
signal.signal(signal.SIGUSR1, _dump)
from bot.entry import main
sys.exit(main(sys.argv[1:]))
"""


class ProbedServeProcess(ServeProcess):
    """`arbiter serve` that says which modules it has imported: what an idle process holds."""

    def __init__(self, workdir: Path, env: dict[str, str], *, args: tuple[str, ...] = ()) -> None:
        super().__init__(workdir, env, args=args)
        self.modules_path = workdir / f"modules-{self.port}.txt"
        self.env["PROBE_MODULES_FILE"] = str(self.modules_path)

    def _command(self) -> list[str]:
        return [sys.executable, "-c", _PROBE]

    async def modules(self, timeout: float = 10) -> set[str]:
        """The names in the process's sys.modules now."""
        assert self.process is not None and self.process.poll() is None, "not running"
        self.modules_path.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not self.modules_path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no module list after {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.05)
        return set(self.modules_path.read_text().split())
