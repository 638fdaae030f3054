"""Webhook intake: verify → normalize → durably enqueue → answer, in a few milliseconds.

The checks are pure functions (`verify_github`, `read_github`, …) raising `Rejected`; the
`WebhookReceiver` wires them to aiohttp and the store. Nothing here runs a handler: a handler's
bug can never turn a delivery into a 5xx. The only 5xx is 503, when the store is down, so the
platform delivers again later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web
from gidgethub import ValidationFailure
from gidgethub.sansio import validate_event

from bot.events import Event, PayloadError, from_github, from_gitlab
from bot.logs import get_logger
from bot.metrics import Metrics
from bot.router import Router
from bot.store import Delivery, NewJob, Store, StoreUnavailable
from config.settings import PlatformStatus, Settings, platform_status

EVENT_JOB = "event"


@dataclass
class Rejected(Exception):
    """A delivery refused before it reaches the store; `status` and `message` are the answer."""

    status: int
    message: str
    outcome: str

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


# --- Pure checks -------------------------------------------------------------------------------


def verify_github(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Check `X-Hub-Signature-256` (HMAC-SHA256 of the body) with gidgethub's verifier."""
    signature = headers.get("X-Hub-Signature-256")
    if not signature:
        raise Rejected(401, "missing X-Hub-Signature-256 header", "unauthorized")
    if not signature.startswith("sha256="):
        raise Rejected(401, "X-Hub-Signature-256 must be sha256=<hex digest>", "unauthorized")
    try:
        validate_event(body, signature=signature, secret=secret)
    except ValidationFailure:
        raise Rejected(401, "signature does not match the webhook secret", "unauthorized") from None


def verify_gitlab(headers: Mapping[str, str], secret: str) -> None:
    """Compare `X-Gitlab-Token` with the configured token in constant time."""
    token = headers.get("X-Gitlab-Token")
    if not token:
        raise Rejected(401, "missing X-Gitlab-Token header", "unauthorized")
    if not hmac.compare_digest(token.encode(), secret.encode()):
        raise Rejected(401, "X-Gitlab-Token does not match the webhook token", "unauthorized")


@dataclass(frozen=True)
class Received:
    """A verified delivery: its event, and the payload's JSON text as it came."""

    event: Event
    text: str

    def job_payload(self) -> str:
        return self.event.to_json(payload_text=self.text)


def _json_body(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, Any], str]:
    content_type = headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    try:
        if content_type == "application/x-www-form-urlencoded":
            # GitHub's other content type: the JSON sits in a `payload` form field.
            fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
            text = fields.get("payload", [""])[0]
        else:
            text = body.decode("utf-8")
        data = orjson.loads(text)  # a quarter of json's time on a 25 KB delivery
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(400, f"body is not valid JSON: {exc}", "bad_request") from None
    if not isinstance(data, dict):
        raise Rejected(400, "body must be a JSON object", "bad_request")
    return data, text


def read_github(headers: Mapping[str, str], body: bytes) -> Received:
    """The Event of a verified GitHub delivery."""
    name = headers.get("X-GitHub-Event")
    if not name:
        raise Rejected(400, "missing X-GitHub-Event header", "bad_request")
    delivery_id = headers.get("X-GitHub-Delivery")
    if not delivery_id:
        raise Rejected(400, "missing X-GitHub-Delivery header", "bad_request")
    if len(delivery_id) > 255:
        raise Rejected(400, "X-GitHub-Delivery is longer than 255 characters", "bad_request")
    data, text = _json_body(headers, body)
    try:
        return Received(from_github(name, delivery_id, data), text)
    except PayloadError as exc:
        raise Rejected(400, str(exc), "bad_request") from None


def gitlab_delivery_id(headers: Mapping[str, str], body: bytes) -> str:
    """GitLab's id for a delivery, stable across its retries; the body's hash as a last resort."""
    for header in ("Idempotency-Key", "X-Gitlab-Webhook-UUID", "X-Gitlab-Event-UUID"):
        value = headers.get(header)
        if value:
            return value[:255]
    return "sha256:" + hashlib.sha256(body).hexdigest()


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
        bot = self.settings.bot_name.lower()
        self._gitlab_bots = frozenset({bot, bot.removesuffix("[bot]")})

    @property
    def settings(self) -> Settings:
        return self._settings()

    def _status(self, platform: str) -> PlatformStatus:
        settings = self.settings
        if self._status_for is None or self._status_for[0] is not settings:
            self._status_for = (settings, platform_status(settings))  # once per Settings object
        return self._status_for[1][platform]

    async def github(self, request: web.Request) -> web.Response:
        secret = self.settings.github_webhook_secret
        try:
            self._require_enabled("github")
            assert secret is not None  # _require_enabled checked it
            body = await self._read(request)
            verify_github(request.headers, body, secret.get_secret_value())
            received = read_github(request.headers, body)
        except Rejected as exc:
            return self._reject("github", request, exc)
        event = received.event
        if event.name == "ping":
            self._count("github", "ping", "ping")
            self.log.info("ping", delivery_id=event.delivery_id, zen=event.payload.get("zen"))
            return web.json_response({"pong": True}, status=200)
        return await self._accept(received)

    async def gitlab(self, request: web.Request) -> web.Response:
        secret = self.settings.gitlab_webhook_token
        try:
            self._require_enabled("gitlab")
            assert secret is not None
            verify_gitlab(request.headers, secret.get_secret_value())
            body = await self._read(request)
            received = read_gitlab(request.headers, body, bot_names=self._gitlab_bots)
        except Rejected as exc:
            return self._reject("gitlab", request, exc)
        return await self._accept(received)

    def _require_enabled(self, platform: str) -> None:
        status = self._status(platform)
        if not status.enabled:
            raise Rejected(
                403,
                f"{platform} is not configured on this server: set {' and '.join(status.missing)}",
                "unconfigured",
            )

    async def _read(self, request: web.Request) -> bytes:
        limit = self.settings.max_webhook_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Rejected(413, f"body is larger than {limit} bytes", "too_large")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Rejected(413, f"body is larger than {limit} bytes", "too_large") from None

    async def _accept(self, received: Received) -> web.Response:
        event = received.event
        log = self.log.bind(
            delivery_id=event.delivery_id,
            platform=event.platform,
            _event=event.label,
            repo=event.repo,
            number=event.number,
        )
        if not self.router.wants(event):
            self._count(event.platform, event.name, "ignored")
            log.debug("no handler wants this event")
            return web.json_response({"ignored": True, "event": event.label}, status=202)
        job = NewJob(
            kind=EVENT_JOB,
            payload=received.job_payload(),
            max_attempts=self.settings.worker_retry_attempts + 1,
            delivery_id=event.delivery_id,
        )
        started = time.perf_counter()
        try:
            result = await self.store.accept_delivery(
                Delivery(event.platform, event.delivery_id, event.label), job
            )
        except StoreUnavailable as exc:
            self._count(event.platform, event.name, "store_unavailable")
            log.error("store unavailable; delivery refused so the platform retries", error=str(exc))
            return web.json_response(
                {"error": "the store is unavailable; deliver again later"},
                status=503,
                headers={"Retry-After": "30"},
            )
        if result.duplicate:
            self._count(event.platform, event.name, "duplicate")
            log.info("duplicate delivery ignored")
            return web.json_response(
                {"duplicate": True, "delivery_id": event.delivery_id}, status=200
            )
        self._count(event.platform, event.name, "accepted")
        log.info(
            "delivery queued",
            job_id=result.job_id,
            store_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        if self.on_enqueued is not None:
            self.on_enqueued()
        return web.json_response(
            {"job_id": result.job_id, "delivery_id": event.delivery_id}, status=202
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
        return web.json_response({"error": exc.message}, status=exc.status)

    def _count(self, platform: str, event: str, outcome: str) -> None:
        self.metrics.webhooks.labels(platform=platform, event=event, outcome=outcome).inc()
