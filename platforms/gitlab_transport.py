"""How Arbiter's GitLab requests travel: timeouts, retries, rate limits, the delivery id.

python-gitlab sends its requests through a `requests.Session`; `RetryingAdapter` is the
transport adapter mounted on it. Every request, whatever python-gitlab call made it, gets
retries with backoff on 5xx answers, timeouts and dropped connections (up to
ARBITER_INTEGRATION_MAX_RETRIES), and GitLab's 429 waited out when its `Retry-After` (or
`RateLimit-Reset`) fits within ARBITER_GITLAB_RATE_LIMIT_MAX_WAIT; otherwise `RateLimited`
says how long GitLab asked for. python-gitlab's own retry loop stays off: it sleeps as long
as any `Retry-After` says, with no bound and no log line. A POST creates something: once
sent, a lost answer raises `WriteUncertain` instead of a retry, and the platform looks for
what it made first (platforms/gitlab.py).

The adapter runs in the GitLab thread pool (python-gitlab is synchronous), so it sleeps with a
blocking, injectable `sleep`. One adapter (one connection pool) is shared by every thread;
each thread has its own `Session`, as requests does not promise a Session is thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError

from bot.logs import Logger, get_logger
from platforms.retry import (
    DELIVERY_HEADER,
    RETRYABLE_STATUSES,
    BlockingSleep,
    RequestPolicy,
    Tries,
    header_seconds,
)

RATE_LIMIT_DEFAULT_WAIT = 60.0  # a 429 that names no time: GitLab's limits reset each minute


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float:
    """How long a 429 asks us to wait: `Retry-After`, else until `RateLimit-Reset`."""
    retry_after = header_seconds(headers.get("Retry-After"))
    if retry_after is not None:
        return max(retry_after, 0.0)
    reset = header_seconds(headers.get("RateLimit-Reset"))
    if reset is not None:
        return max(reset - now, 1.0)
    return RATE_LIMIT_DEFAULT_WAIT


def never_sent(exc: requests.RequestException) -> bool:
    """A connection that was never made (refused, unresolvable, too slow to open): the request
    cannot have reached GitLab."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", None), ConnectTimeoutError)  # NewConnectionError


class RetryingAdapter(HTTPAdapter):
    """requests' HTTP adapter with Arbiter's request policy around each send. A POST whose
    answer is lost once it was sent is not sent again: `WriteUncertain` (see the module)."""

    def __init__(
        self, policy: RequestPolicy[BlockingSleep], *, pool_size: int, log: Logger | None = None
    ):
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.policy = policy
        self._log = log or get_logger(component="gitlab")

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        method = request.method or "GET"
        path = urlsplit(request.url or "").path
        delivery = request.headers.get(DELIVERY_HEADER)
        tries = Tries(self.policy, method, path, self._log, {"delivery_id": delivery})
        creates = method == "POST"
        while True:
            try:
                response = super().send(request, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = type(exc).__name__
                if creates and not never_sent(exc):
                    detail = f"did not answer ({reason})"
                    raise self.policy.answer_lost(tries.where, detail=detail) from None
                delay = tries.failed()
                if delay is None:
                    # The exception's text names the host and port, never a header (the token
                    # travels in one): its name is enough.
                    timed_out = isinstance(exc, requests.Timeout)
                    raise tries.unreachable(timed_out=timed_out, detail=reason) from None
            else:
                status = response.status_code
                if status == 429:
                    wait = rate_limit_wait(response.headers, self.policy.clock())
                    tries.rate_limited(wait, status=429)
                    response.close()
                    self.policy.sleep(wait)
                    continue
                retry_after = response.headers.get("Retry-After")
                if creates and status in RETRYABLE_STATUSES:
                    response.close()
                    raise self.policy.answer_lost(
                        tries.where, status=status, retry_after=retry_after
                    )
                delay = tries.answered(status, retry_after)
                if delay is None:
                    return response
                reason = str(status)
                response.close()
            tries.retrying(reason, delay)
            self.policy.sleep(delay)


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
