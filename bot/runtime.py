"""Composition: the one place that builds the long-lived objects from Settings.

`app.py`, `worker.py` and `cli.py` receive a Runtime; nothing else constructs dependencies.
Tests build a Runtime the same way, with fakes behind the base-URL settings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from pydantic import SecretStr

from bot import heap
from bot.context import Context
from bot.events import Event
from bot.llm import LLM, make_llm
from bot.logs import get_logger, mask_secrets_of
from bot.metrics import Metrics
from bot.outbound import RedactedPlatform
from bot.recovery import Recovery, RecoveryParts
from bot.redaction import Redactor
from bot.review import REVIEW_JOB, ReviewRequest
from bot.router import HandlerFailed, Router
from bot.store import Job, SchemaOutOfDate, Store, make_store
from bot.webhooks import EVENT_JOB
from bot.worker import Worker, WorkerOptions, slot_needed, slot_no_longer_needed
from config.settings import Settings, platform_status
from handlers import build_router
from platforms.base import USER_AGENT, Platform, PlatformNotConfigured
from platforms.github import GitHub
from platforms.gitlab import GitLab

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bot.repo_config import RepoConfigs

# A delivery's dispatch to its handlers runs in up to this many slots of its own besides
# ARBITER_WORKER_MAX_JOBS (never more than that), so it never waits behind reviews.
EVENT_LANE = 4
# While every slot is taken, up to ARBITER_WORKER_MAX_JOBS / this many reviews more are claimed
# and do all they can before the model call (fetch the pull request and its files, build the
# prompt), then wait for a slot (bot/worker.py, `slot_needed`): a slot that frees asks the model
# at once instead of after a claim and those steps (issue 20).
REVIEW_AHEAD_SHARE = 2
REDIS_TIMEOUT = 2.0  # seconds for a Redis command (and for a free connection from the pool)


class UnknownJobKind(Exception):
    pass


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        router: Router | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        web_only: bool = False,
        settle_heap: bool = False,
    ) -> None:
        """`web_only`: this process runs no workers (`serve --no-workers`): see make_store.
        `settle_heap`: a server's or worker's own process, whose heap is settled after its
        first review (bot/heap.py); never in a process that is not Arbiter's alone (tests)."""
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.store = store or make_store(settings, clock=clock, web_only=web_only)
        self.clock = clock
        self.router = router or build_router(settings.handlers)
        self.platforms = platform_status(settings)
        self.log = get_logger(component="runtime")
        self._session: aiohttp.ClientSession | None = None
        self.worker: Worker | None = None
        self.github: GitHub | None = None
        self.gitlab: GitLab | None = None
        self._repo_configs: RepoConfigs | None = None
        self.llm: LLM | None = None
        self._redactor = Redactor.from_settings(settings)
        self._redactor_settings = settings
        self.redis: Redis | None = None  # opened by the web app's API when a URL is set
        self.recovery: Recovery | None = None
        self._settle_after_review = settle_heap

    # --- Lifecycle ---------------------------------------------------------------------------

    async def start(self, *, migrate: bool | None = None) -> None:
        """Open the store (migrating the embedded SQLite store itself) and the HTTP session.

        `migrate=None` migrates SQLite and refuses other backends whose schema is behind.
        """
        try:
            await self._start(migrate)
        except BaseException:
            await self.close()
            raise

    async def _start(self, migrate: bool | None) -> None:
        await self.store.open()
        if migrate is None:
            migrate = self.store.backend == "sqlite"
        if migrate:
            applied = await self.store.migrate()
            if applied:
                self.log.info("store migrated", backend=self.store.backend, revisions=applied)
        else:
            status = await self.store.schema_status()
            if not status.up_to_date:
                raise SchemaOutOfDate(
                    f"the {self.store.backend} schema is at {status.current or 'nothing'}, "
                    f"this release needs {status.head}: run `arbiter migrate` first"
                )
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        if self.platforms["github"].mode:
            # Raises SettingsError, naming the setting, for a private key that is not valid.
            self.github = GitHub(self.settings, self._session)
        if self.settings.gitlab_token is not None:
            self.gitlab = GitLab(self.settings)  # its own thread and connection pools
        self.llm = make_llm(self.settings, self.store, self.metrics)

    async def close(self) -> None:
        if self.recovery is not None:
            await self.recovery.stop()
            self.recovery = None
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        if self.gitlab is not None:
            self.gitlab.close()
            self.gitlab = None
        if self.llm is not None:
            await self.llm.close()
            self.llm = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.store.close()

    @property
    def repo_configs(self) -> RepoConfigs:
        """The `.arbiter.yml` cache of this process, made for the first job that needs it (with
        the configuration schema and its pattern engine: a web-only process never does)."""
        if self._repo_configs is None:
            from bot.repo_config import RepoConfigs

            self._repo_configs = RepoConfigs(self.settings)
        return self._repo_configs

    @property
    def redactor(self) -> Redactor:
        """Masks the secrets of the settings in force (/setup can switch them live)."""
        if self._redactor_settings is not self.settings:
            self._redactor = Redactor.from_settings(self.settings)
            self._redactor_settings = self.settings
        return self._redactor

    @property
    def session(self) -> aiohttp.ClientSession:
        """The process's one aiohttp ClientSession."""
        if self._session is None:
            raise RuntimeError("the runtime is not started")
        return self._session

    def redis_client(self) -> Redis | None:
        """The Redis client of ARBITER_REDIS_URL (None: not set), made on first use; it
        connects when first asked something, so a Redis that is down never stops start-up."""
        url = self.settings.redis_url
        if self.redis is None and url is not None:
            from redis.asyncio import BlockingConnectionPool, Redis

            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=self.settings.redis_max_connections,
                timeout=REDIS_TIMEOUT,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
            )
            self.redis = Redis(connection_pool=pool)
        return self.redis

    async def redis_problem(self) -> str | None:
        """Why Redis does not answer now (None: it does, or none is in use)."""
        if self.redis is None:
            return None
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self.redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None

    def make_worker(self) -> Worker:
        s = self.settings
        options = WorkerOptions(
            max_jobs=s.worker_max_jobs,
            job_timeout=s.worker_job_timeout,
            lease_seconds=s.worker_lease_seconds,
            poll_interval=s.worker_poll_interval,
            backoff_base=s.worker_retry_backoff_seconds,
            backoff_max=s.worker_retry_backoff_max_seconds,
            shutdown_grace=s.worker_shutdown_grace_seconds,
            retention_seconds=s.delivery_retention_days * 86400,
            lanes={EVENT_JOB: min(EVENT_LANE, s.worker_max_jobs)},
            ahead={REVIEW_JOB: max(s.worker_max_jobs // REVIEW_AHEAD_SHARE, 1)},
        )
        self.worker = Worker(
            self.store,
            self.run_job,
            options,
            metrics=self.metrics,
            redact=lambda text: self.redactor.scrub(text),
        )
        return self.worker

    def start_recovery(self) -> Recovery:
        """Start the redelivery pass and the reconcile sweep (bot/recovery/): every process may
        run them, the store's lease lets one at a time do the work."""
        self.recovery = Recovery(
            RecoveryParts(
                settings=lambda: self.settings,
                store=self.store,
                router=self.router,
                metrics=self.metrics,
                github=lambda: self.github,
                gitlab=lambda: self.gitlab,
                notify=self.notify_worker,
                clock=self.clock,
            )
        )
        self.recovery.start()
        return self.recovery

    def notify_worker(self, *, delivery: bool = False) -> None:
        """A job was queued in this process (`delivery`: a webhook's): the worker looks now."""
        if self.worker is not None:
            self.worker.notify(delivery=delivery)

    def use_github_app(self, app_id: str, private_key_path: Path, webhook_secret: str) -> None:
        """Switch to a GitHub App set up while the process runs (the /setup flow), no restart.

        Settings, platform status and the GitHub client are replaced together; nothing awaits
        in between, so a delivery sees either the old credentials or the new ones. An inline
        key is dropped, as it would win over the new key file. Raises SettingsError, naming the
        setting, for a key that is not usable; the old credentials then stay in effect.
        """
        settings = self.settings.model_copy(
            update={
                "github_app_id": app_id,
                "github_private_key": None,
                "github_private_key_path": private_key_path,
                "github_webhook_secret": SecretStr(webhook_secret),
            }
        )
        github = GitHub(settings, self.session)
        self.settings, self.platforms, self.github = settings, platform_status(settings), github
        mask_secrets_of(settings)  # the new webhook secret, in log lines too
        self.log.info("github app in use", app_id=app_id, enabled=self.platforms["github"].enabled)

    # --- Per event ---------------------------------------------------------------------------

    def platform_for(self, event: Event) -> Platform:
        """A Platform bound to the event's repository (and installation); what it posts is
        redacted."""
        return RedactedPlatform(self._platform_for(event), self.redactor)

    def _platform_for(self, event: Event) -> Platform:
        if event.repo is None:
            raise PlatformNotConfigured(f"{event.label} names no repository")
        if event.platform == "github" and self.github is not None:
            return self.github.for_repo(
                event.repo, event.installation_id, delivery_id=event.delivery_id
            )
        if event.platform == "gitlab" and self.gitlab is not None:
            return self.gitlab.for_repo(event.repo, delivery_id=event.delivery_id)
        status = self.platforms[event.platform]
        if not status.enabled:
            raise PlatformNotConfigured(
                f"{event.platform} is not configured: set {' and '.join(status.missing)}"
            )
        raise PlatformNotConfigured(f"no {event.platform} API client in this release yet")

    def context(self, event: Event, *, job_id: int | None = None) -> Context:
        return Context(
            event=event,
            settings=self.settings,
            store=self.store,
            metrics=self.metrics,
            platform_factory=self.platform_for,
            job_id=job_id,
            llm=self.llm,
            repo_configs=self.repo_configs,
            notify=self.notify_worker,
            clock=self.clock,
            redactor=self.redactor,
        )

    async def run_job(self, job: Job) -> None:
        """What the worker runs: an event for the handlers, or the review of a pull request."""
        if job.kind == EVENT_JOB:
            await self._run_event(job)
        elif job.kind == REVIEW_JOB:
            await self._run_review(job)
        else:
            raise UnknownJobKind(f"no runner for job kind {job.kind!r}")

    async def _run_review(self, job: Job) -> None:
        # The review use case, the review core and their parsers: loaded by the first review.
        from bot.review import Attempt, attempt_deadline, review_pull_request

        if self.llm is None:
            raise RuntimeError("the runtime is not started")
        request = ReviewRequest.from_json(job.payload)
        # The review's own context: its platform binding and log fields, as an event's would be.
        event = Event(
            platform=request.platform,
            name="review",
            action=request.reason,
            delivery_id=request.delivery_id or f"job-{job.id}",
            repo=request.repo,
            number=request.number,
            installation_id=request.installation_id,
        )
        attempt = Attempt(
            job_id=job.id,
            last=job.attempts >= job.max_attempts,
            deadline=attempt_deadline(
                asyncio.get_running_loop().time(), self.settings.worker_job_timeout
            ),
            settled=slot_no_longer_needed,
            slot=slot_needed,
        )
        reviewed = await review_pull_request(self.context(event, job_id=job.id), request, attempt)
        if reviewed is not None and self._settle_after_review:
            # The review core, the model's SDK and the tokenizer are loaded for good now.
            self._settle_after_review = False
            asyncio.get_running_loop().call_soon(heap.settle, "after the first review")

    async def _run_event(self, job: Job) -> None:
        """Dispatch to the handlers that have not yet succeeded on an earlier attempt."""
        event = Event.from_json(job.payload)
        ctx = self.context(event, job_id=job.id)
        done = job.progress.get("succeeded", [])
        result = await self.router.dispatch(ctx, skip=done)
        if not result.ok:
            raise HandlerFailed(result)
