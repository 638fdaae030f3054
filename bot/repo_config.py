"""A repository's `.arbiter.yml`: read from its default branch, cached per commit, put to use.

`RepoConfigs(settings).load(platform)` reads `.arbiter.yml` (else `.arbiter.yaml`) at the head
commit of the repository's default branch, never at a pull request's head, so a pull request
cannot reconfigure its own reviewer. The result is merged over the operator's defaults file
and the built-in defaults (config/repo.py) and cached per repository and commit. A bad file
never raises: its problems are in `.problems`, and `report_problems()` puts them in one comment
on the pull request, edited in place, and says so there once the file is fixed.

Only the Platform protocol is used here, so GitHub and GitLab share it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import cachetools

from bot.logs import Logger, get_logger
from bot.reviewer.prompting import PathInstruction
from bot.reviewer.render import code, neutralise
from bot.reviewer.review import ReviewOptions
from config.repo import REPO_FILE_NAMES, EffectiveConfig, Policy, Problem, resolve
from config.settings import Settings
from platforms.base import CommentRef, Permission, Platform, PlatformError, PullRequest

CONFIG_COMMENT_KEY = "repo-config"  # the upsert_comment key of the one problems comment
CACHE_SIZE = 1024  # repositories × commits kept; an entry is a few kilobytes

_log = get_logger(component="repo_config")


class RepoConfigs:
    """Effective `.arbiter.yml` configurations, per repository and default-branch commit.

    Build one per process. The operator's defaults file (ARBITER_REPO_CONFIG_DEFAULTS) is read
    once, here; a restart picks up a change to it. `load()` costs two small API calls (the
    default branch and its head commit) and, for a commit not seen before, one or two reads.
    """

    def __init__(self, settings: Settings, *, cache_size: int = CACHE_SIZE) -> None:
        self.policy = Policy.from_settings(settings)
        self.operator_file, self.operator_text, self._read_problem = read_operator_defaults(
            settings
        )
        self._cache: cachetools.LRUCache[tuple[str, str, str], EffectiveConfig] = (
            cachetools.LRUCache(maxsize=cache_size)
        )
        self._operator_logged = False

    @property
    def operator_problems(self) -> tuple[Problem, ...]:
        """What is wrong with the operator's defaults file (its layer is then not used)."""
        return tuple(p for p in self.resolve(None).problems if p.layer == "operator")

    def resolve(self, text: str | None, *, file: str = REPO_FILE_NAMES[0]) -> EffectiveConfig:
        """A repository file's text (None: it has none) merged over this process's defaults."""
        effective = resolve(
            text,
            operator_text=self.operator_text,
            policy=self.policy,
            repo_file=file,
            operator_file=self.operator_file or "operator defaults",
        )
        if self._read_problem is not None:
            effective = replace(effective, problems=(self._read_problem, *effective.problems))
        return effective

    async def load(
        self, platform: Platform, *, default_branch: str | None = None
    ) -> EffectiveConfig:
        """The configuration of the platform's repository, as on its default branch now
        (`default_branch`, when the caller knows its name, saves asking for it).

        Raises PlatformError when the platform cannot be asked (the caller's job retries);
        never for what the file says.
        """
        branch = default_branch or await platform.default_branch()
        commit = await platform.branch_head(branch)
        key = (platform.name, platform.repo.lower(), commit)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        text: str | None = None
        file = REPO_FILE_NAMES[0]
        for candidate in REPO_FILE_NAMES:
            text = await platform.read_file(candidate, commit)
            if text is not None:
                file = candidate
                break
        effective = replace(self.resolve(text, file=file), branch=branch, commit=commit)
        self._log_problems(effective, platform.repo)
        self._cache[key] = effective
        return effective

    def _log_problems(self, effective: EffectiveConfig, repo: str) -> None:
        for problem in effective.problems:
            if problem.layer == "operator":
                if self._operator_logged:
                    continue
                _log.error("operator defaults not used", file=problem.file, problem=str(problem))
            else:
                _log.warning(
                    "repository config problem",
                    repo=repo,
                    commit=effective.commit,
                    file=problem.file,
                    key=problem.key,
                    line=problem.line,
                )
        self._operator_logged = True


def read_operator_defaults(settings: Settings) -> tuple[str | None, str | None, Problem | None]:
    """(the file's name, its text, why it cannot be read); all None when none is configured."""
    path = settings.repo_config_defaults
    if path is None:
        return None, None, None
    name = str(path)
    try:
        return name, path.read_bytes().decode("utf-8", "replace"), None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return (
            name,
            None,
            Problem(
                name,
                "operator",
                None,
                f"ARBITER_REPO_CONFIG_DEFAULTS names this file, but it cannot be read "
                f"({reason}); the built-in defaults are used in its place",
            ),
        )


_shared: cachetools.LRUCache[tuple[Any, ...], RepoConfigs] = cachetools.LRUCache(maxsize=16)


def shared_repo_configs(settings: Settings) -> RepoConfigs:
    """One RepoConfigs per distinct set of the settings it depends on, for callers that were
    not handed one (a Context built without it): the cache then still lasts across events."""
    key = (
        str(settings.repo_config_defaults),
        tuple(settings.allowed_models),
        settings.max_cost_per_review_usd,
        settings.default_model,
    )
    configs = _shared.get(key)
    if configs is None:
        configs = _shared[key] = RepoConfigs(settings)
    return configs


# --- Putting the configuration to use ----------------------------------------------------------


def review_options(
    effective: EffectiveConfig,
    *,
    known_fingerprints: frozenset[str] = frozenset(),
    max_cost_usd: float | None = None,
) -> ReviewOptions:
    """The reviewer core's options for a review under this configuration; `max_cost_usd`
    replaces the configuration's cap (e.g. with what is left of a daily budget)."""
    config = effective.config
    cap = effective.max_cost_per_review_usd if max_cost_usd is None else max_cost_usd
    return ReviewOptions(
        model=effective.model,
        path_filters=tuple(config.path_filters),
        instructions=config.instructions,
        path_instructions=tuple(
            PathInstruction(entry.path, entry.instructions) for entry in config.path_instructions
        ),
        min_severity=effective.min_severity,
        min_confidence=config.review.min_confidence,
        max_comments=effective.max_comments,
        max_cost_usd=cap,  # 0 (no cap) only when the operator set none
        known_fingerprints=known_fingerprints,
    )


def skip_reason(
    effective: EffectiveConfig, pr: PullRequest, *, default_branch: str | None = None
) -> str | None:
    """Why the configuration says not to review `pr` automatically, or None to review it."""
    config = effective.config
    auto = config.auto_review
    if not config.enabled:
        return f"Arbiter is turned off here (enabled: false, {effective.sources['enabled']})"
    if not auto.enabled:
        return "automatic reviews are off (auto_review.enabled: false)"
    if pr.draft and not auto.drafts:
        return "a draft (auto_review.drafts is false)"
    default = default_branch or effective.branch or pr.default_branch
    if (
        default is not None
        and pr.base_ref != default
        and not any(re.fullmatch(pattern, pr.base_ref) for pattern in auto.base_branches)
    ):
        return (
            f"its base branch {pr.base_ref} is neither the default branch ({default}) nor "
            "matched by auto_review.base_branches"
        )
    ignored = {login.casefold() for login in auto.ignore_authors}
    if pr.author.casefold() in ignored:
        return f"its author {pr.author} is in auto_review.ignore_authors"
    title = pr.title.casefold()
    keyword = next((k for k in auto.ignore_title_keywords if k.casefold() in title), None)
    if keyword is not None:
        return f"its title contains {keyword!r} (auto_review.ignore_title_keywords)"
    labels = {label.casefold() for label in pr.labels}
    excluded = [x[1:].strip() for x in auto.labels if x.startswith("!")]
    required = [x for x in auto.labels if not x.startswith("!")]
    hit = next((x for x in excluded if x.casefold() in labels), None)
    if hit is not None:
        return f"it is labelled {hit!r} (excluded by auto_review.labels)"
    if required and not any(x.casefold() in labels for x in required):
        return f"it carries none of the labels {', '.join(required)} (auto_review.labels)"
    return None


def may_ask(effective: EffectiveConfig, permission: Permission) -> bool:
    """Whether someone with `permission` may put questions to the bot on this repository."""
    followup = effective.config.followup
    if not (effective.config.enabled and followup.enabled):
        return False
    return followup.allow == "everyone" or permission in ("admin", "write")


# --- Problems, on the pull request --------------------------------------------------------------


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
    file = code(effective.file or REPO_FILE_NAMES[0])
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
    items = [f"- {neutralise(_problem_line(p))}" for p in problems]
    return "\n".join(
        [
            "### ⚠️ Arbiter configuration",
            "",
            lead,
            "",
            *items,
            "",
            f"Check a fix with `arbiter config validate {effective.file or REPO_FILE_NAMES[0]}`; "
            "every key is described in Arbiter's docs/configuration.md. This comment is "
            "updated when the file on the default branch changes.",
        ]
    )


def fixed_comment(effective: EffectiveConfig) -> str:
    if effective.file is None:
        now = "there is no configuration file now, so the defaults apply."
    else:
        now = f"{code(effective.file)} is used as written."
    return "\n".join(
        ["### ✅ Arbiter configuration", "", f"The problems reported here are fixed: {now}"]
    )


def _problem_line(problem: Problem) -> str:
    return f"line {problem.line}: {problem.message}" if problem.line else problem.message


# --- `arbiter config validate FILE` ------------------------------------------------------------


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
