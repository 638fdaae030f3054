"""A built wheel of Arbiter, installed into fresh virtual environments, for the packaging tests.

The wheel is built once per test session from a copy of the working tree (what `pip wheel .`
sees, without touching the clone). Each environment gets the wheel installed for real; its
dependencies come from this project's environment through one `.pth` line (installing them again
would take the network and a minute), which adds that folder to `sys.path` without running the
`.pth` files in it, so the project's editable install of Arbiter stays out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Not part of what a build reads; the rest of the working tree is copied as it is.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "node_modules"
)


def _run(argv: Sequence[str | Path]) -> None:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"


def build_wheel(project: Path, out: Path) -> Path:
    """`pip wheel` of a project folder, with the build backend of this environment."""
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", out, project])  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return wheel


@dataclass(frozen=True)
class Venv:
    """A fresh virtual environment with Arbiter's wheel (and maybe more) installed."""

    path: Path

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def site_packages(self) -> Path:
        (found,) = self.path.glob("lib/python3*/site-packages")
        return found

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment: no ARBITER_* of the developer's, no PYTHONPATH into the clone."""
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ARBITER_", "PYTHON")) and k not in {"VIRTUAL_ENV"}
        }
        return {**keep, "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", **extra}

    def run(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            cwd=cwd,
            env=dict(env if env is not None else self.env()),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )


def make_venv(path: Path, *wheels: Path) -> Venv:
    """A new venv (no pip of its own) with `wheels` installed, in that order, without their
    dependencies, which this project's environment lends through a `.pth` line."""
    _run([sys.executable, "-m", "venv", "--without-pip", path])
    venv = Venv(path)
    for wheel in wheels:
        _run([sys.executable, "-m", "pip", "--python", venv.bin / "python", "install",
              "--no-deps", "--no-index", "--no-compile", wheel])  # fmt: skip
    lent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (venv.site_packages / "zz_arbiter_test_dependencies.pth").write_text(
        "".join(f"{p}\n" for p in sorted(lent)), encoding="utf-8"
    )
    return venv


@pytest.fixture(scope="session")
def arbiter_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source") / "arbiter"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_COPIED)
    return build_wheel(source, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def installed(arbiter_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return make_venv(tmp_path_factory.mktemp("venv") / "arbiter", arbiter_wheel)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working folder far from the clone."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder
