"""Webhook intake: verify → normalize → durably enqueue → answer, in a few milliseconds.

The checks are pure functions (`github_signature`, `verify_github`, `read_github`, …) raising
`Rejected`; the `WebhookReceiver` wires them to aiohttp and the store. What the headers alone
can refuse (platform not configured, a missing or ill-formed signature or token, a body declared
too large, an unknown encoding) is refused before a byte of the body is read; the body is then
read within bounds (bot/webhook_body.py). Nothing here runs a handler: a handler's bug can never
turn a delivery into a 5xx. The only 5xx is 503, when the store is down, so the platform
delivers again later.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from aiohttp import web
from gidgethub import ValidationFailure
from gidgethub.sansio import validate_event

from bot.events import Event, NotJSON, PayloadError, from_gitlab, github_from_json, json_object
from bot.logs import get_logger
from bot.metrics import Metrics
from bot.router import Router
from bot.store import Delivery, NewJob, Store, StoreUnavailable
from bot.webhook_body import (
    BODY_SECONDS,
    Corrupt,
    Hold,
    OverBudget,
    TooLarge,
    TooSlow,
    Unsupported,
    UnverifiedBytes,
    check_declared_length,
    content_coding,
    read_body,
)
from config.settings import PlatformStatus, Settings, platform_status

EVENT_JOB = "event"
_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")  # ASCII only: anything else never matches
_EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_DELIVERY_ID = re.compile(r"[!-~]{1,255}")  # visible ASCII: it becomes a store key
# Larger bodies are hashed and parsed in a worker thread: megabytes of HMAC (which releases the
# GIL) or JSON would otherwise hold up every other request, /health included.
OFF_LOOP_BYTES = 1024 * 1024
_T = TypeVar("_T")


@dataclass
class Rejected(Exception):
    """A delivery refused before it reaches the store; `status` and `message` are the answer."""

    status: int
    message: str
    outcome: str
    retry_after: int | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


# --- Pure checks -------------------------------------------------------------------------------


def github_signature(headers: Mapping[str, str]) -> str:
    """`X-Hub-Signature-256`, checked to be `sha256=<64 hex digits>` before anything is read."""
    signature = headers.get("X-Hub-Signature-256")
    if not signature:
        raise Rejected(401, "missing X-Hub-Signature-256 header", "unauthorized")
    if not _SIGNATURE.fullmatch(signature):
        raise Rejected(401, "X-Hub-Signature-256 must be sha256=<64 hex digits>", "unauthorized")
    return signature


def verify_github(signature: str, body: bytes, secret: str) -> None:
    """Check a well-formed signature (HMAC-SHA256 of the body) with gidgethub's verifier."""
    try:
        validate_event(body, signature=signature, secret=secret)
    except ValidationFailure:
        raise Rejected(401, "signature does not match the webhook secret", "unauthorized") from None


def github_delivery(headers: Mapping[str, str]) -> tuple[str, str]:
    """`X-GitHub-Event` and `X-GitHub-Delivery`, checked before the body is read."""
    name = headers.get("X-GitHub-Event")
    if not name:
        raise Rejected(400, "missing X-GitHub-Event header", "bad_request")
    if not _EVENT_NAME.fullmatch(name):
        raise Rejected(
            400, "X-GitHub-Event must be an event name (letters, digits, '_')", "bad_request"
        )
    delivery_id = headers.get("X-GitHub-Delivery")
    if not delivery_id:
        raise Rejected(400, "missing X-GitHub-Delivery header", "bad_request")
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise Rejected(
            400,
            "X-GitHub-Delivery must be 1 to 255 visible ASCII characters (a GUID)",
            "bad_request",
        )
    return name, delivery_id


def verify_gitlab(headers: Mapping[str, str], secret: str) -> None:
    """Compare `X-Gitlab-Token` with the configured token in constant time."""
    token = headers.get("X-Gitlab-Token")
    if not token:
        raise Rejected(401, "missing X-Gitlab-Token header", "unauthorized")
    # A header's non-UTF-8 bytes arrive as lone surrogates: give them back as the bytes they were.
    sent = token.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(sent, secret.encode()):
        raise Rejected(401, "X-Gitlab-Token does not match the webhook token", "unauthorized")


@dataclass(frozen=True)
class Received:
    """A verified delivery: its event, and the payload's JSON text as it came."""

    event: Event
    text: str

    def job_payload(self) -> str:
        return self.event.to_json(payload_text=self.text)


def _json_text(headers: Mapping[str, str], body: bytes) -> str:
    """The JSON text of a body, as its content type carries it (not yet checked to be JSON)."""
    content_type = headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    try:
        if content_type == "application/x-www-form-urlencoded":
            # GitHub's other content type: the JSON sits in a `payload` form field.
            fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
            return fields.get("payload", [""])[0]
        return body.decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(400, f"body is not valid JSON: {exc}", "bad_request") from None


def _json_body(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, Any], str]:
    text = _json_text(headers, body)
    try:
        return json_object(text), text
    except NotJSON as exc:
        raise Rejected(400, str(exc), "bad_request") from None


def read_github(name: str, delivery_id: str, headers: Mapping[str, str], body: bytes) -> Received:
    """The Event of a verified GitHub delivery (`name`, `delivery_id` from `github_delivery`).
    The fields normalization reads are checked straight from the JSON text, which is queued as
    it came; the body is not decoded into objects here (`github_from_json`)."""
    text = _json_text(headers, body)
    try:
        return Received(github_from_json(name, delivery_id, text), text)
    except PayloadError as exc:  # NotJSON among them
        raise Rejected(400, str(exc), "bad_request") from None


def gitlab_delivery_header(headers: Mapping[str, str]) -> str | None:
    """GitLab's id for a delivery, stable across its retries, when a header carries one."""
    for header in ("Idempotency-Key", "X-Gitlab-Webhook-UUID", "X-Gitlab-Event-UUID"):
        value = headers.get(header)
        if value:
            if not _DELIVERY_ID.fullmatch(value):
                raise Rejected(
                    400, f"{header} must be 1 to 255 visible ASCII characters", "bad_request"
                )
            return value
    return None


def gitlab_delivery_id(headers: Mapping[str, str], body: bytes) -> str:
    """GitLab's id for a delivery, stable across its retries; the body's hash as a last resort."""
    return gitlab_delivery_header(headers) or "sha256:" + hashlib.sha256(body).hexdigest()


def read_gitlab(
    headers: Mapping[str, str], body: bytes, *, bot_names: frozenset[str] = frozenset()
) -> Received:
    """The Event of a verified GitLab delivery."""
    if not headers.get("X-Gitlab-Event"):
        raise Rejected(400, "missing X-Gitlab-Event header", "bad_request")
    data, text = _json_body(headers, body)
    try:
        event = from_gitlab(gitlab_delivery_id(headers, body), data, bot_names=bot_names)
        return Received(event, text)
    except PayloadError as exc:
        raise Rejected(400, str(exc), "bad_request") from None


def before_the_body(headers: Mapping[str, str], length: int | None, limit: int) -> str | None:
    """What the headers say of the body: refused here if declared too large or in an unknown
    encoding; otherwise its content coding (None when sent as is)."""
    try:
        check_declared_length(length, limit)
        return content_coding(headers)
    except TooLarge as exc:
        raise Rejected(413, str(exc), "too_large") from None
    except Unsupported as exc:
        raise Rejected(415, str(exc), "unsupported_encoding") from None


async def _sized(size: int, work: Callable[..., _T], *args: Any) -> _T:
    """`work(*args)` for a body of `size` bytes: in a worker thread past OFF_LOOP_BYTES."""
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(work, *args)
    return work(*args)


async def _received(size: int, read: Callable[[], Received]) -> tuple[Received, str | None]:
    """The delivery `read` returns and, when a body past OFF_LOOP_BYTES is read in a worker
    thread, its job payload too (a small one's is made only if a job is queued)."""
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(_with_job_payload, read)
    return read(), None


def _with_job_payload(read: Callable[[], Received]) -> tuple[Received, str]:
    received = read()
    return received, received.job_payload()


def _json(
    data: Mapping[str, Any], *, status: int, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON answer, written by orjson (aiohttp's json_response uses the json module)."""
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def _budget(settings: Settings) -> int:
    """Bytes of unverified bodies held at once: a delivery as large as allowed always fits."""
    return max(settings.max_unverified_bytes, settings.max_webhook_bytes)


# --- The aiohttp side --------------------------------------------------------------------------


class WebhookReceiver:
    def __init__(
        self,
        settings: Settings | Callable[[], Settings],
        store: Store,
        router: Router,
        metrics: Metrics,
        *,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        # A callable is read on every delivery, so credentials that change while the process
        # runs (the /setup flow) apply at once; a Settings object stays as it is.
        if isinstance(settings, Settings):
            fixed = settings
            self._settings: Callable[[], Settings] = lambda: fixed
        else:
            self._settings = settings
        self.store = store
        self.router = router
        self.metrics = metrics
        self.on_enqueued = on_enqueued
        self.log = get_logger(component="webhooks")
        self._status_for: tuple[Settings, dict[str, PlatformStatus]] | None = None
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._unverified = UnverifiedBytes(_budget(self.settings))
        bot = self.settings.bot_name.lower()
        self._gitlab_bots = frozenset({bot, bot.removesuffix("[bot]")})

    @property
    def settings(self) -> Settings:
        return self._settings()

    def _status(self, platform: str) -> PlatformStatus:
        settings = self.settings
        if self._status_for is None or self._status_for[0] is not settings:
            self._status_for = (settings, platform_status(settings))  # once per Settings object
            self._unverified.capacity = _budget(settings)
        return self._status_for[1][platform]

    async def github(self, request: web.Request) -> web.Response:
        settings = self.settings
        headers = request.headers
        try:
            self._require_enabled("github")
            secret = settings.github_webhook_secret
            assert secret is not None  # _require_enabled checked it
            signature = github_signature(headers)
            name, delivery_id = github_delivery(headers)
            coding = before_the_body(headers, request.content_length, settings.max_webhook_bytes)
            # Until the signature is checked, the body is a stranger's: held against the budget.
            with self._unverified.hold() as hold:
                body = await self._read(request, settings.max_webhook_bytes, coding, hold)
                await _sized(len(body), verify_github, signature, body, secret.get_secret_value())
            read = partial(read_github, name, delivery_id, headers, body)
            received, job = await _received(len(body), read)
        except Rejected as exc:
            return self._reject("github", request, exc)
        event = received.event
        if event.name == "ping":
            self._count("github", "ping", "ping")
            self.log.info("ping", delivery_id=event.delivery_id, zen=event.payload.get("zen"))
            return _json({"pong": True}, status=200)
        return await self._accept(received, job)

    async def gitlab(self, request: web.Request) -> web.Response:
        settings = self.settings
        headers = request.headers
        try:
            self._require_enabled("gitlab")
            secret = settings.gitlab_webhook_token
            assert secret is not None
            verify_gitlab(headers, secret.get_secret_value())
            if not headers.get("X-Gitlab-Event"):
                raise Rejected(400, "missing X-Gitlab-Event header", "bad_request")
            gitlab_delivery_header(headers)
            coding = before_the_body(headers, request.content_length, settings.max_webhook_bytes)
            # The token is checked: the sender is known, so its body is not held to the budget.
            body = await self._read(request, settings.max_webhook_bytes, coding, None)
            read = partial(read_gitlab, headers, body, bot_names=self._gitlab_bots)
            received, job = await _received(len(body), read)
        except Rejected as exc:
            return self._reject("gitlab", request, exc)
        return await self._accept(received, job)

    def _require_enabled(self, platform: str) -> None:
        status = self._status(platform)
        if not status.enabled:
            raise Rejected(
                403,
                f"{platform} is not configured on this server: set {' and '.join(status.missing)}",
                "unconfigured",
            )

    async def _read(
        self, request: web.Request, limit: int, coding: str | None, hold: Hold | None
    ) -> bytes:
        try:
            return await read_body(request, limit=limit, coding=coding, hold=hold)
        except TooLarge as exc:
            raise Rejected(413, str(exc), "too_large") from None
        except OverBudget as exc:
            raise Rejected(429, str(exc), "busy", retry_after=round(BODY_SECONDS)) from None
        except TooSlow as exc:
            raise Rejected(408, str(exc), "timeout") from None
        except Corrupt as exc:
            raise Rejected(400, str(exc), "bad_request") from None

    async def _accept(self, received: Received, job_payload: str | None) -> web.Response:
        event = received.event
        if not self.router.wants(event):
            self._count(event.platform, event.name, "ignored")
            self._log(event).debug("no handler wants this event")
            return _json({"ignored": True, "event": event.label}, status=202)
        job = NewJob(
            kind=EVENT_JOB,
            payload=job_payload if job_payload is not None else received.job_payload(),
            max_attempts=self.settings.worker_retry_attempts + 1,
            delivery_id=event.delivery_id,
        )
        try:
            result = await self.store.accept_delivery(
                Delivery(event.platform, event.delivery_id, event.label), job
            )
        except StoreUnavailable as exc:
            self._count(event.platform, event.name, "store_unavailable")
            self._log(event).error(
                "store unavailable; delivery refused so the platform retries", error=str(exc)
            )
            return _json(
                {"error": "the store is unavailable; deliver again later"},
                status=503,
                headers={"Retry-After": "30"},
            )
        if result.duplicate:
            self._count(event.platform, event.name, "duplicate")
            self._log(event).info("duplicate delivery ignored")
            return _json({"duplicate": True, "delivery_id": event.delivery_id}, status=200)
        self._count(event.platform, event.name, "accepted")
        # One line per accepted delivery at info would cost more than storing it; the count is
        # in arbiter_webhooks_total, and the job's own log lines name the delivery.
        self._log(event).debug("delivery queued", job_id=result.job_id)
        if self.on_enqueued is not None:
            self.on_enqueued()
        return _json({"job_id": result.job_id, "delivery_id": event.delivery_id}, status=202)

    def _log(self, event: Event) -> Any:
        return self.log.bind(
            delivery_id=event.delivery_id,
            platform=event.platform,
            _event=event.label,
            repo=event.repo,
            number=event.number,
        )

    def _reject(self, platform: str, request: web.Request, exc: Rejected) -> web.Response:
        self._count(platform, "unknown", exc.outcome)
        self.log.warning(
            "webhook rejected",
            platform=platform,
            status=exc.status,
            reason=exc.message,
            remote=request.remote,
        )
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        response = _json({"error": exc.message}, status=exc.status, headers=headers)
        if exc.status == 413 or not request.content.is_eof():
            # The rest of the body is never read: close rather than keep a connection it fills.
            # A body over the limit closes it even if it all arrived before the answer (a
            # compressed bomb's few hundred KB may have): whether the next request on it is
            # answered must not depend on how fast the sender was.
            response.force_close()
        return response

    def _count(self, platform: str, event: str, outcome: str) -> None:
        key = (platform, event, outcome)
        counter = self._counters.get(key)
        if counter is None:  # prometheus_client's labels() costs more than the rest of this
            counter = self._counters[key] = self.metrics.webhooks.labels(*key)
        counter.inc()
