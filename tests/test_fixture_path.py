"""Where the tests find the shared webhook payloads: `../shared/fixtures` beside the repository,
or `ARBITER_FIXTURES_DIR`; never a path of one particular machine."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, FixturesNotFound, find_fixtures

MACHINE_PATHS = ("/work/", "/home/", "/root/", "/Users/")


def _fixtures(base: Path) -> Path:
    (base / "github" / "webhooks").mkdir(parents=True)
    return base


def test_the_fixtures_beside_the_repository_are_found(tmp_path: Path) -> None:
    root = tmp_path / "clone"
    root.mkdir()
    shared = _fixtures(tmp_path / "shared" / "fixtures")
    assert find_fixtures(root, environ={}) == shared


def test_the_variable_wins_over_the_folder_beside_the_repository(tmp_path: Path) -> None:
    _fixtures(tmp_path / "shared" / "fixtures")
    elsewhere = _fixtures(tmp_path / "elsewhere")
    found = find_fixtures(tmp_path / "clone", environ={"ARBITER_FIXTURES_DIR": str(elsewhere)})
    assert found == elsewhere


def test_a_clone_without_fixtures_fails_naming_both_places(tmp_path: Path) -> None:
    root = tmp_path / "clone"
    root.mkdir()
    with pytest.raises(FixturesNotFound) as failed:
        find_fixtures(root, environ={})
    message = str(failed.value)
    assert str(tmp_path / "shared" / "fixtures") in message
    assert "ARBITER_FIXTURES_DIR" in message


def test_a_wrong_variable_fails_naming_it_rather_than_looking_elsewhere(tmp_path: Path) -> None:
    _fixtures(tmp_path / "shared" / "fixtures")
    missing = tmp_path / "typo"
    with pytest.raises(FixturesNotFound) as failed:
        find_fixtures(tmp_path / "clone", environ={"ARBITER_FIXTURES_DIR": str(missing)})
    assert f"ARBITER_FIXTURES_DIR={missing}" in str(failed.value)


def test_no_test_or_benchmark_names_a_path_of_one_machine() -> None:
    # The shared payloads are found relative to the clone; an absolute path would only work on
    # the machine it was written on. Read with `ast`: string constants, this file aside.
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}"
        for folder in ("tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if path != Path(__file__)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith(MACHINE_PATHS)
    ]
    assert not offenders, offenders


def test_the_variable_reaches_the_tests_that_use_it(tmp_path: Path) -> None:
    # Every test runs with the ARBITER_* variables cleared; the documented variable must still
    # be the one the fixtures come from, so a wrong value fails instead of being ignored.
    missing = tmp_path / "nowhere"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            "tests/test_events.py::test_every_github_fixture_is_covered",
        ],
        cwd=ROOT,
        env={**os.environ, "ARBITER_FIXTURES_DIR": str(missing)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert f"ARBITER_FIXTURES_DIR={missing} holds no github/webhooks folder" in result.stdout
