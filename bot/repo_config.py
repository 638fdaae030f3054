"""A repository's `.arbiter.yml`: read from its default branch, merged, cached per commit.

`RepoConfigs(settings).load(platform)` reads `.arbiter.yml` (else `.arbiter.yaml`) at the head
commit of the repository's default branch, never at a pull request's head, so a pull request
cannot reconfigure its own reviewer. The result is merged over the operator's defaults file
and the built-in defaults (config/repo.py) and cached per repository and commit. A bad file
never raises: its problems are in `.problems` (the review reports them on the pull request:
bot/review/config_problems.py).

The runtime owns one RepoConfigs, so the cache lasts across events. Only the Platform protocol
is used here, so GitHub and GitLab share it.
"""

from __future__ import annotations

from dataclasses import replace

import cachetools

from bot.logs import get_logger
from config.repo import REPO_FILE_NAMES, EffectiveConfig, Policy, Problem, resolve
from config.settings import Settings
from platforms.base import Platform

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
        # The default branch each repository's last load read (a guess for the next load: see
        # `branch_seen`); bounded like the configurations.
        self._branches: cachetools.LRUCache[tuple[str, str], str] = cachetools.LRUCache(
            maxsize=cache_size
        )
        self._operator_logged = False

    def branch_seen(self, platform: Platform) -> str | None:
        """The default branch this repository's last load read, if any: a guess that lets a
        review read the configuration beside the call that says what the branch is now."""
        return self._branches.get((platform.name, platform.repo.lower()))

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
        self._branches[(platform.name, platform.repo.lower())] = branch
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
