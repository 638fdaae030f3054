"""The one argument every handler gets: the event and what it needs to act on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.events import Event
from bot.logs import Logger, get_logger
from bot.metrics import Metrics
from bot.store import Store
from config.settings import Settings
from platforms.base import Platform

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
    log: Logger = field(init=False)
    _platform: Platform | None = field(default=None, init=False, repr=False)

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
