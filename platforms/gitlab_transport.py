"""How Arbiter's GitLab requests travel: timeouts, retries, rate limits, the delivery id.

python-gitlab sends its requests through a `requests.Session`; `RetryingAdapter` is the
transport adapter mounted on it. Every request, whatever python-gitlab call made it, gets
retries with backoff on 5xx answers, timeouts and dropped connections (up to
ARBITER_INTEGRATION_MAX_RETRIES), and GitLab's 429 waited out when its `Retry-After` (or
`RateLimit-Reset`) fits within ARBITER_GITLAB_RATE_LIMIT_MAX_WAIT; otherwise `RateLimited`
says how long GitLab asked for. python-gitlab's own retry loop stays off: it sleeps as long
as any `Retry-After` says, with no bound and no log line.

The adapter runs in the GitLab thread pool (python-gitlab is synchronous), so it sleeps with a
blocking, injectable `sleep`. One adapter (one connection pool) is shared by every thread;
each thread has its own `Session`, as requests does not promise a Session is thread-safe.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from bot.logs import Logger, get_logger
from platforms.base import PlatformError, RateLimited
from platforms.retry import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    DELIVERY_HEADER,
    RETRYABLE_STATUSES,
    backoff,
    header_seconds,
)

RATE_LIMIT_DEFAULT_WAIT = 60.0  # a 429 that names no time: GitLab's limits reset each minute

Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class RequestPolicy:
    timeout: float
    max_retries: int
    max_rate_limit_wait: float
    sleep: Sleep = time.sleep
    clock: Clock = time.time
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP

    def backoff(self, failures: int) -> float:
        return backoff(failures, self.backoff_base, self.backoff_cap)


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float:
    """How long a 429 asks us to wait: `Retry-After`, else until `RateLimit-Reset`."""
    retry_after = header_seconds(headers.get("Retry-After"))
    if retry_after is not None:
        return max(retry_after, 0.0)
    reset = header_seconds(headers.get("RateLimit-Reset"))
    if reset is not None:
        return max(reset - now, 1.0)
    return RATE_LIMIT_DEFAULT_WAIT


class RetryingAdapter(HTTPAdapter):
    """requests' HTTP adapter with Arbiter's request policy around each send."""

    def __init__(self, policy: RequestPolicy, *, pool_size: int, log: Logger | None = None):
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.policy = policy
        self._log = log or get_logger(component="gitlab")

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        method = request.method or "GET"
        path = urlsplit(request.url or "").path
        delivery = request.headers.get(DELIVERY_HEADER)
        failures = 0
        waited = 0.0
        while True:
            try:
                response = super().send(request, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                failures += 1
                if failures > self.policy.max_retries:
                    raise _unreachable(method, path, exc, failures, self.policy) from None
                delay, reason = self.policy.backoff(failures), type(exc).__name__
            else:
                status = response.status_code
                if status == 429:
                    wait = rate_limit_wait(response.headers, self.policy.clock())
                    self._check_wait(wait, waited, method, path)
                    waited += wait
                    response.close()
                    self._log.warning(
                        "gitlab rate limited, waiting",
                        seconds=wait,
                        method=method,
                        path=path,
                        delivery_id=delivery,
                    )
                    self.policy.sleep(wait)
                    continue
                if status not in RETRYABLE_STATUSES or failures >= self.policy.max_retries:
                    return response
                failures += 1
                asked = header_seconds(response.headers.get("Retry-After")) or 0.0
                delay = min(asked, self.policy.backoff_cap) or self.policy.backoff(failures)
                reason = str(status)
                response.close()
            self._log.warning(
                "gitlab request retried",
                reason=reason,
                attempt=failures + 1,
                delay=delay,
                method=method,
                path=path,
                delivery_id=delivery,
            )
            self.policy.sleep(delay)

    def _check_wait(self, wait: float, waited: float, method: str, path: str) -> None:
        bound = self.policy.max_rate_limit_wait
        if waited + wait <= bound:
            return
        already = f", after {math.ceil(waited)} s of waiting already" if waited else ""
        raise RateLimited(
            f"GitLab's rate limit would make {method} {path} wait {math.ceil(wait)} s more"
            f"{already}; "
            f"Arbiter waits at most {bound:g} s (ARBITER_GITLAB_RATE_LIMIT_MAX_WAIT)",
            retry_after=wait,
            status=429,
        )


def _unreachable(
    method: str, path: str, exc: BaseException, attempts: int, policy: RequestPolicy
) -> PlatformError:
    where = f"{method} {path}"
    if isinstance(exc, requests.Timeout):
        return PlatformError(
            f"GitLab did not answer {where} within {policy.timeout:g} s, {attempts} attempts "
            "(ARBITER_INTEGRATION_TIMEOUT, ARBITER_INTEGRATION_MAX_RETRIES)"
        )
    # The exception's text names the host and port, never a header (the token travels in one).
    return PlatformError(
        f"could not reach GitLab for {where} after {attempts} attempts: {type(exc).__name__}"
    )


class Sessions:
    """A `requests.Session` per thread, all sending through one `RetryingAdapter`."""

    def __init__(self, adapter: RetryingAdapter) -> None:
        self.adapter = adapter
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def current(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", self.adapter)
            session.mount("https://", self.adapter)
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._all = self._all, []
        for session in sessions:
            session.close()
        self.adapter.close()
