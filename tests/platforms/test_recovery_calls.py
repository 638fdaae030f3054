"""The calls recovery makes, over HTTP against the fakes: GitHub's webhook deliveries (the
App's with its JWT, a repository's with the token), redelivery, open pull requests; GitLab's
webhook events, their resend, open merge requests."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from platforms.base import PlatformError, PlatformNotConfigured
from platforms.gitlab import GitLab
from tests.fakes.github import FakeGitHub, ManualClock, PullFile
from tests.fakes.gitlab import FakeGitLab, MRFile, project_path
from tests.platforms.conftest import (
    GL_PROJECT,
    INSTALLATION,
    REPO,
    MakeGitHub,
    MakeGitLab,
    Sleeps,
)

SECRET = "hook-secret"
GL_HOOK = 31


@dataclass
class Receiver:
    """A webhook receiver: what it was sent, and the status it answers."""

    url: str = ""
    status: int = 202
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()

    async def take(request: web.Request) -> web.Response:
        found.received.append((dict(request.headers), await request.read()))
        return web.json_response({}, status=found.status)

    app = web.Application()
    app.router.add_post("/webhooks/{platform}", take)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    found.url = str(server.make_url("/webhooks/x"))
    yield found
    await server.close()


def _payload(number: int, action: str = "opened") -> dict[str, Any]:
    return {
        "action": action,
        "number": number,
        "repository": {"id": 55, "full_name": REPO},
        "installation": {"id": INSTALLATION},
    }


# --- GitHub: the App's webhook deliveries -------------------------------------------------------


async def test_app_deliveries_are_listed_newest_first_through_every_cursor_page(
    fake: FakeGitHub, make_github: MakeGitHub, manual_clock: ManualClock
) -> None:
    start = float(int(manual_clock.now))  # GitHub gives times to the second
    for i in range(250):
        fake.record_delivery("pull_request", _payload(i), status_code=200, at=start + i)

    listing = await make_github("app").hook_deliveries(limit=1000)

    assert listing.complete
    assert [d.delivered_at for d in listing.items] == [start + i for i in reversed(range(250))]
    pages = fake.requests_to("GET", "/app/hook/deliveries")
    assert [r.query.get("cursor") for r in pages] == [
        None,
        f"v1_{listing.items[99].id}",
        f"v1_{listing.items[199].id}",
    ]
    assert {r.actor for r in pages} == {"app"}  # the App's JWT, not an installation token
    first = listing.items[0]
    assert (first.event, first.action, first.ok, first.status, first.status_code) == (
        "pull_request",
        "opened",
        True,
        "OK",
        200,
    )


async def test_listing_stops_at_the_watermark_or_the_limit(
    fake: FakeGitHub, make_github: MakeGitHub, manual_clock: ManualClock
) -> None:
    start = float(int(manual_clock.now))  # GitHub gives times to the second
    for i in range(150):
        fake.record_delivery("pull_request", _payload(i), status_code=502, at=start + i)
    github = make_github("app")

    recent = await github.hook_deliveries(newer_than=start + 140, limit=1000)
    assert recent.complete and len(recent.items) == 10
    assert len(fake.requests_to("GET", "/app/hook/deliveries")) == 1  # no page beyond it

    cut = await github.hook_deliveries(limit=120)
    assert not cut.complete and len(cut.items) == 120
    failed = cut.items[0]
    assert (failed.ok, failed.status, failed.status_code) == (
        False,
        "Invalid HTTP Response: 502",
        502,
    )


async def test_an_unchanged_first_page_is_answered_304(
    fake: FakeGitHub, make_github: MakeGitHub
) -> None:
    fake.record_delivery("pull_request", _payload(1), status_code=502)
    github = make_github("app")
    first = await github.hook_deliveries()
    again = await github.hook_deliveries()
    assert again == first
    assert [r.status for r in fake.requests_to("GET", "/app/hook/deliveries")] == [200, 304]


async def test_a_redelivery_is_sent_signed_with_the_same_delivery_id(
    fake: FakeGitHub, make_github: MakeGitHub, receiver: Receiver
) -> None:
    fake.set_app_webhook(receiver.url, SECRET)
    failed = fake.record_delivery("pull_request", _payload(3), status_code=0)
    assert failed["status"] == "failed to connect to host"

    await make_github("app").redeliver(failed["id"])
    await fake.sent()

    ((headers, body),) = receiver.received
    assert headers["X-GitHub-Delivery"] == failed["guid"]
    assert headers["X-GitHub-Event"] == "pull_request"
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == f"sha256={expected}"
    assert json.loads(body)["number"] == 3
    newest, original = fake.deliveries()
    assert (newest["guid"], newest["redelivery"], newest["status"]) == (failed["guid"], True, "OK")
    assert newest["status_code"] == 202 and original == failed
    (post,) = fake.requests_to("POST", f"/app/hook/deliveries/{failed['id']}/attempts")
    assert (post.status, post.actor) == (202, "app")


async def test_redelivering_an_unknown_delivery_is_a_platform_error(
    fake: FakeGitHub, make_github: MakeGitHub
) -> None:
    with pytest.raises(PlatformError) as refused:
        await make_github("app").redeliver(999)
    assert refused.value.status == 404


async def test_a_rate_limit_on_the_deliveries_is_waited_out(
    fake: FakeGitHub, make_github: MakeGitHub, manual_clock: ManualClock
) -> None:
    fake.record_delivery("pull_request", _payload(1), status_code=502)
    fake.secondary_rate_limit(retry_after=20, path="/app/hook/deliveries")

    listing = await make_github("app").hook_deliveries()

    assert len(listing.items) == 1
    assert manual_clock.sleeps == [20]
    assert [r.status for r in fake.requests_to("GET", "/app/hook/deliveries")] == [403, 200]


async def test_token_mode_has_no_app_webhook(make_github: MakeGitHub) -> None:
    with pytest.raises(PlatformNotConfigured):
        await make_github("token").hook_deliveries()


# --- GitHub: a repository webhook (token mode) ----------------------------------------------------


async def test_a_repository_webhook_is_read_and_redelivered_with_the_token(
    fake: FakeGitHub, make_github: MakeGitHub, receiver: Receiver
) -> None:
    fake.add_repo_hook(REPO, 678, receiver.url, SECRET)
    failed = fake.record_delivery("pull_request", _payload(4), status_code=503, hook_id=678)
    github = make_github("token")

    (item,) = (await github.hook_deliveries((REPO, 678))).items
    assert (item.id, item.guid, item.ok) == (failed["id"], failed["guid"], False)
    await github.redeliver(item.id, (REPO, 678))
    await fake.sent()

    ((headers, _),) = receiver.received
    assert headers["X-GitHub-Delivery"] == failed["guid"]
    path = f"/repos/{REPO}/hooks/678/deliveries"
    assert {r.actor for r in fake.requests_to("*", f"{path}*")} == {"token"}
    with pytest.raises(PlatformError) as missing:
        await github.hook_deliveries((REPO, 679))
    assert missing.value.status == 404


# --- GitHub: open pull requests ------------------------------------------------------------------


async def test_open_pull_requests_most_recently_updated_first_back_to_a_time(
    fake: FakeGitHub, make_github: MakeGitHub, manual_clock: ManualClock
) -> None:
    for number in (1, 2, 3):
        fake.add_pull(REPO, number, files=[PullFile.added("a.py", "x = 1\n")])
        manual_clock.advance(10)
    fake.add_pull(REPO, 4, state="closed")
    manual_clock.advance(10)
    fake.update_pull(REPO, 1, head_sha="f" * 40)  # pushed to: the most recently updated
    platform = make_github("app").for_repo(REPO, INSTALLATION)

    listed = await platform.open_pull_requests(None, limit=100)
    assert listed.items[0].head_sha == "f" * 40
    assert [p.number for p in listed.items] == [1, 3, 2] and listed.complete

    since = await platform.open_pull_requests(manual_clock.now - 25, limit=100)
    assert [p.number for p in since.items] == [1, 3]
    cut = await platform.open_pull_requests(None, limit=2)
    assert [p.number for p in cut.items] == [1, 3] and not cut.complete
    (first, *_) = fake.requests_to("GET", f"/repos/{REPO}/pulls")
    assert first.query["sort"] == "updated" and first.query["direction"] == "desc"


# --- GitLab: webhook events and merge requests ----------------------------------------------------


@pytest.fixture
def gitlab_hook(gitlab_fake: FakeGitLab, receiver: Receiver) -> FakeGitLab:
    gitlab_fake.set_access(GL_PROJECT, gitlab_fake.bot.username, "maintainer")
    gitlab_fake.add_hook(GL_PROJECT, GL_HOOK, receiver.url, token="gl-hook-token")
    return gitlab_fake


def _mr_hook(iid: int) -> dict[str, Any]:
    return {
        "object_kind": "merge_request",
        "project": {"path_with_namespace": GL_PROJECT},
        "object_attributes": {"iid": iid, "action": "open"},
    }


async def test_gitlab_lists_failed_events_newest_first_down_to_an_id(
    gitlab_hook: FakeGitLab, make_gitlab: MakeGitLab
) -> None:
    ok = gitlab_hook.record_hook_event(GL_HOOK, _mr_hook(1), response_status=200)
    down = gitlab_hook.record_hook_event(
        GL_HOOK, _mr_hook(2), response_status="internal error", idempotency_key="key-2"
    )
    proxy = gitlab_hook.record_hook_event(GL_HOOK, _mr_hook(3), response_status=502)
    refused = gitlab_hook.record_hook_event(GL_HOOK, _mr_hook(4), response_status=422)
    gitlab = make_gitlab()

    listing = await gitlab.hook_events(GL_PROJECT, GL_HOOK)

    assert [e.id for e in listing.items] == [refused["id"], proxy["id"], down["id"]]
    assert ok["id"] not in {e.id for e in listing.items}
    event = listing.items[2]
    assert (event.guid, event.event, event.action, event.ok, event.status) == (
        "key-2",
        "merge_request",
        "open",
        False,
        "internal error",
    )
    assert event.payload is not None and event.payload["object_attributes"]["iid"] == 2
    # The 200 left out, the 422 and "internal error" kept: both failure filters were sent.
    newer = await gitlab.hook_events(GL_PROJECT, GL_HOOK, after_id=proxy["id"])
    assert [e.id for e in newer.items] == [refused["id"]]


async def test_a_gitlab_resend_keeps_the_idempotency_key(
    gitlab_hook: FakeGitLab, make_gitlab: MakeGitLab, receiver: Receiver
) -> None:
    down = gitlab_hook.record_hook_event(
        GL_HOOK, _mr_hook(2), response_status="internal error", idempotency_key="key-2"
    )
    status = await make_gitlab().resend_hook_event(GL_PROJECT, GL_HOOK, down["id"])
    assert status == 202
    ((headers, body),) = receiver.received
    assert headers["Idempotency-Key"] == "key-2"
    assert headers["X-Gitlab-Token"] == "gl-hook-token"
    assert json.loads(body)["object_attributes"]["iid"] == 2
    assert gitlab_hook.resent == [down["id"]]


async def test_gitlab_resends_are_limited_to_five_a_minute(
    gitlab_hook: FakeGitLab, make_gitlab: MakeGitLab, sleeps: Sleeps
) -> None:
    down = gitlab_hook.record_hook_event(GL_HOOK, _mr_hook(2), response_status=502)
    gitlab = make_gitlab(gitlab_rate_limit_max_wait=0)
    for _ in range(5):
        await gitlab.resend_hook_event(GL_PROJECT, GL_HOOK, down["id"])
    with pytest.raises(PlatformError, match="rate limit"):
        await gitlab.resend_hook_event(GL_PROJECT, GL_HOOK, down["id"])
    assert len(gitlab_hook.resent) == 5


async def test_a_gitlab_without_the_events_api_answers_404(
    gitlab_hook: FakeGitLab, make_gitlab: MakeGitLab
) -> None:
    gitlab_hook.hook_events_supported = False
    with pytest.raises(PlatformError) as refused:
        await make_gitlab().hook_events(GL_PROJECT, GL_HOOK)
    assert refused.value.status == 404


async def test_open_merge_requests_updated_after_a_time(
    gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab
) -> None:
    gitlab_fake.add_merge_request(GL_PROJECT, 1, files=[MRFile.added("a.py", "x = 1\n")])
    gitlab_fake.add_merge_request(GL_PROJECT, 2, state="merged")
    gitlab_fake.add_merge_request(GL_PROJECT, 3, draft=True)
    gitlab: GitLab = make_gitlab()
    platform = gitlab.for_repo(GL_PROJECT)

    listed = await platform.open_pull_requests(None, limit=100)
    assert sorted((p.number, p.draft) for p in listed.items) == [(1, False), (3, True)]
    head = gitlab_fake.merge_request(GL_PROJECT, 1)["sha"]
    assert next(p.head_sha for p in listed.items if p.number == 1) == head
    later = await platform.open_pull_requests(listed.items[0].updated_at + 3600, limit=100)
    assert later.items == () and later.complete
    request = gitlab_fake.requests_to("GET", f"{project_path(GL_PROJECT)}/merge_requests")[-1]
    assert request.query["state"] == "opened" and "updated_after" in request.query
