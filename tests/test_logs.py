"""Logging: JSON events with bound fields, and no secret in any line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from bot.logs import Redactor, configure_logging, get_logger
from config.settings import load_settings


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


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
