"""The reconcile sweep: queue a review for every open pull request whose head was never reviewed.

What no delivery can bring back (GitHub's three days passed, a GitLab without webhook events,
a webhook that was never configured) the sweep finds by asking. For each repository Arbiter
knows (from installations and events), it lists the open pull/merge requests updated since
its last sweep of that repository (read a little behind the mark, for clocks that disagree),
leaves out those whose head was reviewed or whose review is queued or running, and queues the
review job a webhook would have queued: same key, same job, so the same exactly-once rules, and
the job itself decides with the repository's configuration. No model call happens here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from bot.logs import Logger
from bot.metrics import Metrics
from bot.recovery.passes import Tally
from bot.review.request import ReviewRequest, queue_review, review_job_key
from bot.store import Store
from bot.store.base import KnownRepository
from config.settings import Settings
from platforms.base import (
    ListsOpenPullRequests,
    OpenPullRequest,
    PlatformError,
    PlatformName,
    RateLimited,
)
from platforms.github import GitHub
from platforms.gitlab import GitLab

RECONCILE: Final = "reconcile"
OVERLAP_SECONDS = 300.0  # read behind the mark: the platform's clock and ours may differ
PAGE = 100
PLATFORMS: tuple[PlatformName, ...] = ("github", "gitlab")
LIMIT_REACHED = "ARBITER_RECONCILE_MAX_REVIEWS_PER_PASS reached"


class Reconcile:
    """The reconcile sweep over every repository Arbiter knows, on both platforms."""

    def __init__(
        self,
        *,
        settings: Callable[[], Settings],
        store: Store,
        metrics: Metrics,
        github: Callable[[], GitHub | None],
        gitlab: Callable[[], GitLab | None],
        notify: Callable[[], None],
        clock: Callable[[], float],
        log: Logger,
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._github = github
        self._gitlab = gitlab
        self._notify = notify
        self._clock = clock
        self._log = log
        self._adopted: set[str] = set()  # platforms whose reviewed repositories were adopted

    async def run(self, tally: Tally) -> None:
        settings = self._settings()
        budget = settings.reconcile_max_reviews_per_pass
        for platform in PLATFORMS:
            for repo in await self._repositories(platform):
                if budget <= 0:
                    tally.stopped = LIMIT_REACHED
                    break
                try:
                    lister = self._lister(repo)
                except (PlatformError, ValueError) as exc:  # not a name this platform takes
                    self._log.warning("repository not swept", repo=repo.repo, error=str(exc))
                    tally.errors += 1
                    continue
                if lister is None:
                    break
                tally.sources += 1
                try:
                    budget -= await self._sweep(repo, lister, settings, budget, tally)
                except RateLimited as exc:
                    tally.stopped = "rate limited"
                    self._log.warning(
                        "reconcile sweep stopped: rate limited",
                        repo=repo.repo,
                        retry_after=exc.retry_after,
                    )
                    break
            if tally.stopped:
                break
        self._log.info("reconcile sweep done", **tally.summary())

    async def _repositories(self, platform: PlatformName) -> list[KnownRepository]:
        """The repositories to sweep: those seen, less those whose installation is gone."""
        await self._adopt(platform)
        known = await self._store.known_repositories(platform)
        if platform != "github":
            return known
        gone = {
            i.installation_id
            for i in await self._store.list_installations("github")
            if i.state != "active"
        }
        return [r for r in known if r.installation_id not in gone]

    async def _adopt(self, platform: PlatformName) -> None:
        """Remember the repositories the store knew before it kept a list of them: those of
        active installations, and (once per process) those with reviews. They are seen from
        now on, so the sweep reviews nothing older than a few minutes there."""
        known = {r.repo for r in await self._store.known_repositories(platform)}
        found: dict[int | None, set[str]] = {}
        if platform == "github":
            for installation in await self._store.list_installations("github"):
                if installation.state == "active":
                    fresh = set(installation.repositories) - known
                    found.setdefault(installation.installation_id, set()).update(fresh)
        if platform not in self._adopted:
            self._adopted.add(platform)
            reviewed = {a.repo for a in await self._store.repo_activity() if a.platform == platform}
            found.setdefault(None, set()).update(reviewed - known)
        for installation_id, repos in found.items():
            if repos:
                await self._store.note_repositories(
                    platform, repos, installation_id=installation_id
                )

    def _lister(self, repo: KnownRepository) -> ListsOpenPullRequests | None:
        if repo.platform == "github":
            github = self._github()
            return None if github is None else github.for_repo(repo.repo, repo.installation_id)
        gitlab = self._gitlab()
        return None if gitlab is None else gitlab.for_repo(repo.repo)

    async def _sweep(
        self,
        repo: KnownRepository,
        lister: ListsOpenPullRequests,
        settings: Settings,
        budget: int,
        tally: Tally,
    ) -> int:
        """Queue the missing reviews of one repository; how many were queued."""
        name = f"{RECONCILE}:{repo.platform}:{repo.repo}"
        mark = await self._store.get_watermark(name)
        since = (float(mark) if mark is not None else repo.first_seen_at) - OVERLAP_SECONDS
        started = self._clock()
        try:
            listing = await lister.open_pull_requests(
                since, limit=settings.reconcile_max_pages * PAGE
            )
        except RateLimited:
            raise
        except PlatformError as exc:
            tally.errors += 1
            if exc.status == 404:  # gone, or no longer ours to see
                await self._store.forget_repository(repo.platform, repo.repo)
                self._log.warning("repository no longer visible; forgotten", repo=repo.repo)
            else:
                self._log.warning("open pull requests not read", repo=repo.repo, error=str(exc))
            return 0
        tally.listed += len(listing.items)
        if not listing.complete:
            self._log.warning(
                "more pull requests updated since the last sweep than one sweep reads; the "
                "older ones were not checked (raise ARBITER_RECONCILE_MAX_PAGES)",
                repo=repo.repo,
            )
        missing = await self._unreviewed(repo, listing.items, tally)
        queued = 0
        for pull in missing:
            if queued >= budget:
                # The next sweep starts from the first one left.
                await self._store.set_watermark(name, repr(pull.updated_at))
                tally.stopped = LIMIT_REACHED
                break
            await self._queue(repo, pull, settings)
            queued += 1
            tally.done += 1
        else:
            await self._store.set_watermark(name, repr(started))
        return queued

    async def _unreviewed(
        self, repo: KnownRepository, pulls: tuple[OpenPullRequest, ...], tally: Tally
    ) -> list[OpenPullRequest]:
        """The pull requests whose head was never reviewed and that no review job waits for,
        least recently updated first."""
        heads = [p for p in pulls if p.head_sha]
        unreviewed = []
        for pull in heads:
            state = await self._store.pr_state(repo.platform, repo.repo, pull.number)
            if state.last_reviewed_head != pull.head_sha:
                unreviewed.append(pull)
        keys = {review_job_key(repo.platform, repo.repo, p.number): p for p in unreviewed}
        waiting = await self._store.open_job_keys(keys)
        tally.due += len(unreviewed)
        tally.already += len(waiting)
        return sorted(
            (p for key, p in keys.items() if key not in waiting),
            key=lambda p: (p.updated_at, p.number),
        )

    async def _queue(
        self, repo: KnownRepository, pull: OpenPullRequest, settings: Settings
    ) -> None:
        platform: PlatformName = "github" if repo.platform == "github" else "gitlab"
        request = ReviewRequest(
            platform=platform,
            repo=repo.repo,
            number=pull.number,
            installation_id=repo.installation_id,
            reason="reconcile",
        )
        await queue_review(self._store, request, max_attempts=settings.worker_retry_attempts + 1)
        self._metrics.reconcile_reviews_scheduled.labels(platform=repo.platform).inc()
        self._notify()
        self._log.info(
            "review queued by the reconcile sweep",
            platform=repo.platform,
            repo=repo.repo,
            number=pull.number,
            head=pull.head_sha[:12],
        )
