"""Timeouts, retries, rate limits, conditional GETs, and what reaches the logs.

The fake and the client share a ManualClock: a client's sleep moves the fake's time, so waits
are checked by what was slept and what the fake saw, never by a timer.
"""

from __future__ import annotations

import math

import pytest
from structlog.testing import capture_logs

from platforms.base import PlatformError, RateLimited
from platforms.github import GitHubPlatform
from tests.fakes.github import AppKey, FakeGitHub, ManualClock
from tests.platforms.conftest import PAT, REPO, MakeGitHub

PULL = f"/repos/{REPO}/pulls/1"


@pytest.fixture(autouse=True)
def seeded(fake: FakeGitHub) -> None:
    fake.add_pull(REPO, 1, head_sha="h" * 40)


def statuses(fake: FakeGitHub, method: str, path: str) -> list[int | None]:
    return [r.status for r in fake.requests_to(method, path)]


# --- Server errors and the network ----------------------------------------------------------------


async def test_a_502_then_a_200_succeeds(
    fake: FakeGitHub, platform: GitHubPlatform, manual_clock: ManualClock
) -> None:
    fake.fail("GET", PULL, 502)

    assert (await platform.pull_request(1)).number == 1

    assert statuses(fake, "GET", PULL) == [502, 200]
    assert manual_clock.sleeps == [0.5]


async def test_server_errors_are_retried_with_growing_backoff_then_reported(
    fake: FakeGitHub, make_github: MakeGitHub, mode: str, manual_clock: ManualClock
) -> None:
    fake.fail("GET", PULL, 503, times=10)
    platform = make_github(mode, integration_max_retries=2).for_repo(REPO, 7)

    with pytest.raises(PlatformError, match="pull request #1") as caught:
        await platform.pull_request(1)

    assert caught.value.status == 503
    assert statuses(fake, "GET", PULL) == [503, 503, 503]
    assert manual_clock.sleeps == [0.5, 1.0]


async def test_a_retry_after_on_a_server_error_is_honoured(
    fake: FakeGitHub, platform: GitHubPlatform, manual_clock: ManualClock
) -> None:
    fake.fail("GET", PULL, 503, headers={"Retry-After": "7"})

    await platform.pull_request(1)

    assert manual_clock.sleeps == [7.0]


async def test_a_dropped_connection_is_retried(
    fake: FakeGitHub, platform: GitHubPlatform, manual_clock: ManualClock
) -> None:
    pr = await platform.pull_request(1)
    statuses_path = f"/repos/{REPO}/statuses/{'h' * 40}"
    fake.disconnect("POST", statuses_path)

    await platform.set_status(pr, "success", "No findings")

    assert statuses(fake, "POST", statuses_path) == [None, 201]
    assert len(fake.statuses(REPO)) == 1
    assert manual_clock.sleeps == [0.5]


async def test_a_request_that_times_out_is_retried_then_reported(
    fake: FakeGitHub, make_github: MakeGitHub, mode: str
) -> None:
    platform = make_github(mode, integration_timeout=0.1, integration_max_retries=1).for_repo(
        REPO, 7
    )
    await platform.pull_request(1)  # credentials first: only the call below is slow
    fake.delay("GET", PULL, 5)

    assert (await platform.pull_request(1)).number == 1

    fake.delay("GET", PULL, 5, times=2)
    with pytest.raises(PlatformError, match=r"within 0\.1 s, 2 attempts") as caught:
        await platform.pull_request(1)
    assert "ARBITER_INTEGRATION_TIMEOUT" in str(caught.value)


# --- Rate limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 429])
async def test_a_secondary_rate_limit_with_retry_after_is_waited_out(
    fake: FakeGitHub, platform: GitHubPlatform, manual_clock: ManualClock, status: int
) -> None:
    fake.secondary_rate_limit(retry_after=1, status=status, path=PULL)

    assert (await platform.pull_request(1)).number == 1

    assert manual_clock.sleeps == [1.0]
    assert statuses(fake, "GET", PULL) == [status, 200]


async def test_a_secondary_rate_limit_without_retry_after_waits_a_minute(
    fake: FakeGitHub, platform: GitHubPlatform, manual_clock: ManualClock
) -> None:
    fake.secondary_rate_limit(retry_after=None, path=PULL)

    await platform.pull_request(1)

    assert manual_clock.sleeps == [60.0]


async def test_a_spent_primary_rate_limit_is_waited_out_until_its_reset(
    fake: FakeGitHub, platform: GitHubPlatform, manual_clock: ManualClock
) -> None:
    fake.primary_rate_limit(reset_in=30)

    assert (await platform.pull_request(1)).number == 1

    [waited] = manual_clock.sleeps
    assert 30 <= waited <= 31  # x-ratelimit-reset is a whole second
    refused = [r for r in fake.requests if r.status == 403]
    assert len(refused) == 1


async def test_a_rate_limit_longer_than_the_bound_fails_and_says_so(
    fake: FakeGitHub, platform: GitHubPlatform, manual_clock: ManualClock
) -> None:
    fake.primary_rate_limit(reset_in=3600)

    with pytest.raises(RateLimited) as caught:
        await platform.pull_request(1)

    message = str(caught.value)
    assert "primary rate limit" in message
    assert "at most 60 s" in message and "ARBITER_GITHUB_RATE_LIMIT_MAX_WAIT" in message
    assert 3600 <= caught.value.retry_after <= 3601
    assert f"wait {math.ceil(caught.value.retry_after)} s more" in message
    assert manual_clock.sleeps == []


async def test_rate_limit_waits_add_up_against_the_bound(
    fake: FakeGitHub, make_github: MakeGitHub, mode: str, manual_clock: ManualClock
) -> None:
    platform = make_github(mode, github_rate_limit_max_wait=60).for_repo(REPO, 7)
    await platform.pull_request(1)
    fake.secondary_rate_limit(retry_after=40, path=PULL, times=2)

    with pytest.raises(RateLimited, match="after 40 s of waiting already") as caught:
        await platform.pull_request(1)

    assert caught.value.status == 403
    assert manual_clock.sleeps == [40.0]


async def test_a_403_that_is_no_rate_limit_is_not_waited_on(
    fake: FakeGitHub, platform: GitHubPlatform, manual_clock: ManualClock
) -> None:
    fake.fail("GET", PULL, 403, body={"message": "Resource not accessible by integration"})

    with pytest.raises(PlatformError, match="Resource not accessible") as caught:
        await platform.pull_request(1)

    assert caught.value.status == 403
    assert manual_clock.sleeps == []


# --- Conditional GETs ---------------------------------------------------------------------------


async def test_a_repeated_read_is_a_conditional_get(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    first = await platform.pull_request(1)
    again = await platform.pull_request(1)
    fake.update_pull(REPO, 1, title="Renamed")
    changed = await platform.pull_request(1)

    assert first == again and changed.title == "Renamed"
    reads = fake.requests_to("GET", PULL)
    assert [r.status for r in reads] == [200, 304, 200]
    assert "if-none-match" not in reads[0].headers
    assert reads[1].headers["if-none-match"] == reads[2].headers["if-none-match"]


async def test_etags_are_not_shared_between_credentials(
    fake: FakeGitHub, make_github: MakeGitHub
) -> None:
    github = make_github("app")
    fake.add_repo("other/repo", installation_id=8)
    fake.add_pull("other/repo", 1)

    await github.for_repo(REPO, 7).pull_request(1)
    await github.for_repo("other/repo", 8).pull_request(1)
    await github.for_repo(REPO, 7).pull_request(1)

    assert statuses(fake, "GET", PULL) == [200, 304]
    assert statuses(fake, "GET", "/repos/other/repo/pulls/1") == [200]


# --- Secrets stay out of logs and errors --------------------------------------------------------


async def test_no_token_or_key_reaches_a_log_line_or_an_error(
    fake: FakeGitHub, make_github: MakeGitHub, mode: str, app_key: AppKey
) -> None:
    platform = make_github(mode).for_repo(REPO, 7, delivery_id="d-1")
    fake.fail("GET", PULL, 502)
    fake.secondary_rate_limit(retry_after=1, path=PULL)

    with capture_logs() as logs:
        await platform.pull_request(1)
        fake.primary_rate_limit(reset_in=3600)
        with pytest.raises(RateLimited) as caught:
            await platform.pull_request(1)

    assert any(entry["event"] == "github request retried" for entry in logs)
    assert any(entry["event"] == "github rate limited, waiting" for entry in logs)
    secrets = [PAT, app_key.private_pem.splitlines()[1], *(m.token for m in fake.minted)]
    text = repr(logs) + str(caught.value)
    assert not [secret for secret in secrets if secret in text]
