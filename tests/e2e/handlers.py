"""Handlers that end-to-end tests load into a real `arbiter serve` (ARBITER_HANDLERS).

Each appends one line per call to the file named by ARBITER_TEST_RECORD, so a test can count
dispatches across processes and restarts. A pull request titled with `[slow]` makes
`slow_when_asked` block for ARBITER_TEST_SLOW_SECONDS; `[fail]` makes `fail_when_asked` raise.
"""

from __future__ import annotations

import asyncio
import os

from bot.context import Context
from bot.router import Router

router = Router()


def _record(ctx: Context, what: str) -> None:
    line = f"{ctx.event.delivery_id}\t{ctx.event.label}\t{what}\t{os.getpid()}\n"
    # One write of a short line with O_APPEND: atomic even with several processes.
    with open(os.environ["ARBITER_TEST_RECORD"], "a", encoding="utf-8") as out:
        out.write(line)


def _title(ctx: Context) -> str:
    pr = ctx.event.payload.get("pull_request") or ctx.event.payload.get("object_attributes") or {}
    return str(pr.get("title") or "")


@router.register("pull_request")
@router.register("comment")
async def record_call(ctx: Context) -> None:
    _record(ctx, "record")


@router.register("pull_request")
async def slow_when_asked(ctx: Context) -> None:
    if "[slow]" in _title(ctx):
        _record(ctx, "slow-start")
        await asyncio.sleep(float(os.environ.get("ARBITER_TEST_SLOW_SECONDS", "2")))
        _record(ctx, "slow-finish")


@router.register("pull_request")
async def fail_when_asked(ctx: Context) -> None:
    if "[fail]" in _title(ctx):
        _record(ctx, "fail")
        raise RuntimeError("asked to fail by the pull request title")
