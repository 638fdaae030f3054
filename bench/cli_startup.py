"""Benchmark: how long the `arbiter` command takes before it does anything.

    .venv/bin/python bench/cli_startup.py               # `--help` and `config --help`, 7 runs each
    .venv/bin/python bench/cli_startup.py --runs 15

Printed per command line: the median and the fastest wall time of the installed console script
(a fresh process each run, as a person typing it gets), and, from `python -X importtime`, how
many modules the parser imported and their cumulative import time. The parser should import
only itself: the web server, the SDKs and the store are imported by the commands that use them.
This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (("--help",), ("config", "--help"), ("review", "--help"))
HEAVY = ("aiohttp", "openai", "anthropic", "sqlalchemy", "pymongo", "gitlab", "rich", "bot.store")
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def _arbiter() -> list[str]:
    script = Path(sys.executable).with_name("arbiter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    return {**env, "PYTHONPATH": str(ROOT)}


def wall_times(argv: tuple[str, ...], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*_arbiter(), *argv], env=_env(), check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def imports(argv: tuple[str, ...]) -> tuple[int, float, list[str]]:
    """(modules imported, total seconds of top-level imports, heavy packages among them)."""
    code = f"import sys; from bot.cli import main; sys.exit(main({list(argv)!r}))"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    modules: list[str] = []
    total_us = 0
    for line in done.stderr.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        modules.append(match[4])
        if not match[3]:  # top level: its cumulative time includes everything below it
            total_us += int(match[2])
    heavy = sorted({h for h in HEAVY for m in modules if m == h or m.startswith(h + ".")})
    return len(modules), total_us / 1e6, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"{'command':<28} {'median':>8} {'fastest':>8} {'modules':>8} {'imports':>8}  heavy")
    for argv in COMMANDS:
        times = wall_times(argv, args.runs)
        count, seconds, heavy = imports(argv)
        label = "arbiter " + " ".join(argv)
        print(
            f"{label:<28} {statistics.median(times):>7.3f}s {min(times):>7.3f}s "
            f"{count:>8} {seconds:>7.3f}s  {', '.join(heavy) or '-'}"
        )


if __name__ == "__main__":
    main()
