"""`arbiter review`: review a change with the configured model, before anyone else sees it, or a
pull request on its platform.

    arbiter review                  the working tree (and untracked files) against HEAD
    arbiter review main..HEAD       a range of commits (anything `git diff` accepts)
    arbiter review --patch FILE     a saved unified diff; `--patch -` reads standard input
    arbiter review --pr URL         a GitHub pull request or a GitLab merge request; --post posts it

This module holds the options, the exit codes and the checks that need no model; the review
itself is review_local.py (a local change) and review_pr.py (a pull request), printed by
review_output.py. It imports neither, nor any SDK, until the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from config.severity import SEVERITIES

if TYPE_CHECKING:
    from config.settings import Settings

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_PROVIDER = 3
EXIT_INCOMPLETE = EXIT_PROVIDER  # a review cut short by a model error
EXIT_BUG = 70  # sysexits' EX_SOFTWARE: Arbiter itself failed
EXIT_CODES = (
    (EXIT_OK, "the review ran, and no finding reached --fail-on"),
    (EXIT_FINDINGS, "a finding is at least as severe as --fail-on (or the .arbiter.yml's fail_on)"),
    (EXIT_USAGE, "a usage or configuration error: nothing was reviewed, the message says why"),
    (
        EXIT_PROVIDER,
        "a service failed: the model provider (or, with --pr, the platform or the store); "
        "what could not be reviewed is listed",
    ),
    (EXIT_BUG, "Arbiter failed unexpectedly: please report the message"),
)

DESCRIPTION = """\
Review a change with the configured model and print the findings, grouped by file.

  arbiter review                  the working tree (and untracked files) against HEAD
  arbiter review main..HEAD       a range of commits (anything `git diff` accepts)
  arbiter review --patch FILE     a saved unified diff; --patch - reads standard input
  arbiter review --pr URL         a pull request (GitHub) or merge request (GitLab), as the
                                  bot would review it; --post also posts it there

A local review reads the repository's .arbiter.yml from the working tree (--no-repo-config
skips it); --pr reads the one on the default branch, as the bot does. Options given here
override the file's values."""

EPILOG = "exit codes:\n" + "\n".join(f"  {code:<3} {meaning}" for code, meaning in EXIT_CODES)


def add_review_arguments(parser: argparse.ArgumentParser) -> None:
    """The `arbiter review` options (bot/cli/commands.py adds the subcommand)."""
    source = parser.add_argument_group("what to review")
    source.add_argument(
        "range",
        nargs="?",
        help="commits to review, e.g. main..HEAD (default: the working tree against HEAD)",
    )
    source.add_argument(
        "--patch", metavar="FILE", help="review a unified diff file instead; - reads stdin"
    )
    source.add_argument(
        "--pr",
        metavar="URL",
        help="review a pull request: https://github.com/OWNER/REPO/pull/N, or a GitLab merge "
        "request https://gitlab.com/GROUP/PROJECT/-/merge_requests/N (Enterprise and "
        "self-managed hosts through ARBITER_GITHUB_BASE_URL / ARBITER_GITLAB_BASE_URL)",
    )
    source.add_argument(
        "--post",
        action="store_true",
        help="with --pr: post the review, summary and status as the bot would, and record it "
        "in the store of ARBITER_DATABASE_URL (the server's; default: print only)",
    )
    how = parser.add_argument_group("how (each overrides the .arbiter.yml)")
    how.add_argument(
        "--no-repo-config",
        action="store_true",
        help="ignore the repository's .arbiter.yml (the operator's defaults still apply)",
    )
    how.add_argument("--model", help="the model (default: the .arbiter.yml's, else the setting)")
    how.add_argument(
        "--fail-on",
        choices=(*SEVERITIES, "none"),
        help="exit 1 when a finding is at least this severe (default: the .arbiter.yml's "
        "review.fail_on)",
    )
    how.add_argument(
        "--path-filter",
        "-p",
        action="append",
        default=[],
        metavar="GLOB",
        help="review only matching paths; !GLOB excludes (repeatable; replaces path_filters)",
    )
    how.add_argument("--instructions", metavar="TEXT", help="instructions for the model")
    how.add_argument("--min-severity", choices=SEVERITIES, help="drop findings below this")
    how.add_argument(
        "--min-confidence",
        type=float,
        metavar="0..1",
        help="drop findings the model is less sure of (default: the .arbiter.yml's, 0.5)",
    )
    how.add_argument("--max-comments", type=int, metavar="N", help="keep at most N findings")
    how.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="cost cap (default: the .arbiter.yml's, else ARBITER_MAX_COST_PER_REVIEW_USD; "
        "0: none, for a model nobody priced)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the result as JSON")
    out.add_argument("--title", default="", metavar="TEXT", help="a title for the change")
    out.add_argument(
        "--description", default="", metavar="TEXT", help="a description of the change"
    )
    out.add_argument("--no-cache", action="store_true", help="do not use the store's cache")


class UsageError(Exception):
    """The command line or the configuration cannot be used; nothing was reviewed (exit 2)."""


def usage_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the options themselves, before anything is read or reviewed."""
    from config.repo import glob_problem

    problems = []
    if args.pr and (args.patch or args.range):
        problems.append("--pr reviews a pull request: give no commit range or --patch with it")
    if args.patch and args.range:
        problems.append("give either a commit range or --patch, not both")
    if args.post and not args.pr:
        problems.append("--post posts a pull request's review: it needs --pr URL")
    if args.pr and args.no_repo_config:
        problems.append("--no-repo-config is for local reviews; --pr reads the bot's config")
    for pattern in args.path_filter:
        problem = glob_problem(pattern, negatable=True)
        if problem:
            problems.append(f"-p {pattern!r}: {problem}")
    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
        problems.append("--min-confidence takes a number from 0 to 1")
    if args.max_comments is not None and args.max_comments < 0:
        problems.append("--max-comments takes zero or a positive number")
    if args.max_cost is not None and args.max_cost < 0:
        problems.append("--max-cost takes zero (no cap) or a positive number of dollars")
    return problems


def review_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run `arbiter review`; the process exit code (EXIT_CODES). Never a traceback."""
    import asyncio
    import logging

    from rich.console import Console

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    problems = usage_problems(args)
    if problems:
        for problem in problems:
            err.print(f"arbiter review: {problem}", markup=False)
        return EXIT_USAGE
    # The SDKs' HTTP client logs every request at INFO: noise between the findings.
    logging.getLogger("httpx2").setLevel(max(logging.getLogger().level, logging.WARNING))
    try:
        return asyncio.run(_run(settings, args, out=out, err=err))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # the reader of stdout left: bot/cli/__init__.py ends quietly
    except Exception as exc:
        code, message = classify(exc)
        err.print(f"arbiter review: {message}", markup=False)
        if code == EXIT_BUG and os.environ.get("ARBITER_LOG_LEVEL", "").upper() == "DEBUG":
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        return code


async def _run(settings: Settings, args: argparse.Namespace, **consoles: object) -> int:
    if args.pr:
        from bot.cli.review_pr import review_pr

        return await review_pr(settings, args, **consoles)  # type: ignore[arg-type]
    from bot.cli.review_local import run_review

    return await run_review(settings, args, **consoles)  # type: ignore[arg-type]


def classify(exc: Exception) -> tuple[int, str]:
    """The exit code and the message for a failure that ended the review."""
    from bot.core.diff import DiffError
    from bot.llm import LLMError, LLMNotConfigured, ModelPriceUnknown
    from bot.review import ReviewFailed
    from bot.store import SchemaOutOfDate, StoreUnavailable
    from config.settings import SettingsError
    from platforms.base import PlatformError, PlatformNotConfigured

    if isinstance(exc, ReviewFailed):
        return EXIT_PROVIDER, f"not posted: {exc}"
    if isinstance(exc, ModelPriceUnknown):
        return EXIT_USAGE, f"{exc}; or run this review with --max-cost 0 (no cost cap)"
    if isinstance(exc, UsageError | DiffError | LLMNotConfigured | SettingsError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, SchemaOutOfDate | PlatformNotConfigured):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, PlatformError):
        refused = exc.status in (400, 401, 403, 404, 410, 422)
        return (EXIT_USAGE if refused else EXIT_PROVIDER), str(exc)
    if isinstance(exc, LLMError | StoreUnavailable | OSError):  # OSError: a connection
        return EXIT_PROVIDER, str(exc)
    if isinstance(exc, ValueError):  # a price table, a model name
        return EXIT_USAGE, str(exc)
    return EXIT_BUG, f"unexpected {type(exc).__name__}: {exc} (a bug: please report it)"
