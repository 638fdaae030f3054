"""Router semantics: registration order, every match runs, failures isolated, keys."""

from __future__ import annotations

from typing import Literal

import pytest

from bot.context import Context
from bot.events import Event
from bot.metrics import Metrics
from bot.router import WANTED_KEPT, Router, handler_name
from config.settings import load_settings
from platforms.base import Platform, PlatformNotConfigured


def _event(
    name: str = "pull_request",
    action: str | None = "opened",
    platform: Literal["github", "gitlab"] = "github",
) -> Event:
    return Event(
        platform=platform, name=name, action=action, delivery_id="d-1", repo="o/r", number=1
    )


def _no_platform(event: Event) -> Platform:
    raise PlatformNotConfigured("none in router tests")


def _ctx(event: Event) -> Context:
    return Context(
        event=event,
        settings=load_settings(),
        store=None,  # type: ignore[arg-type]  # the router never touches the store
        metrics=Metrics(),
        platform_factory=_no_platform,
    )


async def test_every_matching_handler_runs_in_registration_order() -> None:
    calls: list[str] = []
    router = Router()

    @router.register("pull_request")
    async def any_action(ctx: Context) -> None:
        calls.append("any")

    @router.register("pull_request", action="opened")
    async def opened(ctx: Context) -> None:
        calls.append("opened")

    @router.register("pull_request", action="closed")
    async def closed(ctx: Context) -> None:
        calls.append("closed")

    @router.register("comment")
    async def comment(ctx: Context) -> None:
        calls.append("comment")

    result = await router.dispatch(_ctx(_event()))
    assert calls == ["any", "opened"]
    assert result.ok
    assert result.succeeded == [handler_name(any_action), handler_name(opened)]


async def test_a_failing_handler_does_not_stop_the_others() -> None:
    calls: list[str] = []
    router = Router()

    @router.register("pull_request")
    async def first(ctx: Context) -> None:
        calls.append("first")

    @router.register("pull_request")
    async def broken(ctx: Context) -> None:
        raise RuntimeError("boom")

    @router.register("pull_request")
    async def last(ctx: Context) -> None:
        calls.append("last")

    result = await router.dispatch(_ctx(_event()))
    assert calls == ["first", "last"]
    assert not result.ok
    assert [name for name, _ in result.failed] == [handler_name(broken)]
    assert isinstance(result.failed[0][1], RuntimeError)


async def test_skip_runs_only_the_handlers_that_have_not_succeeded() -> None:
    calls: list[str] = []
    router = Router()

    @router.register("pull_request")
    async def done_before(ctx: Context) -> None:
        calls.append("done_before")

    @router.register("pull_request")
    async def retried(ctx: Context) -> None:
        calls.append("retried")

    result = await router.dispatch(_ctx(_event()), skip={handler_name(done_before)})
    assert calls == ["retried"]
    assert result.skipped == [handler_name(done_before)]


async def test_platform_key_narrows_to_one_platform() -> None:
    calls: list[str] = []
    router = Router()

    @router.register("pull_request", platform="gitlab")
    async def gitlab_only(ctx: Context) -> None:
        calls.append(ctx.event.platform)

    await router.dispatch(_ctx(_event(platform="github")))
    await router.dispatch(_ctx(_event(platform="gitlab")))
    assert calls == ["gitlab"]


def test_at_most_one_key() -> None:
    router = Router()
    with pytest.raises(TypeError, match="at most one key"):
        router.register("pull_request", action="opened", platform="github")


async def test_stacked_registrations_and_composition() -> None:
    calls: list[str] = []
    child_a, child_b = Router(), Router()

    @child_a.register("pull_request", action="opened")
    @child_a.register("pull_request", action="reopened")
    async def review(ctx: Context) -> None:
        calls.append(f"review:{ctx.event.action}")

    @child_b.register("pull_request")
    async def audit(ctx: Context) -> None:
        calls.append(f"audit:{ctx.event.action}")

    parent = Router(child_a, child_b)

    @parent.register("pull_request")
    async def own(ctx: Context) -> None:
        calls.append("own")

    # A handler registered on a child after composition is still seen.
    @child_b.register("pull_request", action="reopened")
    async def late(ctx: Context) -> None:
        calls.append("late")

    await parent.dispatch(_ctx(_event(action="opened")))
    await parent.dispatch(_ctx(_event(action="reopened")))
    await parent.dispatch(_ctx(_event(action="edited")))
    assert calls == [
        "review:opened",
        "audit:opened",
        "own",
        "review:reopened",
        "audit:reopened",
        "late",
        "own",
        "audit:edited",
        "own",
    ]
    assert parent.wants(_event(action="edited"))
    assert not parent.wants(_event(name="ping", action=None))


async def test_a_handler_matching_twice_runs_once() -> None:
    calls: list[str] = []
    router = Router()

    @router.register("pull_request")
    @router.register("pull_request", action="opened")
    async def twice(ctx: Context) -> None:
        calls.append("x")

    assert len(router.handlers_for(_event())) == 1
    await router.dispatch(_ctx(_event()))
    assert calls == ["x"]


def test_context_platform_says_what_is_missing() -> None:
    ctx = _ctx(_event())
    with pytest.raises(PlatformNotConfigured, match="none in router tests"):
        _ = ctx.platform


def test_what_a_router_wants_follows_routes_added_later_to_it_or_a_child() -> None:
    """`wants` (asked for every delivery at intake) keeps its answers per kind of event, and
    a route added afterwards, to the router or to one it is composed of, counts at once."""
    child, other = Router(), Router()
    router = Router(child)

    async def handler(ctx: Context) -> None: ...

    assert not router.wants(_event("pull_request", "opened"))
    child.add(handler, "pull_request", action="opened")
    assert router.wants(_event("pull_request", "opened"))
    assert not router.wants(_event("pull_request", "closed"))
    assert router.wants(_event("pull_request", "opened", platform="gitlab"))  # no platform key
    other.add(handler, "comment")  # a router this one is not made of: no change
    assert not router.wants(_event("comment", "created"))
    router.add(handler, "pull_request", platform="gitlab")
    assert router.wants(_event("pull_request", "closed", platform="gitlab"))
    assert not router.wants(_event("pull_request", "closed"))


def test_a_router_keeps_few_answers_however_many_actions_senders_make_up() -> None:
    router = Router()

    async def handler(ctx: Context) -> None: ...

    router.add(handler, "pull_request", action="opened")
    for n in range(5000):
        assert not router.wants(_event("pull_request", f"made-up-{n}"))
    assert router.wants(_event("pull_request", "opened"))
    assert len(router._wanted) <= WANTED_KEPT
