"""`arbiter review --pr URL`: a pull request (GitHub) or merge request (GitLab) reviewed as the
bot reviews it, from the command line.

The URL's host picks the platform: GitHub's web host is the one of ARBITER_GITHUB_BASE_URL
(github.com for api.github.com, HOST for an Enterprise https://HOST/api/v3), GitLab's is
ARBITER_GITLAB_BASE_URL's. The platform credentials are the bot's (a token, or the GitHub App,
whose installation on the repository is looked up). The configuration is the default branch's
`.arbiter.yml`, through the runtime's RepoConfigs, as for every event.

By default the review is printed, never posted, and nothing is recorded (a throw-away store,
unless ARBITER_DATABASE_URL is set for the cache). `--post` runs the bot's own review use case
(bot/review/pull_request.py) against the server's store: the same review key, summary marker,
commit status, findings already posted left out, and everything recorded.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import tempfile
import uuid
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape

from bot.cli.review import EXIT_FINDINGS, EXIT_OK, EXIT_PROVIDER, EXIT_USAGE, UsageError
from bot.cli.review_local import apply_arguments, report, review_with_progress
from bot.context import Context
from bot.events import Event
from bot.review import Attempt, ReviewFailed, ReviewRequest, review_pull_request
from bot.review.policy import review_options
from bot.runtime import Runtime
from bot.store import JobDeferred
from config.repo import EffectiveConfig
from config.settings import Settings, mask_url
from config.severity import SEVERITY_RANK
from platforms.base import PlatformName, PullRequest
from platforms.github_manifest import github_web_url

_GITHUB_PATH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/pulls?/(?P<number>\d+)(?:/.*)?$")
_GITLAB_PATH = re.compile(r"^/(?P<repo>[^/].*?)/(?:-/)?merge_requests/(?P<number>\d+)(?:/.*)?$")
# Options the bot's review does not take: with --post, the .arbiter.yml decides them.
_NOT_WITH_POST = (
    "model",
    "path_filter",
    "instructions",
    "min_severity",
    "min_confidence",
    "max_comments",
    "max_cost",
    "title",
    "description",
)


@dataclass(frozen=True)
class PullRequestAddress:
    platform: PlatformName
    repo: str  # "owner/name", or GitLab's "group/subgroup/project"
    number: int


def parse_pr_url(url: str, settings: Settings) -> PullRequestAddress:
    """Which platform, repository and number a pull request's web address names.

    Raises UsageError saying what was expected, or which setting makes a host known.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"--pr takes a pull request's web address, e.g. "
            f"https://github.com/OWNER/REPO/pull/N, not {mask_url(url)!r}"
        )
    host = parts.netloc.lower().rpartition("@")[2]
    github = urlsplit(github_web_url(settings.github_base_url))
    gitlab = urlsplit(settings.gitlab_base_url)
    for platform, base, pattern, example in (
        ("github", github, _GITHUB_PATH, "/OWNER/REPO/pull/N"),
        ("gitlab", gitlab, _GITLAB_PATH, "/GROUP/PROJECT/-/merge_requests/N"),
    ):
        prefix = base.path.rstrip("/")
        if base.netloc.lower() != host or not parts.path.startswith(prefix + "/"):
            continue
        match = pattern.match(parts.path[len(prefix) :])
        if match is None:
            raise UsageError(
                f"{url} is not a {'pull' if platform == 'github' else 'merge'} request's address "
                f"on {base.netloc}: expected {base.scheme}://{base.netloc}{prefix}{example}"
            )
        return PullRequestAddress(
            cast(PlatformName, platform), match["repo"].rstrip("/"), int(match["number"])
        )
    raise UsageError(
        f"{host} is neither this server's GitHub ({github.netloc}, from "
        f"ARBITER_GITHUB_BASE_URL) nor its GitLab ({gitlab.netloc}, from "
        f"ARBITER_GITLAB_BASE_URL): for GitHub Enterprise set "
        f"ARBITER_GITHUB_BASE_URL=https://{host}/api/v3, for a self-managed GitLab "
        f"ARBITER_GITLAB_BASE_URL=https://{host}"
    )


async def review_pr(
    settings: Settings, args: argparse.Namespace, *, out: Console, err: Console
) -> int:
    address = parse_pr_url(args.pr, settings)
    if args.post:
        given = [f"--{n.replace('_', '-')}" for n in _NOT_WITH_POST if _given(args, n)]
        if given:
            raise UsageError(
                f"--post posts the review the bot would post: {', '.join(given)} do not apply "
                "(the repository's .arbiter.yml and the settings decide)"
            )
    async with AsyncExitStack() as stack:
        if args.post:
            store_settings = _servers_store(settings)
        elif "database_url" in settings.model_fields_set and not args.no_cache:
            store_settings = settings  # for its cache; nothing else is written there
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="arbiter-review-"))
            url = f"sqlite:///{Path(folder) / 'review.db'}"
            store_settings = settings.model_copy(update={"database_url": url})
        runtime = Runtime(store_settings)
        await runtime.start()
        stack.push_async_callback(runtime.close)
        ctx = _context(runtime, address)
        pr = await ctx.platform.pull_request(address.number)
        effective = await ctx.repo_config(pr)
        _say_config(effective, address, err)
        if args.post:
            return await _post(ctx, pr, effective, args, out=out, err=err)
        options = apply_arguments(review_options(effective), args)
        changes = await ctx.platform.changes(pr)
        result = await review_with_progress(
            ctx.model, changes.files, options, args, err, title=pr.title, description=pr.body or ""
        )
        about = {"platform": address.platform, "repo": address.repo, "number": address.number}
        return report(
            result,
            args,
            effective,
            out=out,
            err=err,
            pull_request={**about, "head_sha": pr.head_sha, "url": pr.url},
        )
    raise AssertionError("unreachable")  # the stack above returns or raises


def _given(args: argparse.Namespace, name: str) -> bool:
    value = getattr(args, name)
    return bool(value) if isinstance(value, list | str) else value is not None


def _servers_store(settings: Settings) -> Settings:
    """The settings, as they are: `--post` records in the server's store, where its earlier
    reviews and findings are. A SQLite file that does not exist is not the server's."""
    url = settings.database_url
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1].split("?", 1)[0]
        if path and path != ":memory:" and not Path(path).exists():
            raise UsageError(
                f"--post records the review in the server's store, and {path} does not exist: "
                "run it with the server's ARBITER_DATABASE_URL (or in its folder), or create "
                "a new store with `arbiter migrate` first"
            )
    return settings


def _context(runtime: Runtime, address: PullRequestAddress) -> Context:
    if address.platform == "github" and runtime.github is None:
        raise UsageError(
            "reviewing a GitHub pull request needs ARBITER_GITHUB_TOKEN, or ARBITER_GITHUB_APP_ID "
            "with ARBITER_GITHUB_PRIVATE_KEY (or ARBITER_GITHUB_PRIVATE_KEY_PATH)"
        )
    if address.platform == "gitlab" and runtime.gitlab is None:
        raise UsageError("reviewing a GitLab merge request needs ARBITER_GITLAB_TOKEN")
    event = Event(
        platform=address.platform,
        name="review",
        action="cli",
        delivery_id=f"cli-{uuid.uuid4()}",
        repo=address.repo,
        number=address.number,
        installation_id=None,  # an App's installation is looked up from the repository
    )
    return runtime.context(event)


def _say_config(effective: EffectiveConfig, address: PullRequestAddress, err: Console) -> None:
    at = f"{effective.branch}@{(effective.commit or '')[:7]} of {address.repo}"
    if effective.file is None:
        err.print(f"config: no .arbiter.yml on {escape(at)}: the defaults apply")
    else:
        err.print(f"config: {escape(effective.file)} on {escape(at)}")
    for problem in effective.problems:
        err.print(f"config problem: {escape(str(problem))}")


async def _post(
    ctx: Context,
    pr: PullRequest,
    effective: EffectiveConfig,
    args: argparse.Namespace,
    *,
    out: Console,
    err: Console,
) -> int:
    request = ReviewRequest(
        platform=ctx.event.platform,
        repo=pr.repo,
        number=pr.number,
        delivery_id=ctx.event.delivery_id,
        reason="arbiter review --post",
        requested_by=f"{getpass.getuser()} (arbiter review --post)",
    )
    try:
        review_id = await review_pull_request(ctx, request, Attempt(job_id=None, last=True))
    except ReviewFailed as exc:
        err.print(f"arbiter review: not posted: {escape(str(exc))}")
        return EXIT_PROVIDER
    except JobDeferred as exc:
        err.print(f"arbiter review: not posted: {escape(str(exc))} (ARBITER_DAILY_BUDGET_USD)")
        return EXIT_USAGE
    record = None if review_id is None else await ctx.store.get_review(review_id)
    if record is None:
        reason = (
            f"the pull request is {pr.state}"
            if pr.state != "open"
            else "the repository's .arbiter.yml turns Arbiter off (enabled: false)"
        )
        err.print(f"arbiter review: not reviewed: {reason}")
        return EXIT_OK
    findings = await ctx.store.findings_for(
        ctx.event.platform, pr.repo, pr.number, review_id=record.id
    )
    if args.json:
        data = {**asdict(record), "findings": [asdict(f) for f in findings]}
        out.print_json(json.dumps(data, default=str))
    else:
        posted = "recorded, not posted (ARBITER_POST_COMMENTS=false)"
        if ctx.settings.post_comments:
            posted = "posted"
        out.print(
            f"{posted}: review {record.id} of {escape(pr.repo)}#{pr.number} at "
            f"{record.head_sha[:7]} ({record.mode}): {record.outcome}, "
            f"{escape(record.reason or '')}"
        )
        for f in findings:
            mark = "" if f.posted else "  [dim](not posted)[/dim]"
            out.print(
                f"  {escape(f.path)}:{f.line}  [bold]{f.severity}[/bold]  {escape(f.title)}{mark}"
            )
        if record.url:
            out.print(f"summary: {escape(record.url)}")
        out.print(
            f"{record.findings} finding{'s' if record.findings != 1 else ''} · "
            f"{escape(record.model or '-')} · {record.calls} call(s) · ${record.cost_usd:.4f}"
        )
    fail_on = args.fail_on or effective.config.review.fail_on
    floor = SEVERITY_RANK.get(fail_on)
    if floor is not None and any(SEVERITY_RANK.get(f.severity, -1) >= floor for f in findings):
        return EXIT_FINDINGS
    return EXIT_PROVIDER if record.outcome == "error" else EXIT_OK
