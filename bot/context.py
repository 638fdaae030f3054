"""The one argument every handler gets: the event and what it needs to act on it.

A Context knows the framework's parts (settings, store, the LLM client, the platform bound to
the event's repository, the repository's configuration, a bound logger, the redactor) and no
use case: the review (bot/review/) and the conversation (bot/conversation/) take a Context,
never the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.events import Event
from bot.logs import Logger, get_logger
from bot.metrics import Metrics
from bot.redaction import Redactor
from bot.store import Store
from config.settings import Settings
from platforms.base import Platform, PullRequest

if TYPE_CHECKING:  # imported by the jobs that use them, not by a process that only takes webhooks
    from bot.llm import LLM
    from bot.repo_config import RepoConfigs
    from config.repo import EffectiveConfig

PlatformFactory = Callable[[Event], Platform]


@dataclass
class Context:
    event: Event
    settings: Settings
    store: Store
    metrics: Metrics
    platform_factory: PlatformFactory
    job_id: int | None = None
    llm: LLM | None = None  # the runtime's model client; None where no model is wired
    repo_configs: RepoConfigs | None = None  # the runtime's (its cache outlives the event)
    notify: Callable[[], None] = field(default=lambda: None, repr=False)  # wakes local workers
    clock: Callable[[], float] = field(default=time.time, repr=False)
    # Masks secrets in what is stored or posted (built without the runtime's: shapes only).
    redactor: Redactor = field(default_factory=Redactor, repr=False)
    log: Logger = field(init=False)
    _platform: Platform | None = field(default=None, init=False, repr=False)
    _repo_config: EffectiveConfig | None = field(default=None, init=False, repr=False)
    _guessed: EffectiveConfig | None = field(default=None, init=False, repr=False)  # read ahead

    def __post_init__(self) -> None:
        e = self.event
        self.log = get_logger(
            delivery_id=e.delivery_id,
            platform=e.platform,
            event=e.label,
            repo=e.repo,
            number=e.number,
            job_id=self.job_id,
        )
        if self.repo_configs is None:
            from bot.repo_config import RepoConfigs

            # Built without the runtime's (a test, a one-off): a cache of its own.
            self.repo_configs = RepoConfigs(self.settings)

    @property
    def platform(self) -> Platform:
        """The event's platform, bound to its repository (and installation), built on first use.

        Raises PlatformNotConfigured, naming the settings to add, when this process has none.
        """
        if self._platform is None:
            self._platform = self.platform_factory(self.event)
        return self._platform

    @property
    def model(self) -> LLM:
        """The LLM client; raises RuntimeError when this context was built without one."""
        if self.llm is None:
            raise RuntimeError("this context has no LLM client: the runtime is not started")
        return self.llm

    async def repo_config(self, pr: PullRequest | None = None) -> EffectiveConfig:
        """The `.arbiter.yml` of the repository's default branch, merged over the operator's
        defaults and the built-in ones; loaded once per event, cached per repository and
        commit (bot/repo_config.py). `pr`, when known, saves asking for the default branch.

        A bad file does not raise: `.problems` says what is wrong and the defaults apply.
        Raises PlatformError when the platform cannot be asked.
        """
        if self._repo_config is None:
            guessed, self._guessed = self._guessed, None
            if guessed is not None and pr is not None and guessed.branch == pr.default_branch:
                self._repo_config = guessed  # read beside the pull request, from its branch
                return guessed
            assert self.repo_configs is not None  # set in __post_init__
            branch = pr.default_branch if pr is not None else None
            self._repo_config = await self.repo_configs.load(self.platform, default_branch=branch)
        return self._repo_config

    async def prefetch_repo_config(self) -> None:
        """Read the configuration from the default branch this repository had at its last
        load, while the pull request is being fetched: a review then waits for one round trip
        instead of two. `repo_config(pr)` uses it only if the pull request names that same
        default branch (one renamed since is read again). Never raises: the read that counts
        reports its own failure."""
        assert self.repo_configs is not None  # set in __post_init__
        if self._repo_config is not None or self._guessed is not None:
            return
        branch = self.repo_configs.branch_seen(self.platform)
        if branch is None:
            return
        try:
            self._guessed = await self.repo_configs.load(self.platform, default_branch=branch)
        except Exception as exc:  # e.g. the branch is gone: the guess is simply not used
            self.log.debug("configuration not read ahead", branch=branch, error=str(exc))
