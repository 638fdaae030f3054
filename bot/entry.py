"""The `arbiter` console script: checks that this installation is whole and its own, then runs
the command line (`bot.cli`).

Arbiter's top-level packages have generic names (bot, config, handlers, platforms, prompts).
Another distribution in the same environment may write its own `config` over Arbiter's, or a
folder on PYTHONPATH may hold one; either would fail later, deep inside an import. Checked here,
before anything imports them: each package is found where `bot` is, its files are the ones this
distribution installed (their hashes in its RECORD), and the files read at run time are there.
Only the standard library is imported before the check passes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from base64 import urlsafe_b64encode
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "arbiter"
PACKAGES = ("bot", "config", "handlers", "platforms", "prompts")
# What Arbiter reads at run time, inside its packages (looked up by path here: importing the
# packages to ask importlib.resources would import half of Arbiter before the check).
RESOURCES = (
    "bot/setup/app.yml",
    "bot/dashboard/index.html",
    "config/prices.yml",
    "prompts/review_system.txt",
    "bot/store/migrations/env.py",
)
EXIT_CONFIGURATION = 2
APART = (
    "Arbiter's packages need an environment of their own: `pipx install` it (from the clone or "
    "the wheel), or install it into a venv made for it (`python3 -m venv /opt/arbiter`)."
)


def main(argv: Sequence[str] | None = None) -> int:
    problems = installation_problems()
    if problems:
        for problem in problems:
            print(f"arbiter: {problem}", file=sys.stderr)
        print(f"arbiter: {APART}", file=sys.stderr)
        return EXIT_CONFIGURATION
    from bot.cli import main as run

    return run(argv)


def installation_problems() -> list[str]:
    """What is in the way of this installation, in plain words; empty when it is whole."""
    home = Path(__file__).resolve().parents[1]  # the folder that holds `bot`
    problems = [p for name in PACKAGES if (p := _foreign_package(name, home))]
    if not problems:
        problems = _overwritten_files(home)
    if not problems:
        problems = _missing_resources(home)
    return problems


def _foreign_package(name: str, home: Path) -> str | None:
    """Why `import name` would not load Arbiter's package beside `bot`, if it would not."""
    expected = home / name / "__init__.py"
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        return f"cannot look up the package {name!r}: {exc}"
    origin = spec.origin if spec else None
    if origin and Path(origin).resolve() == expected:
        return None
    if spec is None or origin is None or origin == "namespace":
        return (
            f"Arbiter's package {name!r} is missing from {home} (a folder without its "
            "__init__.py: uninstalling another distribution may have removed it); "
            "reinstall Arbiter"
        )
    on_pythonpath = _on_pythonpath(Path(origin))
    where = "a folder on PYTHONPATH" if on_pythonpath else "an earlier sys.path entry"
    return (
        f"`import {name}` loads {origin} ({where}), not Arbiter's package {expected}: "
        "it hides Arbiter's own; remove it from PYTHONPATH or run Arbiter from elsewhere"
    )


def _on_pythonpath(path: Path) -> bool:
    entries = [Path(p).resolve() for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return any(path.resolve().is_relative_to(entry) for entry in entries)


def _overwritten_files(home: Path) -> list[str]:
    """Files of the packages that are gone, or whose content is not what this distribution
    installed (another distribution wrote its own over them)."""
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return []  # run from a checkout, not installed: nothing recorded to compare with
    if Path(str(distribution.locate_file(""))).resolve() != home:
        return []  # recorded elsewhere (an editable install records no package files)
    missing: list[str] = []
    changed: dict[str, list[str]] = {}
    for record in distribution.files or ():
        top = record.parts[0] if record.parts else ""
        if top not in PACKAGES or "__pycache__" in record.parts or record.hash is None:
            continue
        try:
            content = (home / Path(*record.parts)).read_bytes()
        except OSError:
            missing.append(str(record))
            continue
        digest = hashlib.new(record.hash.mode, content).digest()
        if urlsafe_b64encode(digest).rstrip(b"=").decode() != record.hash.value:
            changed.setdefault(top, []).append(str(record))
    problems = [
        f"Arbiter's package {name!r} in {home} was overwritten ({_some(files)}) by "
        f"{_owners(name)}, installed into the same environment"
        for name, files in changed.items()
    ]
    if missing:
        problems.append(
            f"this installation of Arbiter is incomplete: {_some(missing)} missing from {home}; "
            "reinstall Arbiter"
        )
    return problems


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _owners(package: str) -> str:
    """The other distributions that install `package` (a slow scan: only after a problem)."""
    owners = sorted(
        {
            name
            for name in metadata.packages_distributions().get(package, [])
            if name.lower() != DISTRIBUTION
        }
    )
    return " and ".join(owners) if owners else "another distribution"


def _missing_resources(home: Path) -> list[str]:
    missing = [name for name in RESOURCES if not (home / name).is_file()]
    if not missing:
        return []
    return [
        f"this installation of Arbiter is incomplete: {_some(missing)} missing from {home}; "
        "reinstall Arbiter"
    ]
