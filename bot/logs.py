"""Structured logging: structlog events with fields, JSON in production, readable in a terminal.

`configure_logging(settings)` runs once at start. The `Redactor` processor sits before the
renderer, so no token, secret or password reaches a log line, whatever a caller passes in.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog

from config.settings import Settings

REDACTED = "***"

# Field names whose values are secret whatever they hold.
_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|private_key|api_key|authorization|cookie|signature)",
    re.IGNORECASE,
)
# Shapes of credentials that may appear inside free text (URLs, exception messages).
_SECRET_SHAPES = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|sk-[A-Za-z0-9_\-]{20,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@))"
)


class Redactor:
    """A structlog processor that masks secrets in every value of every event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key != "event" and _SECRET_KEY.search(key) and event_dict[key] is not None:
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self._clean(event_dict[key])
        return event_dict

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {
                k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else self._clean(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set):
            return [self._clean(v) for v in value]
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _SECRET_SHAPES.sub(REDACTED, text)


def configure_logging(settings: Settings, *, stream: Any = None) -> Redactor:
    """Set up structlog (and route the stdlib loggers of libraries through the same output)."""
    out = stream if stream is not None else sys.stderr
    fmt = settings.log_format or ("console" if out.isatty() else "json")
    redactor = Redactor(settings.secret_values())
    level = getattr(logging, settings.log_level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # The message goes out as "msg", so "event" can carry the webhook event (bound as `_event`).
    renamer = structlog.processors.EventRenamer("msg", replace_by="_event")
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        exc_processor: Any = structlog.processors.dict_tracebacks
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(),
            event_key="msg",
            # Plain tracebacks: rich's would print local variables, which may hold secrets.
            exception_formatter=structlog.dev.plain_traceback,
        )
        exc_processor = structlog.processors.format_exc_info
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            exc_processor,
            redactor,
            renamer,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library; give them the same shape and redaction.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exc_processor,
                redactor,
                renamer,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every step at INFO, the LLM SDKs' HTTP client logs every request:
    # Arbiter's own events say what matters, once.
    for chatty in ("alembic", "httpx", "httpx2"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    return redactor


Logger = structlog.typing.FilteringBoundLogger


def get_logger(**fields: Any) -> Logger:
    """A logger with `fields` bound. `event=` is the webhook event (the message is "msg")."""
    if "event" in fields:
        fields["_event"] = fields.pop("event")
    logger: Logger = structlog.get_logger("arbiter").bind(**fields)
    return logger
