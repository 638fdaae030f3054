"""A per-client rate limit: at most `limit` requests in any `window` seconds.

A sliding log (each client's recent request times), so "60 a minute" means exactly that for
every minute-long window, not 60 per clock minute with 120 across a boundary. Refused requests
are not logged: a client that keeps knocking is let in as soon as its oldest request ages out.
The clock is injected, so tests move time instead of waiting.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_CLIENTS = 10_000  # clients remembered; the least recently seen is forgotten past this


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int  # requests left in the current window, after this one
    reset_after: float  # seconds until the oldest counted request stops counting
    retry_after: float  # seconds to wait when refused (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class RateLimiter:
    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.time,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a rate limit needs a positive limit and window")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_clients = max_clients
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, client: str) -> Verdict:
        """Count a request from `client`, unless it is over the limit."""
        now = self._clock()
        log = self._seen.get(client)
        if log is None:
            log = self._seen[client] = deque()
            if len(self._seen) > self._max_clients:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(client)
        while log and log[0] <= now - self.window:
            log.popleft()
        if len(log) >= self.limit:
            wait = log[0] + self.window - now
            return Verdict(False, self.limit, 0, wait, wait)
        log.append(now)
        return Verdict(True, self.limit, self.limit - len(log), log[0] + self.window - now, 0.0)
