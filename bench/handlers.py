"""A handler for benchmarks: wants pull_request events and does nothing with them, so the
figures measure the framework (verify, normalize, store, claim, dispatch), not a handler."""

from __future__ import annotations

from bot.context import Context
from bot.router import Router

router = Router()


@router.register("pull_request")
async def noop(ctx: Context) -> None:
    return None
