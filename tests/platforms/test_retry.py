"""platforms/retry.py: the request policy both transports share, and one request's tries."""

from __future__ import annotations

from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from bot.logs import get_logger
from config.settings import load_settings
from platforms.base import PlatformError, RateLimited
from platforms.retry import BlockingSleep, RequestPolicy, Tries


def _no_sleep(seconds: float) -> None:
    return None


def policy(backoff_cap: float = 30.0) -> RequestPolicy[BlockingSleep]:
    settings = load_settings(
        integration_timeout=5, integration_max_retries=2, gitlab_rate_limit_max_wait=90
    )
    base = RequestPolicy.from_settings(settings, "gitlab", sleep=_no_sleep, clock=lambda: 0.0)
    return replace(base, backoff_cap=backoff_cap)


def test_each_platform_reads_its_own_rate_limit_bound() -> None:
    settings = load_settings(github_rate_limit_max_wait=10, gitlab_rate_limit_max_wait=20)

    github = RequestPolicy.from_settings(settings, "github", sleep=_no_sleep, clock=lambda: 0.0)
    gitlab = RequestPolicy.from_settings(settings, "gitlab", sleep=_no_sleep, clock=lambda: 0.0)

    assert (github.max_rate_limit_wait, gitlab.max_rate_limit_wait) == (10, 20)
    assert (github.service, gitlab.service) == ("GitHub", "GitLab")


def test_dropped_connections_are_retried_then_reported() -> None:
    tries = Tries(policy(), "GET", "/projects/1", get_logger())

    assert [tries.failed(), tries.failed(), tries.failed()] == [0.5, 1.0, None]
    error = tries.unreachable(timed_out=False, detail="ConnectionError")
    assert str(error) == (
        "could not reach GitLab for GET /projects/1 after 3 attempts: ConnectionError"
    )
    timeout = tries.unreachable(timed_out=True, detail="")
    assert "GitLab did not answer GET /projects/1 within 5 s, 3 attempts" in str(timeout)
    assert isinstance(timeout, PlatformError)


def test_a_5xx_is_retried_after_its_retry_after_capped_else_the_backoff() -> None:
    tries = Tries(policy(backoff_cap=4.0), "POST", "/x", get_logger())

    assert tries.answered(200, None) is None
    assert tries.answered(502, "60") == 4.0  # capped
    assert tries.answered(503, None) == 1.0  # the backoff for a second failure
    assert tries.answered(503, None) is None  # the retries are spent: the answer stands


def test_rate_limit_waits_add_up_against_the_bound() -> None:
    tries = Tries(policy(), "GET", "/x", get_logger(), {"delivery_id": "d-1"})

    with capture_logs() as logs:
        tries.rate_limited(60, status=429)
        with pytest.raises(RateLimited) as refused:
            tries.rate_limited(31, status=429, kind="secondary")

    assert str(refused.value) == (
        "GitLab's secondary rate limit would make GET /x wait 31 s more, after 60 s of waiting "
        "already; Arbiter waits at most 90 s (ARBITER_GITLAB_RATE_LIMIT_MAX_WAIT)"
    )
    assert refused.value.retry_after == 31 and refused.value.status == 429
    assert [(e["event"], e["seconds"], e["delivery_id"]) for e in logs] == [
        ("gitlab rate limited, waiting", 60, "d-1")
    ]
