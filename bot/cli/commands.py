"""The `arbiter` command: its parser, and which module runs each command.

The parser imports nothing but argparse: a command's module, and the web server, SDKs and
store it needs, are imported when that command runs (`arbiter --help` takes a tenth of the
time it took when the parser imported the server).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2
_ALL = "*"  # _parser(): every command's arguments (the tests' and the docs' checks)


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    args = _parser(only=_command_in(given)).parse_args(given)

    from config.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"arbiter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "config":
        if args.config_command == "validate":
            from bot.cli.validate import validate_command

            return validate_command(settings, args.file)
        from bot.cli.config import config_command

        return config_command(settings, as_json=args.json)
    if args.command == "github-app":
        from bot.setup.command import github_app_command

        return github_app_command(settings, args)
    from bot.cli.server import run_command

    return run_command(settings, args)


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named on the line (its arguments are all the parser needs to know)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _parser(only: str | None = _ALL) -> argparse.ArgumentParser:
    """The parser; `only` names the one command whose arguments need a module imported."""
    parser = argparse.ArgumentParser(
        prog="arbiter", description="A self-hosted AI code reviewer for GitHub and GitLab."
    )
    parser.add_argument("--version", action="version", version=f"arbiter {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_p = sub.add_parser("serve", help="run the web server (and workers, by default)")
    serve_p.add_argument("--host", help="bind address (default: ARBITER_HOST)")
    serve_p.add_argument("--port", type=int, help="port (default: ARBITER_PORT)")
    serve_p.add_argument(
        "--no-workers", action="store_true", help="web only; run `arbiter worker` elsewhere"
    )
    sub.add_parser("worker", help="run workers only, against a shared store")
    sub.add_parser("migrate", help="bring the store's schema up to date")
    config_p = sub.add_parser(
        "config",
        help="print the effective settings, secrets masked, and what is missing",
    )
    config_p.add_argument("--json", action="store_true", help="as JSON")
    config_sub = config_p.add_subparsers(dest="config_command", metavar="validate")
    validate_p = config_sub.add_parser(
        "validate", help="check an .arbiter.yml: its problems, or the effective configuration"
    )
    validate_p.add_argument("file", type=Path, help="the .arbiter.yml to check, or - for stdin")
    receive_p = sub.add_parser(
        "receive",
        help="push a saved webhook payload through normalization and the handlers",
        description=(
            "Push a saved webhook payload through normalization and the handlers, against a "
            "throw-away store (a temporary SQLite file, deleted afterwards) unless --store "
            "names one: what the handlers queue is shown, not run."
        ),
    )
    receive_p.add_argument("--platform", choices=["github", "gitlab"], required=True)
    receive_p.add_argument(
        "--event", help="the event header (GitHub: X-GitHub-Event; GitLab reads object_kind)"
    )
    receive_p.add_argument(
        "--dry-run", action="store_true", help="show the event and its handlers, run nothing"
    )
    receive_p.add_argument(
        "--store",
        metavar="URL",
        help="run against this store instead (e.g. the server's ARBITER_DATABASE_URL), which "
        "keeps what the handlers write and queue",
    )
    receive_p.add_argument("file", type=Path, help="the JSON payload, or - for stdin")

    from bot.cli.review import DESCRIPTION, EPILOG, add_review_arguments

    review_p = sub.add_parser(
        "review",
        help="review a local change, or a pull request by its URL, with the model",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_review_arguments(review_p)
    app_p = sub.add_parser("github-app", help="the GitHub App: its manifest")
    if only in (_ALL, "github-app"):
        from bot.setup.command import add_github_app_arguments  # imports the web app's pages

        add_github_app_arguments(app_p)
    return parser


def _version() -> str:
    from bot import __version__

    return __version__
