"""`arbiter config validate FILE`: a repository's `.arbiter.yml` checked as the bot would."""

from __future__ import annotations

import sys
from pathlib import Path

from bot.repo_config import RepoConfigs
from config.repo import REPO_FILE_NAMES
from config.settings import Settings


def validate_command(settings: Settings, path: Path) -> int:
    """Print the file's problems (exit 1), or the effective configuration (exit 0)."""
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        print(f"arbiter: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    configs = RepoConfigs(settings)
    label = REPO_FILE_NAMES[0] + " (stdin)" if str(path) == "-" else str(path)
    effective = configs.resolve(data.decode("utf-8", "replace"), file=label)
    if effective.problems:
        for problem in effective.problems:
            print(problem)
        n = len(effective.problems)
        if not effective.repo_problems:
            outcome = f"{label} itself is fine; the operator's defaults file is not used."
        elif effective.repo_file_used:
            outcome = "those settings would not be applied; the rest of the file would be."
        else:
            outcome = f"{label} would not be used; reviews would run on the defaults."
        print(f"\n{n} problem{'' if n == 1 else 's'}: {outcome}")
        return 1
    print(effective.render(), end="")
    return 0
