"""Routing events to handlers, in gidgethub's shape with its weak spots fixed.

    router = Router()

    @router.register("pull_request", action="opened")
    @router.register("pull_request", action="reopened")
    async def review(ctx: Context) -> None: ...

Every matching handler runs, in registration order (children of a composed router first, in
the order given, then the router's own). A handler that raises is logged with the delivery id
and does not stop the others; the dispatch reports it, so the job fails and is retried for the
failed handlers alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.events import Event

if TYPE_CHECKING:
    from bot.context import Context

Handler = Callable[["Context"], Awaitable[None]]
WANTED_KEPT = 1024  # kinds of event whose `wants` answer a router keeps


def handler_name(handler: Handler) -> str:
    """A stable name for a handler: how the queue remembers which ones already succeeded."""
    return f"{handler.__module__}.{handler.__qualname__}"


@dataclass(frozen=True)
class Route:
    name: str
    handler: Handler
    action: str | None = None
    platform: str | None = None

    def matches(self, event: Event) -> bool:
        if self.name != event.name:
            return False
        if self.action is not None and self.action != event.action:
            return False
        return self.platform is None or self.platform == event.platform


@dataclass
class DispatchResult:
    succeeded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, BaseException]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class HandlerFailed(Exception):
    """One or more handlers of an event raised. Carries what already succeeded."""

    def __init__(self, result: DispatchResult) -> None:
        self.result = result
        parts = [f"{name}: {type(exc).__name__}: {exc}" for name, exc in result.failed]
        super().__init__("; ".join(parts))

    @property
    def progress(self) -> dict[str, list[str]]:
        return {"succeeded": [*self.result.skipped, *self.result.succeeded]}


class Router:
    # Routes added to any router so far: a router's answers to `wants` are kept until a route
    # is added anywhere (a child's included), so intake asks for each kind of event once.
    _edits = 0

    def __init__(self, *children: Router) -> None:
        self._children = list(children)
        self._routes: list[Route] = []
        self._wanted: dict[tuple[str, str, str | None], bool] = {}
        self._wanted_at = -1

    def register(
        self, name: str, *, action: str | None = None, platform: str | None = None
    ) -> Callable[[Handler], Handler]:
        """Register the decorated handler for `name`, narrowed by `action=` or `platform=`."""
        if action is not None and platform is not None:
            raise TypeError("register() takes at most one key: action= or platform=")

        def decorator(handler: Handler) -> Handler:
            self.add(handler, name, action=action, platform=platform)
            return handler

        return decorator

    def add(
        self,
        handler: Handler,
        name: str,
        *,
        action: str | None = None,
        platform: str | None = None,
    ) -> None:
        if action is not None and platform is not None:
            raise TypeError("add() takes at most one key: action= or platform=")
        self._routes.append(Route(name, handler, action, platform))
        Router._edits += 1

    def routes(self) -> Iterator[Route]:
        for child in self._children:
            yield from child.routes()
        yield from self._routes

    def handlers_for(self, event: Event) -> list[Handler]:
        """The handlers for `event`, in registration order; each at most once."""
        found: list[Handler] = []
        for route in self.routes():
            if route.matches(event) and route.handler not in found:
                found.append(route.handler)
        return found

    def wants(self, event: Event) -> bool:
        """Whether any handler matches `event` (asked for every delivery at intake)."""
        # An action is whatever a (verified) sender wrote: the answers kept stay few.
        if self._wanted_at != Router._edits or len(self._wanted) >= WANTED_KEPT:
            self._wanted, self._wanted_at = {}, Router._edits
        key = (event.platform, event.name, event.action)
        wanted = self._wanted.get(key)
        if wanted is None:
            wanted = self._wanted[key] = any(route.matches(event) for route in self.routes())
        return wanted

    async def dispatch(self, ctx: Context, *, skip: Collection[str] = ()) -> DispatchResult:
        """Run every matching handler; `skip` names handlers that already succeeded."""
        result = DispatchResult()
        for handler in self.handlers_for(ctx.event):
            name = handler_name(handler)
            if name in skip:
                result.skipped.append(name)
                continue
            try:
                await handler(ctx)
            except Exception as exc:
                ctx.log.error(
                    "handler failed",
                    handler=name,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )
                result.failed.append((name, exc))
            else:
                result.succeeded.append(name)
        return result
