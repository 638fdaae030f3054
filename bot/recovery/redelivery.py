"""Redelivery: ask the platform to send again the webhook deliveries that never reached Arbiter.

GitHub keeps every delivery attempt for three days and never retries a failed one by itself;
GitLab (17.3+) keeps a webhook's events for seven days and (17.4+) resends one on request.
Each pass reads the attempts made since the last pass (a watermark per webhook, read again a
little behind it), picks the deliveries a handler wants whose newest attempt failed and that
the store never recorded, and asks for each again, oldest first, up to
ARBITER_REDELIVERY_MAX_PER_PASS. The store records every request first, so a failed attempt is
asked about once; a redelivery that fails too is asked for again, at most `MAX_ASKS` times in
all. What comes back is an ordinary signed webhook: verification and deduplication are the
receiver's, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from bot.events import Event, PayloadError, from_gitlab
from bot.logs import Logger, Redactor
from bot.metrics import Metrics
from bot.recovery.passes import Tally
from bot.router import Router
from bot.store import Store
from config.settings import Settings, hook_ids
from platforms.base import Deliveries, HookDelivery, PlatformError, PlatformName, RateLimited
from platforms.github import GitHub
from platforms.gitlab import GitLab

REDELIVERY: Final = "redelivery"
OVERLAP_SECONDS = 300.0  # GitHub lists an attempt once it ended: read a little behind the mark
UNANSWERED_SECONDS = 600.0  # a request whose answer was lost may be made again after this
MAX_ASKS = 3  # redeliveries asked for one delivery, its own failing too
PAGE = 100
KEEP_REQUESTS_SECONDS = 8 * 86400  # GitLab keeps events seven days, GitHub deliveries three
# Arbiter's own answers to a delivery it will never take (malformed, bad signature, too big).
FINAL_ANSWERS = frozenset({400, 401, 413})
# Whether a handler wants these depends on the body, which GitHub's list does not carry.
AMBIGUOUS_EVENTS = frozenset({"issue_comment"})
_GITHUB_NAMES = {"issue_comment": "comment", "pull_request_review_comment": "comment"}


@dataclass(frozen=True)
class Webhook:
    """Where deliveries are kept: the GitHub App's webhook, a GitHub repository's webhook
    (token mode), or a GitLab project's webhook."""

    platform: PlatformName
    repo: str | None = None
    hook_id: int | None = None

    @property
    def key(self) -> str:
        if self.repo is None:
            return "app"
        return f"{'repo' if self.platform == 'github' else 'project'}:{self.repo}:{self.hook_id}"

    @property
    def label(self) -> str:
        if self.repo is None:
            return "the GitHub App's webhook"
        return f"{self.platform} webhook {self.hook_id} of {self.repo}"

    @property
    def hook(self) -> tuple[str, int] | None:
        return None if self.repo is None or self.hook_id is None else (self.repo, self.hook_id)


@dataclass(frozen=True)
class Candidate:
    """A delivery to ask for again, by its newest failed attempt."""

    guid: str
    attempt: HookDelivery
    max_asks: int


def webhooks(
    settings: Settings, github: GitHub | None, gitlab: GitLab | None
) -> tuple[list[Webhook], list[str]]:
    """The webhooks whose deliveries this process can ask for again, and why the others are
    left out (for the log at start)."""
    found: list[Webhook] = []
    off: list[str] = []
    if github is None:
        pass
    elif github.mode == "app":
        found.append(Webhook("github"))
    elif settings.github_hook_ids:
        found += [
            Webhook("github", repo, hook) for repo, hook in hook_ids(settings.github_hook_ids)
        ]
    else:
        off.append(
            "github: token mode and no ARBITER_GITHUB_HOOK_IDS, so Arbiter cannot read the "
            "webhook's deliveries (a GitHub App needs nothing more); the reconcile sweep still "
            "reviews pull requests it missed"
        )
    if gitlab is not None:
        if settings.gitlab_hook_ids:
            found += [
                Webhook("gitlab", repo, hook) for repo, hook in hook_ids(settings.gitlab_hook_ids)
            ]
        else:
            off.append(
                "gitlab: no ARBITER_GITLAB_HOOK_IDS (GitLab 17.4+ resends failed webhook events); "
                "the reconcile sweep still reviews merge requests it missed"
            )
    return found, off


def wanted_by(router: Router, platform: PlatformName) -> Callable[[HookDelivery], bool]:
    """Whether a handler wants the delivery, as the webhook receiver would decide."""

    def github(item: HookDelivery) -> bool:
        name = _GITHUB_NAMES.get(item.event, item.event)
        return router.wants(
            Event("github", name, item.action, delivery_id=item.guid or str(item.id), repo=None)
        )

    def gitlab(item: HookDelivery) -> bool:
        if item.payload is None:
            return False
        try:
            return router.wants(from_gitlab(item.guid or str(item.id), item.payload))
        except PayloadError:
            return False

    return github if platform == "github" else gitlab


def candidates(
    items: Iterable[HookDelivery],
    *,
    seen: set[str],
    wanted: Callable[[HookDelivery], bool],
    answered_after: float | None = None,
) -> list[Candidate]:
    """The deliveries to ask for again, oldest first: a handler wants them, the store never
    recorded them, and their newest attempt failed (not with an answer Arbiter gives to what it
    will never take). Also, asked for once, those answered after `answered_after` (the last
    pass's mark: while recovery was watching) that the store does not have: something else
    answered for Arbiter (a proxy's 200, a maintenance page)."""
    attempts: dict[str, list[HookDelivery]] = {}
    for item in items:
        if item.guid:
            attempts.setdefault(item.guid, []).append(item)
    found: list[Candidate] = []
    for guid, tries in attempts.items():
        newest = max(tries, key=lambda t: t.id)
        if guid in seen or not wanted(newest):
            continue
        if not newest.ok:
            if newest.status_code not in FINAL_ANSWERS:
                found.append(Candidate(guid, newest, MAX_ASKS))
        elif (
            answered_after is not None
            and (newest.delivered_at or 0.0) > answered_after
            and newest.event not in AMBIGUOUS_EVENTS
        ):
            found.append(Candidate(guid, newest, 1))
    return sorted(found, key=lambda c: (c.attempt.delivered_at or 0.0, c.attempt.id))


class Redelivery:
    """The redelivery pass over every webhook this process can read."""

    def __init__(
        self,
        *,
        settings: Callable[[], Settings],
        store: Store,
        router: Router,
        metrics: Metrics,
        github: Callable[[], GitHub | None],
        gitlab: Callable[[], GitLab | None],
        log: Logger,
        redactor: Redactor,
    ) -> None:
        self._settings = settings
        self._store = store
        self._router = router
        self._metrics = metrics
        self._github = github
        self._gitlab = gitlab
        self._log = log
        self._redactor = redactor
        self._unreadable: set[Webhook] = set()  # not there, or not ours to read: not again

    async def run(self, tally: Tally) -> None:
        settings = self._settings()
        found, _ = webhooks(settings, self._github(), self._gitlab())
        budget = settings.redelivery_max_per_pass
        for webhook in found:
            if webhook in self._unreadable:
                continue
            if budget <= 0:
                tally.stopped = "ARBITER_REDELIVERY_MAX_PER_PASS reached"
                break
            tally.sources += 1
            asked, rate_limited = await self._webhook(webhook, settings, budget, tally)
            budget -= asked
            if rate_limited:
                tally.stopped = "rate limited"
                break
        await self._store.purge_redeliveries(max_age=KEEP_REQUESTS_SECONDS)
        self._log.info("redelivery pass done", **tally.summary())

    async def _webhook(
        self, webhook: Webhook, settings: Settings, budget: int, tally: Tally
    ) -> tuple[int, bool]:
        """Ask for this webhook's missing deliveries; (how many asked, whether rate limited)."""
        mark_name = f"{REDELIVERY}:{webhook.platform}:{webhook.key}"
        mark = await self._store.get_watermark(mark_name)
        try:
            listing = await self._list(webhook, mark, settings.redelivery_max_pages * PAGE)
        except RateLimited as exc:
            self._log.warning(
                "webhook deliveries not read: rate limited",
                webhook=webhook.label,
                retry_after=exc.retry_after,
            )
            tally.errors += 1
            return 0, True
        except PlatformError as exc:
            self._unreadable_or_not(webhook, exc)
            tally.errors += 1
            return 0, False
        items = listing.items
        tally.listed += len(items)
        if not listing.complete and mark is None:
            self._log.info(
                "first pass: the newest deliveries read, not all that the platform keeps",
                webhook=webhook.label,
                read=len(items),
            )
        elif not listing.complete:
            self._log.warning(
                "more deliveries since the last pass than one pass reads; the older ones were "
                "not checked (raise ARBITER_REDELIVERY_MAX_PAGES or lower the interval)",
                webhook=webhook.label,
                read=len(items),
            )
        seen = await self._store.seen_deliveries(webhook.platform, {i.guid for i in items})
        chosen = candidates(
            items,
            seen=seen,
            wanted=wanted_by(self._router, webhook.platform),
            answered_after=float(mark)
            if mark is not None and webhook.platform == "github"
            else None,
        )
        tally.due += len(chosen)
        asked = 0
        left: list[Candidate] = []
        rate_limited = False
        for position, candidate in enumerate(chosen):
            if asked >= budget:
                left = chosen[position:]
                break
            outcome = await self._ask(webhook, candidate, tally)
            if outcome == "rate_limited":
                left, rate_limited = chosen[position:], True
                break
            if outcome == "asked":
                asked += 1
        await self._move_mark(mark_name, webhook, items, left)
        return asked, rate_limited

    async def _list(self, webhook: Webhook, mark: str | None, limit: int) -> Deliveries:
        if webhook.platform == "github":
            github = self._github()
            if github is None:
                return Deliveries((), complete=True)
            newer = float(mark) - OVERLAP_SECONDS if mark is not None else None
            return await github.hook_deliveries(webhook.hook, newer_than=newer, limit=limit)
        gitlab = self._gitlab()
        if gitlab is None or webhook.repo is None or webhook.hook_id is None:
            return Deliveries((), complete=True)
        after = int(float(mark)) if mark is not None else None
        return await gitlab.hook_events(webhook.repo, webhook.hook_id, after_id=after, limit=limit)

    async def _ask(self, webhook: Webhook, candidate: Candidate, tally: Tally) -> str:
        """Claim the request in the store, then make it: "asked", "skipped" or
        "rate_limited"."""
        store, attempt = self._store, candidate.attempt
        claimed = await store.claim_redelivery(
            webhook.platform,
            candidate.guid,
            attempt.id,
            source=webhook.key,
            max_attempts=candidate.max_asks,
            stale_after=UNANSWERED_SECONDS,
        )
        if not claimed:
            tally.already += 1
            return "skipped"
        log = self._log.bind(webhook=webhook.label, delivery_id=candidate.guid, attempt=attempt.id)
        try:
            await self._request(webhook, attempt.id)
        except RateLimited as exc:
            await store.settle_redelivery(
                webhook.platform, candidate.guid, attempt.id, "not_sent", error=self._text(exc)
            )
            log.warning("redelivery not asked: rate limited", retry_after=exc.retry_after)
            return "rate_limited"
        except PlatformError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                await store.settle_redelivery(
                    webhook.platform, candidate.guid, attempt.id, "refused", error=self._text(exc)
                )
                tally.refused += 1
                log.warning("redelivery refused", error=self._text(exc))
            else:  # its fate is unknown: asked again only once it is clearly lost
                log.warning("redelivery request failed", error=self._text(exc))
                tally.errors += 1
            return "skipped"
        await store.settle_redelivery(webhook.platform, candidate.guid, attempt.id, "accepted")
        tally.done += 1
        self._metrics.redeliveries_requested.labels(platform=webhook.platform).inc()
        log.info("redelivery requested", delivery_event=attempt.event, failed_with=attempt.status)
        return "asked"

    async def _request(self, webhook: Webhook, attempt_id: int) -> None:
        if webhook.platform == "github":
            github = self._github()
            if github is None:
                raise PlatformError("github is no longer configured")
            await github.redeliver(attempt_id, webhook.hook)
            return
        gitlab = self._gitlab()
        if gitlab is None or webhook.repo is None or webhook.hook_id is None:
            raise PlatformError("gitlab is no longer configured")
        await gitlab.resend_hook_event(webhook.repo, webhook.hook_id, attempt_id)

    async def _move_mark(
        self,
        name: str,
        webhook: Webhook,
        items: Sequence[HookDelivery],
        left: Sequence[Candidate],
    ) -> None:
        """Past what this pass read, but not past a delivery it left for the next one."""
        if not items:
            return
        if webhook.platform == "github":
            times = [i.delivered_at for i in items if i.delivered_at is not None]
            if not times:
                return
            waiting = [c.attempt.delivered_at or 0.0 for c in left]
            mark = min(waiting) if waiting else max(times)
        else:
            waiting_ids = [c.attempt.id - 1 for c in left]
            mark = min(waiting_ids) if waiting_ids else max(i.id for i in items)
        await self._store.set_watermark(name, repr(float(mark)))

    def _unreadable_or_not(self, webhook: Webhook, exc: PlatformError) -> None:
        if exc.status in (401, 403, 404):
            self._unreadable.add(webhook)
            hint = {
                401: "check the credentials",
                403: "the token needs admin:repo_hook (GitHub) or the Maintainer role (GitLab)",
                404: (
                    "no such webhook, or a GitLab before 17.3 (no webhook events API): the "
                    "reconcile sweep reviews what was missed"
                ),
            }.get(exc.status or 0, "")
            self._log.warning(
                "webhook deliveries cannot be read; not trying again until restart",
                webhook=webhook.label,
                error=self._text(exc),
                hint=hint,
            )
        else:
            self._log.warning("webhook deliveries not read", webhook=webhook.label, error=str(exc))

    def _text(self, exc: Exception) -> str:
        return self._redactor.scrub(str(exc))[:500]
