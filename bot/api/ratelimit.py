"""A per-client rate limit: at most `limit` requests in any `window` seconds.

A sliding log (each client's recent request times), so "60 a minute" means exactly that for
every minute-long window, not 60 per clock minute with 120 across a boundary. Refused requests
are not logged: a client that keeps knocking is let in as soon as its oldest request ages out.
The clock is injected, so tests move time instead of waiting.

`RateLimiter` keeps the log in this process. `ApiRateLimit` is what the API applies: with
ARBITER_REDIS_URL, the same sliding log in Redis (a sorted set per client, updated by one Lua
script, so N web processes allow the limit once, not N times); without it, or while Redis does
not answer, this process's own log.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.logs import get_logger

if TYPE_CHECKING:
    from redis.asyncio import Redis

MAX_CLIENTS = 10_000  # clients remembered; the least recently seen is forgotten past this
FALLBACK_WARNING_EVERY = 60.0  # seconds between two warnings that Redis does not answer

# KEYS[1]: the client's log; ARGV: now, window, limit, a unique member for this request.
# Returns {allowed (0/1), requests counted, the oldest counted request's time (a string)}.
_SLIDING_LOG = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  count = count + 1
  allowed = 1
end
redis.call('PEXPIRE', KEYS[1], math.ceil(ARGV[2] * 1000))
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {allowed, count, oldest[2] or ARGV[1]}
"""


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


class ApiRateLimit:
    """The operator API's limit: shared by every process through Redis when there is one,
    else counted in this process; a Redis failure falls back to this process's count (the
    API keeps answering, at worst with the per-process limit) and is logged once a minute."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        redis: Redis | None = None,
        prefix: str = "arbiter:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.window = window
        self.local = RateLimiter(limit, window, clock=clock)
        self._redis = redis
        self._prefix = f"{prefix}api-rate:"
        self._clock = clock
        self._script = redis.register_script(_SLIDING_LOG) if redis is not None else None
        self._warned_at: float | None = None
        self._log = get_logger(component="api")

    @property
    def shared(self) -> bool:
        return self._script is not None

    async def hit(self, client: str) -> Verdict:
        """Count a request from `client`, unless it is over the limit."""
        if self._script is None:
            return self.local.hit(client)
        from redis.exceptions import RedisError

        now = self._clock()
        try:
            allowed, count, oldest = await self._script(
                keys=[self._prefix + client],
                args=[repr(now), repr(self.window), self.limit, f"{now!r}:{uuid.uuid4().hex}"],
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._warn(exc)
            return self.local.hit(client)
        reset = max(float(oldest) + self.window - now, 0.0)
        if not int(allowed):
            return Verdict(False, self.limit, 0, reset, reset)
        return Verdict(True, self.limit, max(self.limit - int(count), 0), reset, 0.0)

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= FALLBACK_WARNING_EVERY:
            self._warned_at = now
            self._log.warning(
                "redis does not answer: the API rate limit is counted in this process alone",
                error=f"{type(exc).__name__}: {exc}",
                setting="ARBITER_REDIS_URL",
            )
