"""The image installs pinned dependencies, with hashes, from deploy/image/ (`make image-lock`
writes them): every dependency of pyproject.toml is pinned there to a version it accepts, and
nothing is left unpinned or unhashed, so two builds on different days install the same thing."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy import project

LOCKS = [
    project.ROOT / "deploy/image/requirements.txt",
    project.ROOT / "deploy/image/build-requirements.txt",
]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := _PIN.match(line):
            pins[canonicalize_name(match[1])] = match[2]
    return pins


@pytest.mark.parametrize("path", LOCKS, ids=lambda p: p.name)
def test_every_requirement_is_pinned_and_hashed(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[-1].strip())
    assert len(entries) == len(_pins(path)) > 0
    for entry in entries:
        assert _PIN.match(entry), f"{path.name}: not pinned with ==: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"{path.name}: no hash for {entry.splitlines()[0]}"


def test_the_lock_pins_every_dependency_of_pyproject() -> None:
    pyproject = tomllib.loads((project.ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = _pins(LOCKS[0])
    for line in pyproject["project"]["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {LOCKS[0].name}: run `make image-lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{LOCKS[0].name} pins {name}=={pins[name]}, pyproject.toml wants {requirement}: "
            "run `make image-lock`"
        )


def test_the_build_lock_has_a_backend_pyproject_accepts() -> None:
    pyproject = tomllib.loads((project.ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = _pins(LOCKS[1])
    for line in pyproject["build-system"]["requires"]:
        requirement = Requirement(line)
        assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)])
