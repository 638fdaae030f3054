"""`arbiter review`: review a local change with the configured model, before anyone else sees it.

    arbiter review                  the working tree (and untracked files) against HEAD
    arbiter review main..HEAD       a range of commits (anything `git diff` accepts)
    arbiter review --patch FILE     a saved unified diff; `--patch -` reads standard input

Findings print grouped by file (or as JSON with `--json`), with what was dropped and what was
not reviewed. `--fail-on SEVERITY` exits 1 when a finding is at least that severe, so the
command can gate a CI job or a pre-push hook; a review cut short by a model error exits 3.
Answers are cached in the store when ARBITER_DATABASE_URL is set, else for this run only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.core.diff import DiffError
from bot.core.findings import Finding
from bot.core.review import ReviewOptions, ReviewResult, review_changes
from bot.llm import LLMNotConfigured, ModelPriceUnknown, make_llm
from bot.metrics import Metrics
from bot.store import Store, make_store
from config.settings import Settings
from config.severity import SEVERITIES

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # terminal escapes in model text


class GitError(Exception):
    pass


def add_review_arguments(parser: argparse.ArgumentParser) -> None:
    """The `arbiter review` options (bot/cli/commands.py adds the subcommand)."""
    parser.add_argument(
        "range",
        nargs="?",
        help="commits to review, e.g. main..HEAD (default: the working tree against HEAD)",
    )
    parser.add_argument(
        "--patch", metavar="FILE", help="review a unified diff file instead; - reads stdin"
    )
    parser.add_argument("--model", help="the model (default: ARBITER_DEFAULT_MODEL)")
    parser.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        help="exit 1 when a finding is at least this severe",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--path-filter",
        "-p",
        action="append",
        default=[],
        metavar="GLOB",
        help="review only matching paths; !GLOB excludes (repeatable)",
    )
    parser.add_argument(
        "--instructions", default="", metavar="TEXT", help="extra instructions for the model"
    )
    parser.add_argument(
        "--min-severity", choices=SEVERITIES, default="nit", help="drop findings below this"
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=0.5,
        metavar="0..1",
        help="drop findings the model is less sure of (default: 0.5)",
    )
    parser.add_argument(
        "--max-comments", type=int, default=50, metavar="N", help="keep at most N findings"
    )
    parser.add_argument(
        "--max-cost", type=float, metavar="USD", help="cost cap (default: the setting; 0: none)"
    )
    parser.add_argument("--title", default="", metavar="TEXT", help="a title for the change")
    parser.add_argument(
        "--description", default="", metavar="TEXT", help="a description of the change"
    )
    parser.add_argument("--no-cache", action="store_true", help="do not use the store's cache")


def review_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run `arbiter review`; the process exit code."""
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False, soft_wrap=True)
    # The SDKs' HTTP client logs every request at INFO: noise between the findings.
    logging.getLogger("httpx2").setLevel(max(logging.getLogger().level, logging.WARNING))
    try:
        return asyncio.run(run_review(settings, args, out=out, err=err))
    except (GitError, DiffError, LLMNotConfigured, ModelPriceUnknown, ValueError, OSError) as exc:
        err.print(f"arbiter review: {escape(str(exc))}", markup=True)
        return EXIT_USAGE


async def run_review(
    settings: Settings, args: argparse.Namespace, *, out: Console, err: Console
) -> int:
    diff = await _read_change(args)
    if not diff.strip():
        err.print("arbiter review: nothing to review (the diff is empty)")
        return EXIT_OK
    options = ReviewOptions(
        model=args.model,
        path_filters=tuple(args.path_filter),
        instructions=args.instructions,
        min_severity=args.min_severity,
        min_confidence=args.min_confidence,
        max_comments=args.max_comments,
        max_cost_usd=args.max_cost,
    )
    store = await _open_store(settings, err) if not args.no_cache else None
    llm = make_llm(settings, store, Metrics())
    progress = Progress(
        TextColumn("reviewing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=args.json and not err.is_terminal,
    )
    task = progress.add_task("review", total=None)

    def advance(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    try:
        with progress:
            result = await review_changes(
                llm,
                diff,
                options,
                title=args.title,
                description=args.description,
                on_progress=advance,
            )
    finally:
        await llm.close()
        if store is not None:
            await store.close()
    if args.json:
        out.print_json(json.dumps(result.as_dict(), default=str))
    else:
        print_result(result, out)
    if args.fail_on and result.at_least(args.fail_on):
        return EXIT_FINDINGS
    if result.errors:
        return EXIT_INCOMPLETE
    return EXIT_OK


def print_result(result: ReviewResult, out: Console) -> None:
    """Findings grouped by file, then what was left out, then the bill."""
    by_file: dict[str, list[Finding]] = defaultdict(list)
    for finding in result.findings:
        by_file[finding.path].append(finding)
    for path, findings in by_file.items():
        out.print(f"[bold]{escape(path)}[/bold]")
        for f in findings:
            where = f"{f.start_line}-{f.line}" if f.start_line else str(f.line)
            out.print(
                f"  line {where}  [bold]{f.severity}[/bold]  {f.category}  "
                f"{escape(_clean(f.title))}  [dim](confidence {f.confidence:.0%})[/dim]"
            )
            for line in _clean(f.body).splitlines():
                out.print(f"      {escape(line)}")
            if f.suggestion is not None:
                out.print("      suggestion:")
                for line in _clean(f.suggestion).splitlines() or [""]:
                    out.print(f"        [green]{escape(line)}[/green]")
        out.print()
    if not result.findings:
        out.print("No findings.")
        out.print()
    if result.dropped:
        out.print(f"[bold]Dropped findings ({len(result.dropped)}):[/bold]")
        for d in result.dropped:
            out.print(
                f"  {escape(d.path)}:{d.line}  {escape(d.reason)}  ({escape(_clean(d.title))})"
            )
        out.print()
    if result.not_reviewed:
        files = len({n.path for n in result.not_reviewed})
        out.print(f"[bold]Not reviewed ({files} file{'s' if files != 1 else ''}):[/bold]")
        for n in result.not_reviewed:
            span = f" (lines {n.lines[0]}-{n.lines[1]})" if n.lines else ""
            out.print(f"  {escape(n.path)}{span}: {escape(n.reason)}")
        out.print()
    for error in result.errors:
        out.print(f"[bold red]Error:[/bold red] {escape(error)}")
    counts = {s: 0 for s in SEVERITIES}
    for f in result.findings:
        counts[f.severity] += 1
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"
    u = result.usage
    cost = f"${u.cost_usd:.4f}" if u.priced else "cost unknown"
    cached = f" ({u.cached_calls} cached)" if u.cached_calls else ""
    out.print(
        f"{len(result.findings)} finding{'s' if len(result.findings) != 1 else ''} ({tally}) · "
        f"{escape(result.model)} · {u.calls} call{'s' if u.calls != 1 else ''}{cached} · "
        f"{u.input_tokens:,} input + {u.output_tokens:,} output tokens · {cost}"
    )


def _clean(text: str) -> str:
    return _CONTROL.sub("", text)


# --- Where the change comes from ---------------------------------------------------------------


async def _read_change(args: argparse.Namespace) -> str:
    if args.patch:
        if args.range:
            raise ValueError("give either a commit range or --patch, not both")
        if args.patch == "-":
            return await asyncio.to_thread(sys.stdin.read)
        return await asyncio.to_thread(Path(args.patch).read_text, encoding="utf-8")
    if args.range:
        return await _git("diff", "--no-color", "--no-ext-diff", args.range)
    tracked = await _git("diff", "--no-color", "--no-ext-diff", "HEAD")
    untracked = await _git("ls-files", "--others", "--exclude-standard", "-z")
    parts = [tracked]
    for path in filter(None, untracked.split("\0")):
        parts.append(
            await _git("diff", "--no-color", "--no-ext-diff", "--no-index", "--", "/dev/null", path)
        )
    return "".join(parts)


async def _git(*argv: str) -> str:
    git = shutil.which("git")
    if git is None:
        raise GitError("git is not installed; use --patch FILE")
    proc = await asyncio.create_subprocess_exec(
        git,
        "-c",
        "core.quotepath=off",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    no_index = "--no-index" in argv
    if proc.returncode not in ((0, 1) if no_index else (0,)):  # --no-index: 1 means "differs"
        message = stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
        raise GitError(f"git {' '.join(argv)} failed: {message}")
    return stdout.decode("utf-8", "replace")


async def _open_store(settings: Settings, err: Console) -> Store | None:
    """The configured store, for its cache, only when the operator configured one: a local
    review should not leave an arbiter.db in the repository it reviews."""
    if "database_url" not in settings.model_fields_set:
        return None
    store = make_store(settings)
    try:
        await store.open()
        if store.backend == "sqlite":
            await store.migrate()
        elif not (await store.schema_status()).up_to_date:
            raise RuntimeError("the store's schema is out of date (run `arbiter migrate`)")
    except Exception as exc:  # the cache is optional: review without it
        err.print(f"arbiter review: not using the store's cache: {escape(str(exc))}")
        await store.close()
        return None
    return store
