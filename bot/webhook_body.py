"""Webhook bodies read within bounds: a size limit that holds compressed or not, and a budget of
bytes held before any signature is checked.

`read_body` streams a request's body, inflating gzip or deflate step by step, and stops the
moment the body (as inflated) passes the limit: a 2 MB gzip bomb costs at most the limit's worth
of inflating, in small steps that let the event loop serve others. `UnverifiedBytes` is the
process-wide budget for bodies nobody has authenticated yet: a request that would overspend it
is refused at once, so strangers cannot take more than that much memory however many connect.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from types import TracebackType

from aiohttp import web

BODY_SECONDS = 10.0  # GitHub and GitLab give up on a delivery after 10 s
INFLATE_STEP = 256 * 1024  # inflated bytes per step; the loop runs others in between
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyError(Exception):
    """A body that cannot be taken; the message says why, for the sender."""


class TooLarge(BodyError):
    pass


class Unsupported(BodyError):
    pass


class Corrupt(BodyError):
    pass


class OverBudget(BodyError):
    pass


class TooSlow(BodyError):
    pass


def content_coding(headers: Mapping[str, str]) -> str | None:
    """The body's `Content-Encoding` ("gzip" or "deflate"), None when sent as is."""
    value = headers.get("Content-Encoding")
    if value is None:
        return None
    coding = value.strip().lower()
    if coding in _WBITS:
        return coding
    if coding in ("", "identity"):
        return None
    raise Unsupported("Content-Encoding must be gzip, deflate or identity (one coding)")


def check_declared_length(headers_length: int | None, limit: int) -> None:
    """Refuse from the headers alone a body that says it is over the limit."""
    if headers_length is not None and headers_length > limit:
        raise TooLarge(f"body is larger than {limit} bytes (ARBITER_MAX_WEBHOOK_BYTES)")


class UnverifiedBytes:
    """How many body bytes are held, process-wide, before their sender is authenticated.

    One event loop runs every request, so plain arithmetic is enough: no lock.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0

    def hold(self) -> Hold:
        return Hold(self)


class Hold:
    """One request's share of the budget, given back when the request is done with it."""

    __slots__ = ("_budget", "held")

    def __init__(self, budget: UnverifiedBytes) -> None:
        self._budget = budget
        self.held = 0

    def cover(self, size: int) -> None:
        """Grow the share to `size` bytes, or refuse the request."""
        more = size - self.held
        if more <= 0:
            return
        budget = self._budget
        if budget.in_use + more > budget.capacity:
            raise OverBudget(
                "too many unverified webhook bytes are being received at once; deliver again "
                "later (ARBITER_MAX_UNVERIFIED_BYTES)"
            )
        budget.in_use += more
        self.held = size

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._budget.in_use -= self.held
        self.held = 0


async def read_body(
    request: web.Request, *, limit: int, coding: str | None, hold: Hold | None
) -> bytes:
    """The whole body, inflated; at most `limit` bytes are ever inflated or kept.

    `hold` (for senders not yet authenticated) is grown to what is kept, or refuses the request.
    """
    declared = request.content_length
    if hold is not None and declared is not None and coding is None:
        hold.cover(declared)  # the whole share at once: refused before a byte is read
    stream = request.content
    try:
        if coding is None and declared is not None and declared <= limit and stream.is_eof():
            # All of it has arrived already (a delivery of a few KB usually has): no wait, so
            # no timer. `declared` is at most `limit`; aiohttp reads no more than it declares.
            return stream.read_nowait()
        async with asyncio.timeout(BODY_SECONDS):
            if coding is None:
                return await _read_plain(request, limit, hold)
            return await _read_inflated(request, limit, coding, hold)
    except TimeoutError:
        raise TooSlow(f"the body did not arrive within {BODY_SECONDS:g} s") from None
    except (web.RequestPayloadError, ConnectionResetError) as exc:
        raise Corrupt(f"the body could not be read: {exc}") from None


async def _read_plain(request: web.Request, limit: int, hold: Hold | None) -> bytes:
    stream = request.content
    parts: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body is larger than {limit} bytes (ARBITER_MAX_WEBHOOK_BYTES)")
        if hold is not None:
            hold.cover(size)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _read_inflated(request: web.Request, limit: int, coding: str, hold: Hold | None) -> bytes:
    stream = request.content
    inflater: zlib._Decompress | None = None
    parts: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        if inflater is None:
            inflater = _inflater(coding, chunk)
        data = chunk
        while data:
            # Never more than one byte past the limit: that byte is what proves it is passed.
            room = min(INFLATE_STEP, limit - size + 1)
            try:
                piece = inflater.decompress(data, room)
            except zlib.error:
                raise Corrupt(f"the body is not valid {coding} data") from None
            size += len(piece)
            if size > limit:
                raise TooLarge(
                    f"body inflates to more than {limit} bytes (ARBITER_MAX_WEBHOOK_BYTES)"
                )
            if hold is not None:
                hold.cover(size)
            parts.append(piece)
            data = inflater.unconsumed_tail
            if data:
                await asyncio.sleep(0)  # a bomb inflates in steps; others are served between
        if inflater.eof and inflater.unused_data:
            raise Corrupt(f"data follows the end of the {coding} body")
    if inflater is None or not inflater.eof:
        raise Corrupt(f"the {coding} body is cut short: its end never came")
    return b"".join(parts)


def _inflater(coding: str, first: bytes) -> zlib._Decompress:
    wbits = _WBITS[coding]
    if coding == "deflate" and first[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, no zlib header: some senders mean that by it
    return zlib.decompressobj(wbits)
