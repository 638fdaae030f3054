"""The `arbiter` command as a whole: a closed pipe is no traceback, the parser loads nothing but
itself, and the README's command table names every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli.commands import _parser
from tests.conftest import ROOT

# What only a command that runs something may import: the web server, the SDKs, the stores.
HEAVY = ("aiohttp", "openai", "anthropic", "sqlalchemy", "pymongo", "gitlab", "rich", "bot.store")


def _command() -> list[str]:
    script = Path(sys.executable).with_name("arbiter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    return {**env, "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (("config", "--json"), 141),
        (("config",), 141),
        (("github-app", "manifest"), 141),
        (("config", "validate", "-"), 141),
        (("--help",), 0),  # argparse itself ignores a failed write of its help
        (("review", "--help"), 0),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v),
)
def test_a_closed_pipe_ends_the_command_quietly(
    tmp_path: Path, argv: tuple[str, ...], code: int
) -> None:
    """`arbiter config --json | head`: the reader goes away; the command stops, as `cat` would
    (exit 141, killed by SIGPIPE in the shell's words), with no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        done = subprocess.run(
            [*_command(), *argv],
            cwd=tmp_path,
            env=_env(),
            input=b"review: {}\n",
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    err = done.stderr.decode()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert done.returncode == code, err


def _imported(argv: list[str]) -> set[str]:
    code = f"import sys\nfrom bot.cli import main\nsys.exit(main({argv!r}))"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.findall(r"^import time:\s+\d+ \|\s+\d+ \| \s*(\S+)$", done.stderr, re.MULTILINE)
    assert len(found) > 10, "python -X importtime reported nothing"
    return set(found)


@pytest.mark.parametrize(
    "argv", [["--help"], ["config", "--help"], ["review", "--help"]], ids=" ".join
)
def test_help_imports_only_the_parser(argv: list[str]) -> None:
    modules = _imported(argv)
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"`arbiter {' '.join(argv)}` imported {heavy}"


def _subcommands() -> list[str]:
    """Every command line the parser knows: `serve`, …, `config validate`, `github-app manifest`."""
    import argparse

    def walk(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
        found: list[str] = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append(f"{prefix}{name}")
                    found.extend(walk(sub, f"{prefix}{name} "))
        return found

    return walk(_parser(), "")


def test_the_readme_command_table_names_every_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `arbiter ([a-z][a-z -]*?)(?: \[|`| [A-Z-]|\s*`)", section, re.M)
    listed_set = {name.strip() for name in listed}
    commands = _subcommands()
    assert {"serve", "review", "config validate", "github-app manifest"} <= set(commands)
    missing = [c for c in commands if c not in listed_set and c != "github-app"]
    assert missing == [], f"README's command table lacks {missing}"
