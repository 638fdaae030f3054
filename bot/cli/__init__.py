"""The `arbiter` command line: the parser (commands.py), and one module per command, imported
only when that command runs: config.py (`arbiter config`), validate.py (`arbiter config
validate`), server.py (`serve`, `worker`, `migrate`), receive.py, and review.py with
review_local.py, review_pr.py and review_output.py (`arbiter review`).

Importing this package loads nothing else, so `arbiter --help` answers at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

EXIT_PIPE_CLOSED = 141  # what a shell reports for a command ended by SIGPIPE (128 + 13)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script `arbiter`."""
    from bot.cli.commands import main as run

    try:
        return run(argv)
    except BrokenPipeError:
        # `arbiter config --json | head`: the reader left. Stop as `cat` would, without a
        # traceback, and without another one when Python flushes stdout on the way out.
        _discard_stdout()
        return EXIT_PIPE_CLOSED


def _discard_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (an embedding, a test)
        pass
