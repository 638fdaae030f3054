"""How Arbiter's GitHub requests travel: gidgethub's aiohttp client, and what gidgethub leaves
to its callers.

`Transport` adds a timeout per request, retries with backoff on 5xx answers and dropped
connections (up to ARBITER_INTEGRATION_MAX_RETRIES), GitHub's primary and secondary rate limits
waited out up to ARBITER_GITHUB_RATE_LIMIT_MAX_WAIT, and the webhook delivery id in an
`X-Arbiter-Delivery` header so GitHub-side logs can be matched to ours (the policy and its
bookkeeping are platforms/retry.py's). A POST whose answer is lost is not sent again here: it
raises `WriteUncertain`, and the platform looks for what it made first (platforms/github.py).
Conditional GETs use a process-wide ETag cache, of which each credential sees only its own
share (`ScopedCache`).

A `Request` is one API call waiting for a transport and a token (`get`, `collect`, `post`…):
the platform decides which token, and mints a fresh one when GitHub refuses a stale one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp
import cachetools
from gidgethub import HTTPException, sansio
from gidgethub import aiohttp as gh_aiohttp
from gidgethub.abc import CACHE_TYPE

from bot.logs import Logger
from platforms.base import USER_AGENT, PlatformError
from platforms.retry import (
    DELIVERY_HEADER,
    RETRYABLE_STATUSES,
    AsyncSleep,
    RequestPolicy,
    Tries,
    header_seconds,
)

RAW_MEDIA_TYPE = "application/vnd.github.raw"
SECONDARY_LIMIT_DEFAULT_WAIT = 60.0  # GitHub: "wait at least one minute" when it names no time
ETAG_CACHE_ENTRIES = 2048

T = TypeVar("T")
EtagCache = cachetools.LRUCache[tuple[str, str], Any]  # (credential scope, url) to a response


# --- Rate limits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimitWait:
    seconds: float
    kind: Literal["primary", "secondary"]
    status: int


def rate_limit_wait(
    status: int, headers: Mapping[str, str], body: bytes, now: float
) -> RateLimitWait | None:
    """How long GitHub asks us to wait before trying again, or None when this is no rate limit."""
    if status not in (403, 429):
        return None
    retry_after = header_seconds(headers.get("retry-after"))
    reset = header_seconds(headers.get("x-ratelimit-reset"))
    if headers.get("x-ratelimit-remaining") == "0" and reset is not None:
        return RateLimitWait(retry_after or max(reset - now, 1.0), "primary", status)
    if retry_after is not None:
        return RateLimitWait(retry_after, "secondary", status)
    if status == 429 or b"rate limit" in body.lower():
        return RateLimitWait(SECONDARY_LIMIT_DEFAULT_WAIT, "secondary", status)
    return None  # a 403 that is a refusal, not a limit


# --- Transport --------------------------------------------------------------------------------


class ScopedCache(CACHE_TYPE):
    """One credential's view of the process-wide ETag cache: what one installation read stays
    its own, even though GitHub would only answer 304 for a representation it may see."""

    def __init__(self, shared: EtagCache, scope: str) -> None:
        self._shared = shared
        self._scope = scope

    def __getitem__(self, url: str) -> Any:
        return self._shared[(self._scope, url)]

    def __setitem__(self, url: str, value: Any) -> None:
        self._shared[(self._scope, url)] = value

    def __delitem__(self, url: str) -> None:
        del self._shared[(self._scope, url)]

    def __iter__(self) -> Iterator[str]:
        return iter([url for scope, url in list(self._shared) if scope == self._scope])

    def __len__(self) -> int:
        return sum(1 for scope, _ in list(self._shared) if scope == self._scope)


class Transport(gh_aiohttp.GitHubAPI):
    """gidgethub's aiohttp client, with a timeout, retries, rate-limit waits and the delivery id.

    Reads, edits and deletions are retried as they are (the same request twice has the effect
    of one). A POST creates something: once sent, a lost answer (a 5xx, a timeout, a dropped
    connection) raises `WriteUncertain` instead, for the caller to reconcile. A rate limit or a
    connection never made is no lost answer: GitHub did nothing, so any method waits and tries
    again.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: RequestPolicy[AsyncSleep],
        *,
        base_url: str,
        cache: CACHE_TYPE,
        delivery_id: str | None,
        log: Logger,
    ) -> None:
        super().__init__(session, USER_AGENT, cache=cache, base_url=base_url)
        self._policy = policy
        self._extra_headers = {DELIVERY_HEADER: delivery_id} if delivery_id else {}
        self._log = log

    async def sleep(self, seconds: float) -> None:
        await self._policy.sleep(seconds)

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        headers = {**headers, **self._extra_headers}
        tries = Tries(self._policy, method, urlsplit(url).path, self._log)
        creates = method == "POST"
        while True:
            try:
                response = await self._send(method, url, headers, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
                if creates and not never_sent(exc):
                    detail = f"did not answer ({reason})"
                    raise self._policy.answer_lost(tries.where, detail=detail) from exc
                delay = tries.failed()
                if delay is None:
                    timed_out = isinstance(exc, TimeoutError)
                    raise tries.unreachable(timed_out=timed_out, detail=str(exc)) from exc
            else:
                status, response_headers, data = response
                limit = rate_limit_wait(status, response_headers, data, self._policy.clock())
                if limit is not None:
                    tries.rate_limited(limit.seconds, status=limit.status, kind=limit.kind)
                    await self.sleep(limit.seconds)
                    continue
                retry_after = response_headers.get("retry-after")
                if creates and status in RETRYABLE_STATUSES:
                    raise self._policy.answer_lost(
                        tries.where, status=status, retry_after=retry_after
                    )
                delay = tries.answered(status, retry_after)
                if delay is None:
                    return response
                reason = str(status)
            tries.retrying(reason, delay)
            await self.sleep(delay)

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        timeout = aiohttp.ClientTimeout(total=self._policy.timeout)
        async with self._session.request(
            method, url, headers=headers, data=body, timeout=timeout
        ) as response:
            return response.status, response.headers, await response.read()

    async def get_raw(self, url: str, *, oauth_token: str | None) -> bytes:
        """The body as bytes, through the raw media type (no ETag cache: these are big)."""
        headers = sansio.create_headers(
            self.requester, accept=RAW_MEDIA_TYPE, oauth_token=oauth_token
        )
        status, response_headers, body = await self._request(
            "GET", sansio.format_url(url, None, base_url=self.base_url), headers
        )
        if status != 200:
            sansio.decipher_response(status, response_headers, body)  # raises GitHub's error
        return body


def never_sent(exc: BaseException) -> bool:
    """A connection that was never made: the request cannot have reached GitHub."""
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def platform_error(action: str, exc: HTTPException) -> PlatformError:
    status = int(exc.status_code)
    detail = str(exc) or exc.status_code.phrase
    return PlatformError(f"GitHub refused to {action}: {status} {detail}", status=status)


# --- Requests ---------------------------------------------------------------------------------


Request = Callable[[Transport, str], Awaitable[T]]


def get(url: str) -> Request[Any]:
    async def request(http: Transport, token: str) -> Any:
        return await http.getitem(url, oauth_token=token)

    return request


def get_raw(url: str) -> Request[bytes]:
    async def request(http: Transport, token: str) -> bytes:
        return await http.get_raw(url, oauth_token=token)

    return request


def collect(url: str, *, limit: int) -> Request[list[Any]]:
    async def request(http: Transport, token: str) -> list[Any]:
        items: list[Any] = []
        async with aclosing(http.getiter(url, oauth_token=token)) as pages:
            async for item in pages:
                items.append(item)
                if len(items) >= limit:
                    break
        return items

    return request


def post(url: str, data: Any) -> Request[Any]:
    async def request(http: Transport, token: str) -> Any:
        return await http.post(url, data=data, oauth_token=token)

    return request


def patch(url: str, data: Any) -> Request[Any]:
    async def request(http: Transport, token: str) -> Any:
        return await http.patch(url, data=data, oauth_token=token)

    return request


def delete(url: str) -> Request[None]:
    async def request(http: Transport, token: str) -> None:
        await http.delete(url, oauth_token=token)

    return request
