"""A repository's `.arbiter.yml` problems, on the pull request: one comment, edited in place.

The file's problems (config/repo.py says what they are) are posted once per pull request and
updated on later pushes; once the file is fixed the comment says so. Operator problems are
logged by the loader (bot/repo_config.py), never posted.
"""

from __future__ import annotations

from bot.context import Context
from bot.core.markdown import code, defused, neutralise
from bot.logs import Logger
from config.repo import REPO_FILE_NAMES, EffectiveConfig, Problem
from platforms.base import CommentRef, Platform, PlatformError, PullRequest

CONFIG_COMMENT_KEY = "repo-config"  # the upsert_comment key of the one problems comment


async def report_config(ctx: Context, pr: PullRequest, effective: EffectiveConfig) -> None:
    """The repository's configuration problems reported on `pr` (unless ARBITER_POST_COMMENTS
    is false), whether or not it is reviewed. Reporting never fails the review: a platform
    error there is logged, and the next event tries again."""
    if ctx.settings.post_comments:
        await report_problems_logged(ctx.platform, pr, effective, ctx.log)


async def report_problems(
    platform: Platform, pr: PullRequest, effective: EffectiveConfig
) -> CommentRef | None:
    """Post the repository file's problems as one comment on `pr`, edited in place on later
    pushes; with none, turn an earlier such comment into a note that they are fixed. Returns
    the comment, or None when there is none. Operator problems are logged, never posted."""
    if effective.repo_problems:
        return await platform.upsert_comment(pr, CONFIG_COMMENT_KEY, problems_comment(effective))
    if await platform.find_comment(pr, CONFIG_COMMENT_KEY) is None:
        return None
    return await platform.upsert_comment(pr, CONFIG_COMMENT_KEY, fixed_comment(effective))


async def report_problems_logged(
    platform: Platform, pr: PullRequest, effective: EffectiveConfig, log: Logger
) -> None:
    """`report_problems`, with a platform failure logged instead of raised: the review can go on
    without the comment, and the next event tries again."""
    try:
        await report_problems(platform, pr, effective)
    except PlatformError as exc:
        log.warning("could not report the configuration's problems", error=str(exc))


def problems_comment(effective: EffectiveConfig) -> str:
    problems = effective.repo_problems
    name = effective.file or REPO_FILE_NAMES[0]
    file = code(name)
    branch = f" on {code(effective.branch)}" if effective.branch else ""
    count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
    if effective.repo_file_used:
        lead = (
            f"{file}{branch} asks for settings this Arbiter does not allow ({count}); those "
            "settings are not applied, the rest of the file is:"
        )
    else:
        lead = (
            f"{file}{branch} cannot be used ({count}), so pull requests are reviewed with the "
            "defaults until it is fixed:"
        )
    items = [f"- {neutralise(' '.join(_problem_line(p).split()))}" for p in problems]
    text = "\n".join(
        [
            "### ⚠️ Arbiter configuration",
            "",
            lead,
            "",
            *items,
            "",
            f"Check a fix with {code('arbiter config validate ' + name)}; "
            "every key is described in Arbiter's docs/configuration.md. This comment is "
            "updated when the file on the default branch changes.",
        ]
    )
    return defused(text)


def fixed_comment(effective: EffectiveConfig) -> str:
    if effective.file is None:
        now = "there is no configuration file now, so the defaults apply."
    else:
        now = f"{code(effective.file)} is used as written."
    return defused(
        "\n".join(
            ["### ✅ Arbiter configuration", "", f"The problems reported here are fixed: {now}"]
        )
    )


def _problem_line(problem: Problem) -> str:
    return f"line {problem.line}: {problem.message}" if problem.line else problem.message
