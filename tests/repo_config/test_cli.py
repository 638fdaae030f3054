"""`arbiter config validate FILE`: the problems (exit 1) or the effective configuration (0)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from bot.cli import main
from config.repo import resolve


def test_a_good_file_prints_the_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / ".arbiter.yml"
    path.write_text("profile: quiet\npath_filters: ['!docs/**']\n")

    assert main(["config", "validate", str(path)]) == 0

    out = capsys.readouterr().out
    assert f"profile: quiet  # {path}" in out
    assert f"  max_comments: 5  # profile quiet in {path}" in out
    assert "model: gpt-4o  # ARBITER_DEFAULT_MODEL" in out
    assert resolve(out).config == resolve(path.read_text()).config


def test_a_bad_file_prints_its_problems_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / ".arbiter.yml"
    path.write_text("review:\n  max_comments: ten\nreveiw: {}\n")

    assert main(["config", "validate", str(path)]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f'{path}, line 2: review.max_comments: got the text "ten"')
    assert lines[1].startswith(f"{path}, line 3: reveiw: not a key Arbiter knows")
    assert lines[-1] == f"2 problems: {path} would not be used; reviews would run on the defaults."


def test_validate_applies_the_operators_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    house = tmp_path / "house.yml"
    house.write_text("language: fr\n")
    monkeypatch.setenv("ARBITER_REPO_CONFIG_DEFAULTS", str(house))
    monkeypatch.setenv("ARBITER_ALLOWED_MODELS", "gpt-4o-mini")
    path = tmp_path / ".arbiter.yml"
    path.write_text("model: gpt-4o-mini\n")

    assert main(["config", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"language: fr  # operator defaults ({house})" in out
    assert f"model: gpt-4o-mini  # {path}" in out

    path.write_text("model: o1-pro\n")
    assert main(["config", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "the operator allows gpt-4o-mini (ARBITER_ALLOWED_MODELS)" in out
    assert "those settings would not be applied; the rest of the file would be." in out


def test_validate_reads_stdin_and_reports_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"profile: loud\n")))
    assert main(["config", "validate", "-"]) == 1
    assert capsys.readouterr().out.startswith(".arbiter.yml (stdin), line 1: profile:")

    assert main(["config", "validate", str(tmp_path / "absent.yml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_plain_config_still_prints_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "ARBITER_ALLOWED_MODELS" in out and "ARBITER_REPO_CONFIG_DEFAULTS" in out
