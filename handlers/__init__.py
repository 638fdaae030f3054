"""Handlers, one feature each, each with its own `router`; combined here in one place."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from bot.router import Router
from handlers import comment, installation, pull_request


def build_router(extra_modules: Iterable[str] = ()) -> Router:
    """Arbiter's handlers, then those of `ARBITER_HANDLERS` modules, in the order given."""
    children = [installation.router, pull_request.router, comment.router]
    for dotted in extra_modules:
        try:
            module = importlib.import_module(dotted)
        except ImportError as exc:
            raise ValueError(f"ARBITER_HANDLERS: cannot import {dotted!r}: {exc}") from exc
        router = getattr(module, "router", None)
        if not isinstance(router, Router):
            raise ValueError(f"ARBITER_HANDLERS: {dotted!r} has no `router = Router()`")
        children.append(router)
    return Router(*children)
