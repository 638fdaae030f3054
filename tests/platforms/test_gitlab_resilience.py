"""Retries, rate limits, timeouts and what each request carries, against the fake GitLab.

The client's sleeps are recorded, not slept (`Sleeps`), so waits are checked by what was asked
for and what the fake saw, never by a timer.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from platforms.base import USER_AGENT, PlatformError, RateLimited
from platforms.gitlab import GitLabPlatform
from tests.fakes.gitlab import FakeGitLab, MRFile, project_path
from tests.platforms.conftest import GL_DELIVERY, GL_PROJECT, GL_TOKEN, MakeGitLab, Sleeps

H1 = "a1" * 20
MR = f"{project_path(GL_PROJECT)}/merge_requests/1"


@pytest.fixture(autouse=True)
def seeded(gitlab_fake: FakeGitLab) -> None:
    gitlab_fake.add_merge_request(GL_PROJECT, 1, files=[MRFile.added("a.py", "x\n")], head_sha=H1)


def statuses(fake: FakeGitLab, method: str, path: str) -> list[int | None]:
    return [r.status for r in fake.requests_to(method, path)]


# --- Server errors and the network ----------------------------------------------------------------


async def test_a_502_then_a_200_succeeds(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform, sleeps: Sleeps
) -> None:
    gitlab_fake.fail("GET", MR, 502)

    assert (await gitlab_platform.pull_request(1)).head_sha == H1

    assert statuses(gitlab_fake, "GET", MR) == [502, 200]
    assert sleeps.seconds == [0.5]


async def test_server_errors_are_retried_with_growing_backoff_then_reported(
    gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab, sleeps: Sleeps
) -> None:
    gitlab_fake.fail("GET", MR, 503, times=10)
    platform = make_gitlab(integration_max_retries=2).for_repo(GL_PROJECT)

    with pytest.raises(PlatformError, match="merge request !1") as caught:
        await platform.pull_request(1)

    assert caught.value.status == 503
    assert statuses(gitlab_fake, "GET", MR) == [503, 503, 503]
    assert sleeps.seconds == [0.5, 1.0]


async def test_a_retry_after_on_a_server_error_is_honoured(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform, sleeps: Sleeps
) -> None:
    gitlab_fake.fail("GET", MR, 503, headers={"Retry-After": "7"})

    await gitlab_platform.pull_request(1)

    assert sleeps.seconds == [7.0]


async def test_a_dropped_connection_is_retried(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform, sleeps: Sleeps
) -> None:
    pr = await gitlab_platform.pull_request(1)
    status_path = f"{project_path(GL_PROJECT)}/statuses/{H1}"
    gitlab_fake.disconnect("POST", status_path)

    await gitlab_platform.set_status(pr, "success", "No findings")

    assert statuses(gitlab_fake, "POST", status_path) == [None, 201]
    assert len(gitlab_fake.status_changes(GL_PROJECT)) == 1
    assert sleeps.seconds == [0.5]


async def test_a_request_that_times_out_is_reported_naming_the_settings(
    gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab
) -> None:
    gitlab_fake.delay("GET", MR, 5)
    platform = make_gitlab(integration_timeout=0.2, integration_max_retries=0).for_repo(GL_PROJECT)

    with pytest.raises(PlatformError, match="ARBITER_INTEGRATION_TIMEOUT") as caught:
        await platform.pull_request(1)

    assert "did not answer GET" in str(caught.value)


async def test_an_unreachable_gitlab_is_reported_after_the_retries(
    make_gitlab: MakeGitLab, sleeps: Sleeps
) -> None:
    from tests.conftest import free_port

    platform = make_gitlab(
        gitlab_base_url=f"http://127.0.0.1:{free_port()}", integration_max_retries=1
    ).for_repo(GL_PROJECT)

    with pytest.raises(PlatformError, match=r"could not reach GitLab .* after 2 attempts"):
        await platform.pull_request(1)
    assert sleeps.seconds == [0.5]


# --- Rate limits --------------------------------------------------------------------------------


async def test_a_429_is_waited_out_then_the_call_succeeds(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform, sleeps: Sleeps
) -> None:
    gitlab_fake.rate_limit(retry_after=12, path=MR)

    assert (await gitlab_platform.pull_request(1)).number == 1

    assert statuses(gitlab_fake, "GET", MR) == [429, 200]
    assert sleeps.seconds == [12.0]


async def test_a_429_without_retry_after_waits_until_the_reset(
    gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab, sleeps: Sleeps
) -> None:
    gitlab_fake.rate_limit(retry_after=None, path=MR)  # RateLimit-Reset: a minute ahead

    await make_gitlab(gitlab_rate_limit_max_wait=120).for_repo(GL_PROJECT).pull_request(1)

    assert len(sleeps.seconds) == 1 and 55 <= sleeps.seconds[0] <= 61


async def test_a_rate_limit_longer_than_the_bound_is_raised_with_its_wait(
    gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab, sleeps: Sleeps
) -> None:
    gitlab_fake.rate_limit(retry_after=300, path=MR)
    platform = make_gitlab(gitlab_rate_limit_max_wait=60).for_repo(GL_PROJECT)

    with pytest.raises(RateLimited) as caught:
        await platform.pull_request(1)

    assert caught.value.retry_after == 300 and caught.value.status == 429
    assert "ARBITER_GITLAB_RATE_LIMIT_MAX_WAIT" in str(caught.value)
    assert "wait 300 s" in str(caught.value)
    assert sleeps.seconds == []


async def test_rate_limit_waits_add_up_against_the_bound(
    gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab, sleeps: Sleeps
) -> None:
    gitlab_fake.rate_limit(retry_after=40, path=MR, times=2)
    platform = make_gitlab(gitlab_rate_limit_max_wait=60).for_repo(GL_PROJECT)

    with pytest.raises(RateLimited, match="after 40 s of waiting already"):
        await platform.pull_request(1)
    assert sleeps.seconds == [40.0]


# --- What every request carries, and what never leaks -------------------------------------------


async def test_every_request_carries_the_token_user_agent_and_delivery_id(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await gitlab_platform.pull_request(1)
    await gitlab_platform.changes(pr)
    await gitlab_platform.set_status(pr, "pending", "Arbiter is reviewing")

    sent = gitlab_fake.requests
    assert len(sent) == 4
    for request in sent:
        assert request.headers["private-token"] == GL_TOKEN
        assert request.headers["user-agent"] == USER_AGENT
        assert request.headers["x-arbiter-delivery"] == GL_DELIVERY
        assert request.actor == "arbiter-bot"


async def test_a_wrong_token_is_a_401_that_names_no_token(
    gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab
) -> None:
    from pydantic import SecretStr

    wrong = "glpat-" + "w" * 20
    platform = make_gitlab(gitlab_token=SecretStr(wrong)).for_repo(GL_PROJECT)

    with capture_logs() as logs, pytest.raises(PlatformError) as caught:
        await platform.pull_request(1)

    assert caught.value.status == 401
    assert "401 Unauthorized" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in repr(logs)
    assert gitlab_fake.requests[-1].actor == "refused"


async def test_retries_are_logged_without_the_token(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    gitlab_fake.fail("GET", MR, 502)
    gitlab_fake.rate_limit(retry_after=3, path=MR)

    with capture_logs() as logs:
        await gitlab_platform.pull_request(1)

    events = [(e["event"], e.get("reason")) for e in logs if e["log_level"] == "warning"]
    assert events == [("gitlab request retried", "502"), ("gitlab rate limited, waiting", None)]
    assert all(e["delivery_id"] == GL_DELIVERY and e["path"] == MR for e in logs)
    assert GL_TOKEN not in repr(logs)
    assert GL_TOKEN not in repr(gitlab_platform) and GL_TOKEN not in repr(gitlab_platform._gitlab)
