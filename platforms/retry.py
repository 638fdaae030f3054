"""What both platforms' HTTP clients share: the request policy (timeout, retries with backoff,
how long a rate limit may keep a request waiting), which answers are worth retrying, how to
read a wait out of a header, the header that carries the delivery id, and the words of the
errors when a platform stays out of reach or asks for too long a wait.

The two transports differ in how they wait: GitHub's (platforms/github_transport.py) runs on
the event loop and awaits its `sleep`; GitLab's (platforms/gitlab_transport.py) runs in a
thread pool and blocks in it. `RequestPolicy` is generic in that one thing. `Tries` is one
request's bookkeeping under the policy: both transports' loops ask it what comes next.

A write that creates something (a POST) is never sent twice blindly: when its answer is lost
(a 5xx, a timeout, a connection dropped once it was sent) the transport raises
`WriteUncertain`, and the platform reconciles with `once` / `once_blocking`: it looks on the
platform for what the write would have made (by its hidden marker) and sends it again only
when it is not there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bot.logs import Logger
from config.settings import Settings
from platforms.base import PlatformError, PlatformName, RateLimited, WriteUncertain

DELIVERY_HEADER = "X-Arbiter-Delivery"  # so the platform's request logs can be matched to ours
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0

Clock = Callable[[], float]
AsyncSleep = Callable[[float], Awaitable[None]]
BlockingSleep = Callable[[float], None]
SleepT = TypeVar("SleepT", AsyncSleep, BlockingSleep)
T = TypeVar("T")

_DISPLAY_NAMES: dict[PlatformName, str] = {"github": "GitHub", "gitlab": "GitLab"}


def backoff(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds before retry number `failures` (1-based): base·2^(failures-1), at most `cap`."""
    return float(min(base * 2 ** (failures - 1), cap))


def header_seconds(value: str | None) -> float | None:
    """A header's number of seconds (Retry-After, a reset time), or None when absent or not one."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RequestPolicy(Generic[SleepT]):
    """How one platform's requests are sent: ARBITER_INTEGRATION_TIMEOUT per request,
    ARBITER_INTEGRATION_MAX_RETRIES retries, and rate-limit waits that add up to at most
    ARBITER_<PLATFORM>_RATE_LIMIT_MAX_WAIT. `sleep` and `clock` are injectable so tests need
    not wait."""

    platform: PlatformName
    timeout: float
    max_retries: int
    max_rate_limit_wait: float
    sleep: SleepT
    clock: Clock = time.time
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP

    @classmethod
    def from_settings(
        cls, settings: Settings, platform: PlatformName, *, sleep: SleepT, clock: Clock
    ) -> RequestPolicy[SleepT]:
        max_wait = (
            settings.github_rate_limit_max_wait
            if platform == "github"
            else settings.gitlab_rate_limit_max_wait
        )
        return cls(
            platform=platform,
            timeout=settings.integration_timeout,
            max_retries=settings.integration_max_retries,
            max_rate_limit_wait=max_wait,
            sleep=sleep,
            clock=clock,
        )

    @property
    def service(self) -> str:
        """The platform's name as people write it: GitHub, GitLab."""
        return _DISPLAY_NAMES[self.platform]

    def backoff(self, failures: int) -> float:
        return backoff(failures, self.backoff_base, self.backoff_cap)

    def retry_delay(self, failures: int, retry_after: str | None) -> float:
        """Seconds before retrying a 5xx answer: its `Retry-After` (capped), else the backoff."""
        asked = header_seconds(retry_after) or 0.0
        return min(asked, self.backoff_cap) or self.backoff(failures)

    def check_wait(
        self, seconds: float, waited: float, *, limit: str, where: str, status: int
    ) -> None:
        """RateLimited when waiting `seconds` more, after `waited`, would pass the bound.
        `limit` names the limit ("rate limit", "primary rate limit"), `where` the request."""
        bound = self.max_rate_limit_wait
        if waited + seconds <= bound:
            return
        already = f", after {math.ceil(waited)} s of waiting already" if waited else ""
        setting = f"ARBITER_{self.platform.upper()}_RATE_LIMIT_MAX_WAIT"
        raise RateLimited(
            f"{self.service}'s {limit} would make {where} wait {math.ceil(seconds)} s more"
            f"{already}; Arbiter waits at most {bound:g} s ({setting})",
            retry_after=seconds,
            status=status,
        )

    def answer_lost(
        self,
        where: str,
        *,
        status: int | None = None,
        detail: str = "",
        retry_after: str | None = None,
    ) -> WriteUncertain:
        """A write sent but not answered (`status`: its 5xx; else `detail` says what happened).
        `detail` must never carry a header: tokens travel in them."""
        what = f"answered {status}" if status is not None else detail
        return WriteUncertain(
            f"{self.service} {what} to {where}: it may have been carried out",
            status=status,
            retry_after=retry_after,
        )

    def unreachable(
        self, where: str, attempts: int, *, timed_out: bool, detail: str
    ) -> PlatformError:
        """The error once every attempt timed out or lost its connection. `detail` must never
        carry a header: tokens travel in them."""
        if timed_out:
            return PlatformError(
                f"{self.service} did not answer {where} within {self.timeout:g} s, {attempts} "
                "attempts (ARBITER_INTEGRATION_TIMEOUT, ARBITER_INTEGRATION_MAX_RETRIES)"
            )
        return PlatformError(
            f"could not reach {self.service} for {where} after {attempts} attempts: {detail}"
        )


@dataclass
class Tries(Generic[SleepT]):
    """One request's tries under a policy: the transport sends and sleeps; this counts failures
    and rate-limit waits, says what comes next, and logs each wait. `fields` go on every log
    line, after the request's method and path."""

    policy: RequestPolicy[SleepT]
    method: str
    path: str
    log: Logger
    fields: Mapping[str, Any] = field(default_factory=dict)
    failures: int = 0
    waited: float = 0.0

    @property
    def where(self) -> str:
        return f"{self.method} {self.path}"

    def failed(self) -> float | None:
        """A timeout or a dropped connection: the delay before the next try, or None when the
        retries are spent (then raise `unreachable`)."""
        self.failures += 1
        if self.failures > self.policy.max_retries:
            return None
        return self.policy.backoff(self.failures)

    def unreachable(self, *, timed_out: bool, detail: str) -> PlatformError:
        return self.policy.unreachable(
            self.where, self.failures, timed_out=timed_out, detail=detail
        )

    def answered(self, status: int, retry_after: str | None) -> float | None:
        """The delay before retrying an answer with `status`, or None when the answer stands
        (not a 5xx worth retrying, or the retries are spent)."""
        if status not in RETRYABLE_STATUSES or self.failures >= self.policy.max_retries:
            return None
        self.failures += 1
        return self.policy.retry_delay(self.failures, retry_after)

    def retrying(self, reason: str, delay: float) -> None:
        self.log.warning(
            f"{self.policy.platform} request retried",
            reason=reason,
            attempt=self.failures + 1,
            delay=delay,
            method=self.method,
            path=self.path,
            **self.fields,
        )

    def rate_limited(self, seconds: float, *, status: int, kind: str | None = None) -> None:
        """A rate limit asks for `seconds`, about to be slept: RateLimited when that would pass
        the bound. `kind` names which limit, when the platform has several."""
        limit = f"{kind} rate limit" if kind else "rate limit"
        self.policy.check_wait(seconds, self.waited, limit=limit, where=self.where, status=status)
        self.waited += seconds
        self.log.warning(
            f"{self.policy.platform} rate limited, waiting",
            **({"kind": kind} if kind else {}),
            seconds=seconds,
            method=self.method,
            path=self.path,
            **self.fields,
        )


# --- Writes whose answer may be lost ------------------------------------------------------------


@dataclass
class LostAnswers:
    """One write's tries when answers may be lost: how long to wait before looking for it, and
    when to give up. Each lost answer counts against ARBITER_INTEGRATION_MAX_RETRIES."""

    policy: RequestPolicy[Any]
    action: str
    log: Logger
    failures: int = 0

    def lost(self, exc: WriteUncertain) -> float | None:
        """The delay before looking for the write, or None when the tries are spent."""
        self.failures += 1
        if self.failures > self.policy.max_retries:
            return None
        delay = self.policy.retry_delay(self.failures, exc.retry_after)
        self.log.warning(
            f"{self.policy.platform} write answer lost; looking for it before sending it again",
            action=self.action,
            error=str(exc),
            attempt=self.failures + 1,
            delay=delay,
        )
        return delay

    def spent(self, exc: WriteUncertain) -> WriteUncertain:
        tries = self.failures
        return WriteUncertain(
            f"{exc} ({tries} tries, ARBITER_INTEGRATION_MAX_RETRIES)",
            status=exc.status,
            retry_after=exc.retry_after,
        )

    def found(self) -> None:
        self.log.info(
            f"{self.policy.platform} write had been carried out; not sent again",
            action=self.action,
        )


async def once(
    lost: LostAnswers,
    send: Callable[[], Awaitable[T]],
    find: Callable[[], Awaitable[T | None]] | None,
    sleep: AsyncSleep,
) -> T:
    """`send()` a write; when its answer is lost, `find()` what it made before sending it again.
    Without `find` the write is idempotent in effect and is simply sent again."""
    while True:
        try:
            return await send()
        except WriteUncertain as exc:
            delay = lost.lost(exc)
            if delay is None:
                raise lost.spent(exc) from exc
            await sleep(delay)  # give the platform a moment to show what it did
            found = await find() if find is not None else None
            if found is not None:
                lost.found()
                return found


def once_blocking(
    lost: LostAnswers,
    send: Callable[[], T],
    find: Callable[[], T | None] | None,
    sleep: BlockingSleep,
) -> T:
    """`once` for a thread pool's blocking calls (GitLab's)."""
    while True:
        try:
            return send()
        except WriteUncertain as exc:
            delay = lost.lost(exc)
            if delay is None:
                raise lost.spent(exc) from exc
            sleep(delay)
            found = find() if find is not None else None
            if found is not None:
                lost.found()
                return found
