"""A PostgreSQL server of the test's own, to stop and start at will: `initdb` in a temporary
directory and `pg_ctl` on a free port of 127.0.0.1, never the machine's shared server.

PostgreSQL refuses to run as root: when the tests run as root, its commands run as the
`postgres` OS user (`runuser`). `PostgresServer.create()` skips the test, saying why, when the
binaries or that user are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import _admin, free_port

SERVER_USER = "postgres"


def _binaries() -> Path | None:
    """The newest PostgreSQL's bin directory (Debian's layout), else wherever PATH finds it."""
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(found) / "pg_ctl").exists() and (Path(found) / "initdb").exists():
            return Path(found)
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


class PostgresServer:
    def __init__(self, bindir: Path, root: Path, as_user: list[str]) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log_path = root / "server.log"
        self.port = free_port()
        self._as_user = as_user

    @classmethod
    def create(cls) -> PostgresServer:
        """A fresh cluster (initdb), not yet started."""
        bindir = _binaries()
        if bindir is None:
            pytest.skip("the outage test needs PostgreSQL's initdb and pg_ctl (none found)")
        as_user: list[str] = []
        root = Path(tempfile.mkdtemp(prefix="arbiter-pg-"))
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                shutil.rmtree(root)
                pytest.skip(f"running as root, the outage test needs a {SERVER_USER!r} OS user")
            os.chown(root, account.pw_uid, account.pw_gid)
            as_user = ["runuser", "-u", SERVER_USER, "--"]
        server = cls(bindir, root, as_user)
        server._run(
            "initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust",
            "--no-locale", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        return server

    @property
    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        _admin(self.admin_url, f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._pg_ctl("start", "-l", str(self.log_path), "-o", options)

    def stop(self) -> None:
        """A fast shutdown: open sessions are cut, as in an outage."""
        self._pg_ctl("stop", "-m", "fast")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "immediate", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args, check=check)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        done = subprocess.run(
            [*self._as_user, str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}"
                f"{done.stderr}\n{self.log()}"
            )
