"""The one argument every handler gets: the event and what it needs to act on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.events import Event
from bot.logs import Logger, get_logger
from bot.metrics import Metrics
from bot.repo_config import RepoConfigs, report_problems_logged, shared_repo_configs
from bot.reviewer.answer import Answerer
from bot.reviewer.policy import review_job_key
from bot.reviewer.request import REVIEW_JOB, ReviewRequest
from bot.store import Enqueued, NewJob, Store
from config.repo import EffectiveConfig
from config.settings import Settings
from platforms.base import Platform, PullRequest

PlatformFactory = Callable[[Event], Platform]


@dataclass
class Context:
    event: Event
    settings: Settings
    store: Store
    metrics: Metrics
    platform_factory: PlatformFactory
    job_id: int | None = None
    reviewer: Any = None
    answerer: Answerer | None = None  # answers questions put to the bot (bot/reviewer/answer.py)
    repo_configs: RepoConfigs | None = None  # the runtime's; None: one shared per settings
    notify: Callable[[], None] = field(default=lambda: None, repr=False)  # wakes local workers
    log: Logger = field(init=False)
    _platform: Platform | None = field(default=None, init=False, repr=False)
    _repo_config: EffectiveConfig | None = field(default=None, init=False, repr=False)

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

    @property
    def platform(self) -> Platform:
        """The event's platform, bound to its repository (and installation), built on first use.

        Raises PlatformNotConfigured, naming the settings to add, when this process has none.
        """
        if self._platform is None:
            self._platform = self.platform_factory(self.event)
        return self._platform

    async def repo_config(self, pr: PullRequest | None = None) -> EffectiveConfig:
        """The `.arbiter.yml` of the repository's default branch, merged over the operator's
        defaults and the built-in ones; cached per repository and commit (bot/repo_config.py).

        A bad file does not raise: `.problems` says what is wrong and the defaults apply. With
        `pr`, those problems are also reported on it, in one comment edited in place (unless
        ARBITER_POST_COMMENTS is false). Raises PlatformError when the platform cannot be asked.
        """
        if self._repo_config is None:
            configs = self.repo_configs or shared_repo_configs(self.settings)
            branch = pr.default_branch if pr is not None else None
            self._repo_config = await configs.load(self.platform, default_branch=branch)
        if pr is not None and self.settings.post_comments:
            await report_problems_logged(self.platform, pr, self._repo_config, self.log)
        return self._repo_config

    async def schedule_review(
        self,
        *,
        full: bool = False,
        reason: str = "pull_request",
        requested_by: str | None = None,
        fresh: bool = False,
    ) -> Enqueued:
        """Queue a review of this event's pull request, replacing one queued but not started.

        `full` reviews everything rather than what changed since the last review; `fresh`
        also ignores earlier findings; `requested_by` names the person who asked (their
        request overrides the automatic-review rules and a pause).
        """
        e = self.event
        if e.repo is None or e.number is None:
            raise ValueError(f"{e.label} is not about a pull request")
        if full:
            # Kept on the pull request, not the job: a later push may replace the queued job.
            await self.store.update_pr_state(e.platform, e.repo, e.number, full_requested=True)
        request = ReviewRequest(
            platform=e.platform,
            repo=e.repo,
            number=e.number,
            installation_id=e.installation_id,
            delivery_id=e.delivery_id,
            reason=reason,
            requested_by=requested_by,
            fresh=fresh,
        )
        queued = await self.store.enqueue(
            NewJob(
                kind=REVIEW_JOB,
                payload=request.to_json(),
                key=review_job_key(e.platform, e.repo, e.number),
                max_attempts=self.settings.worker_retry_attempts + 1,
                delivery_id=e.delivery_id,
            )
        )
        self.notify()
        return queued

    async def cancel_review(self, reason: str) -> list[int]:
        """Cancel this pull request's queued (not yet running) review."""
        e = self.event
        if e.repo is None or e.number is None:
            return []
        return await self.store.cancel_queued(review_job_key(e.platform, e.repo, e.number), reason)
