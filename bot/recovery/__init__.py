"""Recovery: nothing missed. Two background passes, each run by one process at a time.

- `redelivery.py`: the platform kept the deliveries that never reached Arbiter (a deploy, a
  proxy's 502, a server down for an hour); ask it to send the failed ones again.
- `reconcile.py`: sweep the open pull/merge requests of the repositories Arbiter knows and
  queue a review for any whose head was never reviewed.
- `passes.py`: the loop that runs a pass every interval in whichever process holds its lease.

`Recovery` is what the runtime starts with `arbiter serve` and `arbiter worker` (every process
may run it: the store's lease picks one) and stops with the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.logs import Redactor, get_logger
from bot.metrics import Metrics
from bot.recovery.passes import LEASE_SECONDS, PeriodicPass, RunPass, Tally, process_holder
from bot.recovery.reconcile import RECONCILE, Reconcile
from bot.recovery.redelivery import REDELIVERY, Redelivery, webhooks
from bot.router import Router
from bot.store import Store
from config.settings import Settings
from platforms.github import GitHub
from platforms.gitlab import GitLab

__all__ = ["RECONCILE", "REDELIVERY", "Recovery", "RecoveryParts", "Tally"]


@dataclass(frozen=True)
class RecoveryParts:
    """What the passes use, from the runtime. Settings and clients are read per pass: the
    /setup flow can switch GitHub to an App while the process runs."""

    settings: Callable[[], Settings]
    store: Store
    router: Router
    metrics: Metrics
    github: Callable[[], GitHub | None]
    gitlab: Callable[[], GitLab | None]
    notify: Callable[[], None]
    clock: Callable[[], float] = time.time


class Recovery:
    """The redelivery pass and the reconcile sweep of one process."""

    def __init__(self, parts: RecoveryParts, *, lease_seconds: float | None = None) -> None:
        self.parts = parts
        self.log = get_logger(component="recovery")
        settings = parts.settings()
        redactor = Redactor(settings.secret_values())
        holder = process_holder()
        self.redelivery = Redelivery(
            settings=parts.settings,
            store=parts.store,
            router=parts.router,
            metrics=parts.metrics,
            github=parts.github,
            gitlab=parts.gitlab,
            log=self.log,
            redactor=redactor,
        )
        self.reconcile = Reconcile(
            settings=parts.settings,
            store=parts.store,
            metrics=parts.metrics,
            github=parts.github,
            gitlab=parts.gitlab,
            notify=parts.notify,
            clock=parts.clock,
            log=self.log,
        )
        self._redactor = redactor
        self._holder = holder
        self._lease = lease_seconds
        self.passes = [
            self._periodic(
                REDELIVERY,
                self.redelivery.run,
                lambda: parts.settings().redelivery_interval_seconds,
            ),
            self._periodic(
                RECONCILE,
                self.reconcile.run,
                lambda: parts.settings().reconcile_interval_seconds,
            ),
        ]

    def _periodic(self, name: str, run: RunPass, interval: Callable[[], float]) -> PeriodicPass:
        return PeriodicPass(
            name,
            run,
            store=self.parts.store,
            interval=interval,
            log=self.log,
            redactor=self._redactor,
            holder=self._holder,
            clock=self.parts.clock,
            lease_seconds=LEASE_SECONDS if self._lease is None else self._lease,
        )

    def start(self) -> None:
        """Start the passes that are on, and say at start what each covers or why it is off."""
        settings = self.parts.settings()
        found, off = webhooks(settings, self.parts.github(), self.parts.gitlab())
        if settings.redelivery_interval_seconds <= 0:
            self.log.info("redelivery off (ARBITER_REDELIVERY_INTERVAL_SECONDS=0)")
        else:
            for reason in off:
                self.log.warning("redelivery off for a platform", reason=reason)
            if not found and not off:
                self.log.info("redelivery has nothing to watch yet: no platform is configured")
            if found:
                self.log.info(
                    "redelivery on",
                    webhooks=[w.label for w in found],
                    every_seconds=settings.redelivery_interval_seconds,
                )
            self.passes[0].start()
        if settings.reconcile_interval_seconds <= 0:
            self.log.info("reconcile sweep off (ARBITER_RECONCILE_INTERVAL_SECONDS=0)")
        else:
            self.log.info("reconcile sweep on", every_seconds=settings.reconcile_interval_seconds)
            self.passes[1].start()

    async def stop(self) -> None:
        for periodic in self.passes:
            await periodic.stop()
