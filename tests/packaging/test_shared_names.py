"""Arbiter's top-level packages have generic names (`bot`, `config`, `handlers`, `platforms`,
`prompts`). Installed beside another distribution that has a `config` of its own, Arbiter either
works, or stops at once with one message saying what is in the way and how to install it
apart; never a traceback from deep inside an import. Likewise for a file missing from the
installation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging.conftest import Venv, build_wheel, make_venv

EXIT_CONFIGURATION = 2


def _stray_wheel(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    """A wheel of a distribution `name` holding `files` at the top level of site-packages."""
    project = tmp_path / name
    project.mkdir()
    packages = sorted({f.split("/")[0] for f in files if "/" in f})
    modules = sorted(f.removesuffix(".py") for f in files if "/" not in f)
    (project / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\n'
        f"[tool.setuptools]\npackages = {packages!r}\npy-modules = {modules!r}\n",
        encoding="utf-8",
    )
    for relative, text in files.items():
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text(text, encoding="utf-8")
    return build_wheel(project, tmp_path / f"{name}-dist")


def _manifest(venv: Venv, cwd: Path, **env: str) -> tuple[int, str]:
    result = venv.run(["arbiter", "github-app", "manifest"], cwd=cwd, env=venv.env(**env))
    return result.returncode, result.stderr


def test_a_config_module_beside_arbiters_package_leaves_arbiter_working(
    arbiter_wheel: Path, tmp_path: Path, elsewhere: Path
) -> None:
    # A stray `config.py` and Arbiter's `config/` in one site-packages: Python imports the
    # package, so Arbiter works (and the other distribution gets Arbiter's `config`: the reason
    # the docs say to install Arbiter in an environment of its own).
    stray = _stray_wheel(tmp_path, "stray-module", {"config.py": "DEBUG = True\n"})
    venv = make_venv(tmp_path / "venv", arbiter_wheel, stray)
    code, errors = _manifest(venv, elsewhere)
    assert code == 0, errors
    imported = venv.run(["python", "-c", "import config; print(config.__file__)"], elsewhere)
    assert imported.stdout.strip().endswith("config/__init__.py")


def test_a_config_package_installed_over_arbiters_stops_it_naming_the_culprit(
    arbiter_wheel: Path, tmp_path: Path, elsewhere: Path
) -> None:
    # pip writes the other distribution's config/__init__.py and config/settings.py over
    # Arbiter's, silently.
    stray = _stray_wheel(
        tmp_path,
        "stray-package",
        {"config/__init__.py": "NAME = 'stray'\n", "config/settings.py": "DEBUG = True\n"},
    )
    venv = make_venv(tmp_path / "venv", arbiter_wheel, stray)
    code, errors = _manifest(venv, elsewhere)
    assert code == EXIT_CONFIGURATION, errors
    assert "Traceback" not in errors
    assert "config" in errors and "stray-package" in errors
    assert "pipx install" in errors and "venv" in errors


@pytest.mark.parametrize("stray", ["config.py", "config/__init__.py"])
def test_a_config_earlier_on_the_path_stops_arbiter_naming_it(
    installed: Venv, tmp_path: Path, elsewhere: Path, stray: str
) -> None:
    shadow = tmp_path / "shadow"
    (shadow / stray).parent.mkdir(parents=True, exist_ok=True)
    (shadow / stray).write_text("DEBUG = True\n", encoding="utf-8")
    code, errors = _manifest(installed, elsewhere, PYTHONPATH=str(shadow))
    assert code == EXIT_CONFIGURATION, errors
    assert "Traceback" not in errors
    assert str(shadow / stray) in errors
    assert "PYTHONPATH" in errors


def test_a_file_missing_from_the_installation_is_named_at_start(
    arbiter_wheel: Path, tmp_path: Path, elsewhere: Path
) -> None:
    venv = make_venv(tmp_path / "venv", arbiter_wheel)
    (venv.site_packages / "bot" / "dashboard" / "index.html").unlink()
    code, errors = _manifest(venv, elsewhere)
    assert code == EXIT_CONFIGURATION, errors
    assert "incomplete: bot/dashboard/index.html missing from" in errors
    assert "reinstall Arbiter" in errors
