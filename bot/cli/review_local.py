"""`arbiter review` of a local change: the working tree, a commit range, or a saved diff.

The repository's `.arbiter.yml` is read from the working tree (the top of the git repository,
else the current folder) and applied as the bot applies it (bot/review/policy.py), under the
command line's options. A diff in any encoding is read: a line that is not UTF-8 is taken as
Latin-1 rather than refused. Answers are cached in the store when ARBITER_DATABASE_URL is set,
else for this run only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.cli.review import EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_OK, UsageError
from bot.cli.review_output import print_json, print_result
from bot.core.review import ReviewOptions, ReviewResult, review_changes
from bot.llm import LLM, make_llm
from bot.metrics import Metrics
from bot.repo_config import RepoConfigs
from bot.review.policy import review_options
from bot.store import Store, make_store
from config.repo import REPO_FILE_NAMES, EffectiveConfig
from config.settings import Settings
from config.severity import SEVERITY_RANK, Severity
from platforms.base import FileChange

GIT_ERROR_LINES = 4  # of git's own complaint: enough to say what is wrong, never its usage page
PATH_FILTERED = ("outside the path filters", "excluded by the path filter")  # bot/core/filters.py


class GitError(UsageError):
    pass


async def run_review(
    settings: Settings, args: argparse.Namespace, *, out: Console, err: Console
) -> int:
    diff, root = await _read_change(args)
    effective = repo_config(settings, args, root, err)
    if not diff.strip():
        err.print("arbiter review: nothing to review (the diff is empty)")
        return EXIT_OK
    options = apply_arguments(review_options(effective), args)
    store = await _open_store(settings, err) if not args.no_cache else None
    llm = make_llm(settings, store, Metrics())
    try:
        result = await review_with_progress(llm, diff, options, args, err)
    finally:
        await llm.close()
        if store is not None:
            await store.close()
    return report(result, args, effective, out=out, err=err)


def report(
    result: ReviewResult,
    args: argparse.Namespace,
    effective: EffectiveConfig,
    *,
    out: Console,
    err: Console,
    **extra: object,
) -> int:
    """Print the result; the exit code it calls for."""
    filtered = [n for n in result.not_reviewed if n.reason.startswith(PATH_FILTERED)]
    if result.chunks == 0 and filtered and len(filtered) == len(result.not_reviewed):
        files = len({n.path for n in filtered})
        err.print(
            f"arbiter review: nothing to review: the path filters match none of the {files} "
            f"changed file{'s' if files != 1 else ''} ({escape(filtered[0].reason)})"
        )
    if args.json:
        print_json(result, out, config=_config_facts(effective), **extra)
    else:
        print_result(result, out)
    fail_on = args.fail_on or effective.config.review.fail_on
    if fail_on in SEVERITY_RANK and result.at_least(cast(Severity, fail_on)):
        return EXIT_FINDINGS
    if result.errors:
        return EXIT_INCOMPLETE
    return EXIT_OK


async def review_with_progress(
    llm: LLM,
    changes: Sequence[FileChange] | str,
    options: ReviewOptions,
    args: argparse.Namespace,
    err: Console,
    *,
    title: str = "",
    description: str = "",
) -> ReviewResult:
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

    with progress:
        return await review_changes(
            llm,
            changes,
            options,
            title=title or args.title,
            description=description or args.description,
            on_progress=advance,
        )


# --- The repository's configuration -----------------------------------------------------------


def repo_config(
    settings: Settings, args: argparse.Namespace, root: Path, err: Console
) -> EffectiveConfig:
    """The `.arbiter.yml` of the working tree merged as the bot merges it; says which file."""
    configs = RepoConfigs(settings)
    text: str | None = None
    file = REPO_FILE_NAMES[0]
    if args.no_repo_config:
        err.print("config: the repository's .arbiter.yml is skipped (--no-repo-config)")
    else:
        for name in REPO_FILE_NAMES:
            path = root / name
            if path.is_file():
                text, file = _decode(path.read_bytes()), str(path)
                break
        if text is None:
            err.print(f"config: no .arbiter.yml in {escape(str(root))}: the defaults apply")
        else:
            err.print(f"config: {escape(file)}")
    effective = configs.resolve(text, file=file)
    for problem in effective.problems:
        err.print(f"config problem: {escape(str(problem))}")
    if effective.problems and text is not None and not effective.repo_file_used:
        err.print(f"config: {escape(file)} is not used for its problems: the defaults apply")
    if not effective.config.enabled:
        err.print("config: it turns Arbiter off here (enabled: false); reviewing as asked")
    return effective


def apply_arguments(options: ReviewOptions, args: argparse.Namespace) -> ReviewOptions:
    """The configuration's options with the command line's over them."""
    changes: dict[str, object] = {}
    if args.model:
        changes["model"] = args.model
    if args.path_filter:
        changes["path_filters"] = tuple(args.path_filter)
    if args.instructions is not None:
        changes["instructions"] = args.instructions
    for name in ("min_severity", "min_confidence", "max_comments"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.max_cost is not None:
        changes["max_cost_usd"] = args.max_cost
    return replace(options, **changes)  # type: ignore[arg-type]


def _config_facts(effective: EffectiveConfig) -> dict[str, object]:
    return {
        "file": effective.file,
        "used": effective.repo_file_used,
        "problems": [str(p) for p in effective.problems],
        "branch": effective.branch,
        "commit": effective.commit,
    }


# --- Where the change comes from ---------------------------------------------------------------


def _decode(data: bytes) -> str:
    """A diff's text, line by line: UTF-8, or Latin-1 for a line that is not (a file in a
    legacy encoding must not stop the review of the others, nor reach the model garbled)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines = []
    for line in data.splitlines(keepends=True):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("latin-1"))
    return "".join(lines)


async def _read_change(args: argparse.Namespace) -> tuple[str, Path]:
    """The diff to review, and the folder whose `.arbiter.yml` applies."""
    if args.patch:
        folder = await _top_level() or Path.cwd()
        if args.patch == "-":
            return _decode(await asyncio.to_thread(sys.stdin.buffer.read)), folder
        try:
            data = await asyncio.to_thread(Path(args.patch).read_bytes)
        except OSError as exc:
            raise UsageError(f"cannot read {args.patch}: {exc.strerror or exc}") from None
        return _decode(data), folder
    root = await _top_level()
    if root is None:
        raise GitError(
            f"{Path.cwd()} is not inside a git repository: run `arbiter review` in one, or "
            "review a saved diff with --patch FILE"
        )
    if args.range:
        return _decode(await _git("diff", "--no-color", "--no-ext-diff", args.range)), root
    base = "HEAD" if await _has_commits() else await _empty_tree()
    tracked = await _git("diff", "--no-color", "--no-ext-diff", base)
    untracked = await _git("ls-files", "--others", "--exclude-standard", "-z")
    parts = [tracked]
    for path in filter(None, untracked.split(b"\0")):
        parts.append(
            await _git(
                "diff",
                "--no-color",
                "--no-ext-diff",
                "--no-index",
                "--",
                "/dev/null",
                path.decode("utf-8", "surrogateescape"),
            )
        )
    return _decode(b"".join(parts)), root


async def _top_level() -> Path | None:
    """The top of the git repository around the current folder; None outside one."""
    if shutil.which("git") is None:
        return None
    try:
        text = await _git("rev-parse", "--show-toplevel")
    except GitError:
        return None
    return Path(text.decode("utf-8", "surrogateescape").strip())


async def _has_commits() -> bool:
    try:
        await _git("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    except GitError:
        return False  # a repository with no commit yet: everything in it is new
    return True


async def _empty_tree() -> str:
    """The empty tree's id in this repository's hash (SHA-1 or SHA-256)."""
    text = await _git("hash-object", "-t", "tree", "/dev/null")
    return text.decode().strip()


async def _git(*argv: str) -> bytes:
    git = shutil.which("git")
    if git is None:
        raise GitError("git is not installed: review a saved diff with --patch FILE")
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
        lines = stderr.decode("utf-8", "replace").strip().splitlines()[:GIT_ERROR_LINES]
        message = " ".join(line.strip() for line in lines) or f"exit status {proc.returncode}"
        raise GitError(f"git {' '.join(argv)} failed: {message}")
    return stdout


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
