"""The `arbiter` command line: the parser and the small commands (commands.py), and one module per
command that needs more than a few lines (review.py: `arbiter review`; validate.py:
`arbiter config validate`).

Importing this package loads nothing else: a command imports what it needs when it runs.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The console script `arbiter`."""
    from bot.cli.commands import main as run

    return run(argv)
