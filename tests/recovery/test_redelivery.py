"""Redelivery: failed deliveries are asked for again, once, and arrive through the signed
webhook; what Arbiter stored, what no handler wants and what Arbiter refused for good are left
alone; the limit per pass, rate limits and refusals are respected; GitLab's events too."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from bot.recovery.redelivery import Candidate, candidates, webhooks
from bot.router import Router
from platforms.base import HookDelivery
from tests.recovery.conftest import (
    GL_HOOK,
    GL_HOOK_TOKEN,
    PROJECT,
    REPO,
    SECRET,
    MakeWorld,
    merge_request_hook,
    pull_request_payload,
)

# --- Choosing: pure -------------------------------------------------------------------------


def _attempt(
    id: int,
    guid: str,
    *,
    ok: bool = False,
    code: int | None = 502,
    event: str = "pull_request",
    action: str | None = "opened",
    at: float = 0.0,
) -> HookDelivery:
    return HookDelivery(
        id=id,
        guid=guid,
        event=event,
        action=action,
        ok=ok,
        status="OK" if ok else f"Invalid HTTP Response: {code}",
        status_code=200 if ok else code,
        delivered_at=at or float(id),
    )


def _everything(item: HookDelivery) -> bool:
    return item.event != "ping"


def _guids(found: list[Candidate]) -> list[str]:
    return [c.guid for c in found]


def test_the_newest_attempt_of_each_delivery_decides() -> None:
    items = [
        _attempt(5, "b"),  # failed; redelivered OK since (7)
        _attempt(7, "b", ok=True),
        _attempt(3, "a"),  # failed, then failed again: asked about by its newest attempt
        _attempt(6, "a", code=503),
        _attempt(4, "c", code=0),  # no connection at all
    ]
    found = candidates(items, seen=set(), wanted=_everything)
    assert [(c.guid, c.attempt.id, c.max_asks) for c in found] == [("c", 4, 3), ("a", 6, 3)]


def test_stored_unwanted_and_finally_refused_deliveries_are_left_alone() -> None:
    items = [
        _attempt(1, "stored"),
        _attempt(2, "ping", event="ping", action=None),
        _attempt(3, "bad-signature", code=401),
        _attempt(4, "malformed", code=400),
        _attempt(5, "too-big", code=413),
        _attempt(6, "store-down", code=503),
        _attempt(7, "", code=502),  # no guid: nothing to match it with
    ]
    found = candidates(items, seen={"stored"}, wanted=_everything)
    assert _guids(found) == ["store-down"]


def test_answered_but_never_stored_counts_only_while_watched_and_not_ambiguous() -> None:
    items = [
        _attempt(1, "before-the-mark", ok=True),
        _attempt(11, "proxy-said-ok", ok=True),
        _attempt(12, "comment", ok=True, event="issue_comment", action="created"),
    ]
    assert candidates(items, seen=set(), wanted=_everything) == []  # no mark: first pass
    found = candidates(items, seen=set(), wanted=_everything, answered_after=10.0)
    assert [(c.guid, c.max_asks) for c in found] == [("proxy-said-ok", 1)]


def test_the_router_decides_what_is_wanted(make_world: MakeWorld) -> None:
    from bot.recovery.redelivery import wanted_by
    from handlers import build_router

    wanted = wanted_by(build_router(), "github")
    assert wanted(_attempt(1, "x", event="pull_request", action="opened"))
    assert wanted(_attempt(2, "y", event="issue_comment", action="created"))
    assert wanted(_attempt(3, "z", event="pull_request_review_comment", action="created"))
    assert not wanted(_attempt(4, "w", event="pull_request", action="labeled"))
    assert not wanted(_attempt(5, "v", event="push", action=None))
    assert not wanted_by(Router(), "github")(_attempt(6, "u"))


# --- GitHub App: the pass against the fake GitHub and Arbiter's webhook --------------------


async def test_a_failed_delivery_is_asked_for_once_and_arrives_signed(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    failed = world.github.record_delivery("pull_request", pull_request_payload(2), status_code=502)
    answered = await world.github.deliver("pull_request", pull_request_payload(3))
    assert answered["status_code"] == 202  # Arbiter stored this one itself

    tally = await world.redeliver()

    assert world.github.redelivery_requests == [failed["id"]]
    assert (tally.listed, tally.due, tally.done) == (2, 1, 1)
    redelivered = world.github.deliveries()[0]
    assert (redelivered["guid"], redelivered["redelivery"]) == (failed["guid"], True)
    assert redelivered["status_code"] == 202  # verified, stored and queued by the webhook
    assert await world.runtime.store.seen_delivery("github", failed["guid"])
    events = await world.jobs("event")
    assert sorted(j.delivery_id or "" for j in events) == sorted([failed["guid"], answered["guid"]])

    again = await world.redeliver()
    assert world.github.redelivery_requests == [failed["id"]]  # never twice
    assert again.done == 0
    (record,) = await world.runtime.store.redelivery_records("github")
    assert (record.guid, record.state, record.attempts) == (failed["guid"], "accepted", 1)
    metrics = world.runtime.metrics.render().decode()
    assert 'arbiter_redeliveries_requested_total{platform="github"} 1.0' in metrics


async def test_a_delivery_arbiter_stored_is_not_asked_for_though_github_calls_it_failed(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    answered = await world.github.deliver("pull_request", pull_request_payload(2))
    # GitHub gave up waiting (over ten seconds) though Arbiter had stored it.
    world.github.record_delivery(
        "pull_request", pull_request_payload(2), status_code=504, guid=answered["guid"]
    )
    tally = await world.redeliver()
    assert world.github.redelivery_requests == [] and tally.due == 0


async def test_what_no_handler_wants_and_final_refusals_are_not_asked_for(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    world.github.record_delivery("ping", {"zen": "Keep it simple."}, status_code=502)
    world.github.record_delivery("pull_request", pull_request_payload(2, "labeled"))
    world.github.record_delivery("pull_request", pull_request_payload(3), status_code=401)
    await world.redeliver()
    assert world.github.redelivery_requests == []


async def test_the_limit_per_pass_takes_the_oldest_first_and_the_rest_next_time(
    make_world: MakeWorld,
) -> None:
    world = await make_world(redelivery_max_per_pass=2)
    failed = [
        world.github.record_delivery("pull_request", pull_request_payload(n), at=1_000_000 + n)
        for n in range(2, 7)
    ]
    ids = [f["id"] for f in failed]
    first = await world.redeliver()
    assert world.github.redelivery_requests == ids[:2]
    assert first.done == 2 and first.stopped is None
    await world.redeliver()
    await world.redeliver()
    assert world.github.redelivery_requests == ids  # each once, in order


async def test_a_redelivery_that_fails_too_is_asked_for_again_up_to_three_times(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    world.github.set_app_webhook("http://127.0.0.1:9/webhooks/github", "whatever")  # down
    failed = world.github.record_delivery("pull_request", pull_request_payload(2), status_code=0)
    for _ in range(5):
        await world.redeliver()
    assert len(world.github.redelivery_requests) == 3
    assert world.github.redelivery_requests[0] == failed["id"]
    assert len(set(world.github.redelivery_requests)) == 3  # each time the newest attempt


async def test_a_rate_limit_stops_the_pass_and_the_request_is_made_next_time(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    failed = world.github.record_delivery("pull_request", pull_request_payload(2))
    other = world.github.record_delivery("pull_request", pull_request_payload(3))
    world.github.fail(
        "POST",
        "/app/hook/deliveries/*/attempts",
        status=429,
        headers={"Retry-After": "3600"},
        body={"message": "You have exceeded a secondary rate limit."},
    )
    stopped = await world.redeliver()
    assert stopped.stopped == "rate limited" and stopped.done == 0
    assert world.github.redelivery_requests == []  # refused before it was made
    done = await world.redeliver()
    assert world.github.redelivery_requests == [failed["id"], other["id"]]
    assert done.done == 2


async def test_a_refused_redelivery_is_not_asked_for_again(make_world: MakeWorld) -> None:
    world = await make_world()
    world.github.record_delivery("pull_request", pull_request_payload(2))
    world.github.fail(
        "POST", "/app/hook/deliveries/*/attempts", status=422, body={"message": "too old"}
    )
    first = await world.redeliver()
    assert first.refused == 1
    await world.redeliver()
    assert len(world.github.requests_to("POST", "/app/hook/deliveries/*/attempts")) == 1
    (record,) = await world.runtime.store.redelivery_records()
    assert record.state == "refused" and "too old" in (record.error or "")


async def test_answered_but_never_stored_is_asked_for_once_after_the_first_pass(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    before = world.github.record_delivery("pull_request", pull_request_payload(2), status_code=200)
    await world.redeliver()  # the first pass: no mark yet, failures only
    assert world.github.redelivery_requests == []
    # A proxy answered 200 for Arbiter, which never saw it.
    lost = world.github.record_delivery(
        "pull_request", pull_request_payload(3), status_code=200, at=world.github.clock() + 2
    )
    await world.redeliver()
    assert world.github.redelivery_requests == [lost["id"]]
    assert await world.runtime.store.seen_delivery("github", lost["guid"])
    assert not await world.runtime.store.seen_delivery("github", before["guid"])


async def test_the_mark_limits_what_the_next_pass_reads(make_world: MakeWorld) -> None:
    world = await make_world()
    for n in range(2, 12):
        world.github.record_delivery("pull_request", pull_request_payload(n), status_code=202)
    await world.redeliver()
    world.github.clear_requests()
    later = await world.redeliver()
    # Read again only behind the mark (five minutes back): one page, and unchanged (304).
    assert later.listed == 10
    (page,) = world.github.requests_to("GET", "/app/hook/deliveries")
    assert page.status == 304


# --- Token mode: repository webhooks ------------------------------------------------------------


async def test_token_mode_reads_the_repository_webhooks_it_is_given(
    make_world: MakeWorld,
) -> None:
    world = await make_world("token", github_hook_ids=f"{REPO}:678")
    world.github.add_repo_hook(REPO, 678, str(world.server.make_url("/webhooks/github")), SECRET)
    failed = world.github.record_delivery("pull_request", pull_request_payload(2), hook_id=678)

    tally = await world.redeliver()

    assert tally.done == 1
    assert world.github.redelivery_requests == [failed["id"]]
    assert await world.runtime.store.seen_delivery("github", failed["guid"])
    requests = world.github.requests_to("*", f"/repos/{REPO}/hooks/678/deliveries*")
    assert {r.actor for r in requests} == {"token"}


async def test_token_mode_without_hook_ids_says_redelivery_is_off(make_world: MakeWorld) -> None:
    world = await make_world("token")
    found, off = webhooks(world.runtime.settings, world.runtime.github, world.runtime.gitlab)
    assert [w.platform for w in found] == []
    assert any("ARBITER_GITHUB_HOOK_IDS" in reason for reason in off)
    with capture_logs() as logs:
        world.recovery.start()
        await world.recovery.stop()
    warnings = [e for e in logs if e["event"] == "redelivery off for a platform"]
    assert any("ARBITER_GITHUB_HOOK_IDS" in e["reason"] for e in warnings)
    assert any("ARBITER_GITLAB_HOOK_IDS" in e["reason"] for e in warnings)


# --- GitLab: webhook events ---------------------------------------------------------------------


async def test_gitlab_failed_events_are_resent_with_their_idempotency_key(
    make_world: MakeWorld,
) -> None:
    world = await make_world(gitlab_hook_ids=f"{PROJECT}:{GL_HOOK}")
    url = str(world.server.make_url("/webhooks/gitlab"))
    world.gitlab.add_hook(PROJECT, GL_HOOK, url, token=GL_HOOK_TOKEN)
    down = world.gitlab.record_hook_event(
        GL_HOOK, merge_request_hook(1), response_status="internal error", idempotency_key="k-1"
    )
    stored = await world.gitlab.deliver_hook(GL_HOOK, merge_request_hook(2))
    assert stored["response_status"] == "202"

    tally = await world.redeliver()

    assert world.gitlab.resent == [down["id"]] and tally.done == 1
    assert await world.runtime.store.seen_delivery("gitlab", "k-1")
    await world.redeliver()
    assert world.gitlab.resent == [down["id"]]  # the resend is logged OK and k-1 is stored
    metrics = world.runtime.metrics.render().decode()
    assert 'arbiter_redeliveries_requested_total{platform="gitlab"} 1.0' in metrics


async def test_a_gitlab_without_webhook_events_is_left_to_the_sweep(
    make_world: MakeWorld,
) -> None:
    world = await make_world(gitlab_hook_ids=f"{PROJECT}:{GL_HOOK}")
    world.gitlab.add_hook(PROJECT, GL_HOOK, "http://127.0.0.1:9/", token=GL_HOOK_TOKEN)
    world.gitlab.hook_events_supported = False  # GitLab before 17.3
    with capture_logs() as logs:
        first = await world.redeliver()
        await world.redeliver()
    assert first.errors == 1
    warned = [e for e in logs if e["event"].startswith("webhook deliveries cannot be read")]
    assert len(warned) == 1 and "17.3" in warned[0]["hint"]
    path = f"/api/v4/projects/{PROJECT.replace('/', '%2F')}/hooks/{GL_HOOK}/events"
    assert len(world.gitlab.requests_to("GET", path)) == 1  # not asked again


@pytest.mark.parametrize("entry", ["octo/app", "octo:12", "octo/app:x", "/:1"])
def test_bad_hook_ids_stop_start_up_naming_the_setting(entry: str) -> None:
    from config.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="ARBITER_GITHUB_HOOK_IDS"):
        load_settings(github_hook_ids=entry)


def test_hook_ids_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.settings import hook_ids, load_settings

    monkeypatch.setenv("ARBITER_GITHUB_HOOK_IDS", "octo/app:12345, octo/lib:678")
    monkeypatch.setenv("ARBITER_GITLAB_HOOK_IDS", '["acme/group/shop:12"]')
    settings = load_settings()
    assert hook_ids(settings.github_hook_ids) == [("octo/app", 12345), ("octo/lib", 678)]
    assert hook_ids(settings.gitlab_hook_ids) == [("acme/group/shop", 12)]
