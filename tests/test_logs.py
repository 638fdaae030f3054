"""Logging: JSON events with bound fields, and no secret in any line."""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings
from collections.abc import Iterator

import pytest
import structlog

from bot.logs import configure_logging, get_logger, mask_secrets_of
from bot.redaction import Redactor
from config.settings import load_settings

KEY = "proxy-key-7f3a9c2e51b84d06"


# A module's logger, made at import time as bot/api/server.py makes its own: long before
# logging is configured.
MODULE_LOG = get_logger(component="api")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    hook = sys.excepthook
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()
    logging.captureWarnings(False)
    sys.excepthook = hook


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def test_json_lines_carry_bound_fields(captured: io.StringIO) -> None:
    configure_logging(load_settings(log_format="json"), stream=captured)
    log = get_logger(delivery_id="d-1", platform="github", repo="o/r", number=7, job_id=3)
    log.info("delivery queued", _event="pull_request.opened")
    (line,) = _lines(captured)
    assert line["msg"] == "delivery queued"
    assert line["event"] == "pull_request.opened"
    assert line["delivery_id"] == "d-1"
    assert line["repo"] == "o/r" and line["number"] == 7 and line["job_id"] == 3
    assert line["level"] == "info" and "timestamp" in line


def test_context_binds_the_event_fields(captured: io.StringIO) -> None:
    configure_logging(load_settings(log_format="json"), stream=captured)
    log = get_logger(event="comment.created", delivery_id="d-2")
    log.info("answered")
    (line,) = _lines(captured)
    assert (line["msg"], line["event"], line["delivery_id"]) == (
        "answered",
        "comment.created",
        "d-2",
    )


def test_level_filters(captured: io.StringIO) -> None:
    configure_logging(load_settings(log_format="json", log_level="WARNING"), stream=captured)
    get_logger().info("hidden")
    get_logger().warning("shown")
    assert [line["msg"] for line in _lines(captured)] == ["shown"]


def test_no_secret_reaches_a_log_line(captured: io.StringIO) -> None:
    settings = load_settings(
        log_format="json",
        github_token="ghp_" + "a" * 36,
        github_webhook_secret="hook-secret-1234",
        gitlab_token="glpat-bbbbbbbbbbbbbbbbbbbbbb",
        database_url="postgresql+asyncpg://arbiter:db-pass-999@db/arbiter",
    )
    configure_logging(settings, stream=captured)
    log = get_logger()
    log.info("calling", url="https://x-access-token:ghs_" + "c" * 36 + "@github.com/o/r.git")
    log.info("oops the secret is hook-secret-1234 and the db password db-pass-999")
    log.info("headers", headers={"Authorization": "Bearer ghp_" + "a" * 36, "Accept": "json"})
    log.info("config", webhook_secret="hook-secret-1234", api_key="anything")
    try:
        raise RuntimeError("token glpat-bbbbbbbbbbbbbbbbbbbbbb was rejected")
    except RuntimeError as exc:
        log.error("failed", exc_info=exc)
    logging.getLogger("some.library").warning("connecting with hook-secret-1234")
    text = captured.getvalue()
    for secret in ("a" * 36, "hook-secret-1234", "bbbbbbbbbbbbbbbbbbbbbb", "db-pass-999", "c" * 36):
        assert secret not in text
    lines = _lines(captured)
    assert len(lines) == 6
    assert lines[2]["headers"] == {"Authorization": "***", "Accept": "json"}
    assert lines[3]["webhook_secret"] == "***" and lines[3]["api_key"] == "***"


def test_redactor_recognizes_credential_shapes_it_was_not_told() -> None:
    redactor = Redactor()
    text = redactor.scrub(
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789 sk-proj-abcdefghijklmnopqrstuv "
        "postgresql://user:pw@host/db "
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
    )
    assert "abcdefghijklmnopqrstuvwxyz0123456789" not in text
    assert "sk-proj" not in text
    assert "user:pw@" not in text
    assert "MIIE" not in text


def test_a_logger_made_before_logging_is_configured_follows_the_configuration(
    captured: io.StringIO,
) -> None:
    settings = load_settings(log_format="json", log_level="WARNING", openai_api_key=KEY)
    configure_logging(settings, stream=captured)
    MODULE_LOG.info("hidden: below the level")
    MODULE_LOG.warning("store unavailable", error=f"401 Incorrect API key provided: {KEY}")
    (line,) = _lines(captured)  # JSON, the level respected
    assert line["msg"] == "store unavailable" and line["component"] == "api"
    assert line["error"] == "401 Incorrect API key provided: ***"


def test_library_lines_share_the_format_level_and_redaction(captured: io.StringIO) -> None:
    configure_logging(
        load_settings(log_format="json", log_level="WARNING", openai_api_key=KEY), stream=captured
    )
    logging.getLogger("aiohttp.access").info("GET /health 200")  # below the level
    logging.getLogger("aiohttp.server").warning("odd request from %s: %s", "127.0.0.1", KEY)
    logging.getLogger("alembic.runtime.migration").warning("careful", extra={"api_key": KEY})
    warnings.warn(f"deprecated, and {KEY}", DeprecationWarning, stacklevel=1)
    lines = _lines(captured)
    assert [line.get("logger") for line in lines] == [
        "aiohttp.server",
        "alembic.runtime.migration",
        "py.warnings",
    ]
    assert lines[0]["msg"] == "odd request from 127.0.0.1: ***"
    assert lines[1]["api_key"] == "***"
    assert KEY not in captured.getvalue()


def _fail_with_a_secret_in_a_local(padding: str) -> None:
    # A local that holds the key past 80 characters: a traceback that shows locals would cut
    # it there and show the first part, which no longer matches the secret.
    payload = padding + KEY  # noqa: F841 - the local is the point
    raise RuntimeError("the request failed")


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_tracebacks_are_plain_redacted_and_show_no_local_variables(
    captured: io.StringIO, log_format: str
) -> None:
    configure_logging(load_settings(log_format=log_format, openai_api_key=KEY), stream=captured)
    try:
        _fail_with_a_secret_in_a_local("x" * 70)
    except RuntimeError:
        MODULE_LOG.exception("api operation failed", path="/api/jobs")
        logging.getLogger("aiohttp.server").exception("Error handling request from 127.0.0.1")
    text = captured.getvalue()
    assert KEY[:10] not in text and "x" * 70 not in text  # no local variable, whole or cut
    assert "locals" not in text and "╭" not in text  # neither rich's boxes nor its locals
    assert text.count("RuntimeError: the request failed") == 2
    assert text.count("raise RuntimeError(") == 2  # the line that raised, in each
    if log_format == "json":
        first, second = _lines(captured)
        assert first["msg"] == "api operation failed" and second["logger"] == "aiohttp.server"
        assert isinstance(first["exception"], str) and first["exception"].startswith("Traceback")


def test_token_counts_are_not_taken_for_tokens(captured: io.StringIO) -> None:
    configure_logging(load_settings(log_format="json"), stream=captured)
    get_logger().info("llm call", input_tokens=1200, output_tokens=300, max_tokens=2000)
    (line,) = _lines(captured)
    assert (line["input_tokens"], line["output_tokens"], line["max_tokens"]) == (1200, 300, 2000)


def test_values_that_are_not_text_are_redacted_as_they_would_print(
    captured: io.StringIO,
) -> None:
    class Endpoint:
        def __repr__(self) -> str:
            return f"Endpoint(https://user:{KEY}@proxy.example/v1)"

    configure_logging(load_settings(log_format="json", openai_api_key=KEY), stream=captured)
    get_logger().warning("calling", endpoint=Endpoint())
    assert KEY not in captured.getvalue()
    assert _lines(captured)[0]["endpoint"] == "Endpoint(https://***@proxy.example/v1)"


def test_an_uncaught_exception_is_one_redacted_log_event(captured: io.StringIO) -> None:
    configure_logging(load_settings(log_format="json", openai_api_key=KEY), stream=captured)
    try:
        raise OSError(f"cannot connect with {KEY}")
    except OSError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = _lines(captured)
    assert line["level"] == "critical" and line["msg"] == "uncaught exception"
    assert "OSError: cannot connect with ***" in str(line["exception"])


def test_secrets_set_up_while_running_are_masked_from_then_on(captured: io.StringIO) -> None:
    configure_logging(
        load_settings(log_format="json", github_webhook_secret="old-hook-secret-1"),
        stream=captured,
    )
    # /setup switched this process to a new GitHub App, with its own webhook secret.
    mask_secrets_of(load_settings(github_webhook_secret="new-hook-secret-2"))
    get_logger().warning("secrets: old-hook-secret-1 new-hook-secret-2")
    logging.getLogger("aiohttp.server").warning("new-hook-secret-2")
    assert [line["msg"] for line in _lines(captured)] == ["secrets: *** ***", "***"]


def test_the_connection_pool_s_shutdown_is_not_narrated(captured: io.StringIO) -> None:
    """SQLAlchemy's pool logs its disposal at INFO under its class's module, ours (LingeringPool):
    not a line an operator needs at each shutdown."""
    from bot.store.sql_pool import LingeringPool

    configure_logging(load_settings(log_format="json"), stream=captured)
    LingeringPool(creator=lambda: None).dispose()
    get_logger().info("stopped")
    assert [line["msg"] for line in _lines(captured)] == ["stopped"]
