"""Structured logging: every line, Arbiter's and its libraries', through one pipeline.

`configure_logging(settings)` runs once at start. structlog's events and the standard
library's records (aiohttp, asyncio, alembic, warnings…) go through the same steps to the same
stream: the level, a timestamp, a plain traceback (never local variables), redaction
(bot/redaction.py), then JSON in production or readable lines in a terminal. A logger made
before this ran, a module's at import time, is lazy and follows the configuration all the
same.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any

if "rich" in sys.modules:
    import structlog
else:
    # structlog imports rich (and rich, pygments: 4 MiB resident) for tracebacks Arbiter never
    # prints (they show local variables, which may hold secrets: see plain_traceback below).
    # Hidden while structlog is imported, it falls back to plain text; `arbiter review` still
    # imports rich for its progress bar.
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        del sys.modules["rich"]

from bot.redaction import REDACTED, Redactor, secret_field
from config.settings import Settings

# Redactor is re-exported: the log redactor of earlier releases lived here.
__all__ = [
    "REDACTED",
    "Logger",
    "RedactSecrets",
    "Redactor",
    "configure_logging",
    "get_logger",
    "mask_secrets_of",
]


_OURS = frozenset({"timestamp", "level"})  # written by the pipeline itself


class RedactSecrets:
    """A structlog processor: fields named like secrets are masked whole, every other value
    is scrubbed by the Redactor (values that are not text as they would print)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key in _OURS:
                continue
            if key != "event" and secret_field(key) and event_dict[key] is not None:
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self._clean(event_dict[key])
        return event_dict

    def _clean(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.redactor.scrub(value)
        if isinstance(value, Mapping):
            return {
                k: (REDACTED if isinstance(k, str) and secret_field(k) else self._clean(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v) for v in value]
        if isinstance(value, BaseException):
            return self.redactor.scrub(f"{type(value).__name__}: {value}")
        return self.redactor.scrub(str(value))  # its text could hold a secret too


_configured: list[RedactSecrets] = []  # the pipeline's redaction step, once configured


def mask_secrets_of(settings: Settings) -> None:
    """Mask the secrets of `settings` in log lines from now on, as well as those already known
    (/setup switches this process to a new GitHub App, with new secrets, while it runs)."""
    for step in _configured:
        step.redactor = step.redactor.adding(settings.secret_values())


def configure_logging(settings: Settings, *, stream: Any = None) -> Redactor:
    """Send every log line, structlog's and the standard library's, through the same steps to
    `stream` (stderr), at `settings.log_level`, redacted, in `settings.log_format`."""
    out = stream if stream is not None else sys.stderr
    fmt = settings.log_format or ("console" if out.isatty() else "json")
    redactor = Redactor.from_settings(settings)
    level = getattr(logging, settings.log_level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(),
            event_key="msg",
            # Plain tracebacks: rich's would print local variables, which may hold secrets.
            exception_formatter=structlog.dev.plain_traceback,
        )
    # Arbiter's events and the libraries' records go through the same steps, to one stream.
    redact = RedactSecrets(redactor)
    _configured[:] = [redact]
    steps: list[Any] = [
        # The traceback as plain text in "exception", before redaction sees it.
        structlog.processors.format_exc_info,
        redact,
        # The message goes out as "msg", so "event" can carry the webhook event.
        structlog.processors.EventRenamer("msg", replace_by="_event"),
        renderer,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *steps],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # A library's record gets what an Arbiter event gets before those steps.
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *steps],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every step at INFO, the LLM SDKs' HTTP client logs every request, and
    # SQLAlchemy's pool its disposal at each shutdown (under the name of the pool's class, ours
    # in bot.store.sql_pool, out of reach of the WARNING SQLAlchemy sets for its own loggers):
    # Arbiter's own events say what matters, once.
    for chatty in ("alembic", "httpx", "httpx2", "bot.store.sql_pool"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)  # Python's warnings are lines of this log too
    sys.excepthook = _log_uncaught
    return redactor


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    """A crash is one event of the log, redacted like the others, not a bare traceback."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    get_logger().critical("uncaught exception", exc_info=(kind, error, traceback))


Logger = structlog.typing.FilteringBoundLogger


def get_logger(**fields: Any) -> Logger:
    """A logger with `fields` bound. `event=` is the webhook event (the message is "msg").

    One made before logging is configured (a module's, at import time) is lazy: each of its
    lines is made with the configuration in force when it is written.
    """
    if "event" in fields:
        fields["_event"] = fields.pop("event")
    lazy = structlog.get_logger("arbiter", **fields)
    # Once logging is configured, a logger made now is built now: cheaper for every line.
    logger: Logger = lazy.bind() if structlog.is_configured() else lazy
    return logger
