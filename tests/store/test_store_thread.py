"""The store's threads (`sqlite_plain.StoreThread`): work handed from the event loop runs there,
in order, and its value or exception comes back to the caller."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bot.store.sqlite_plain import StoreThread, store_thread


class _Held:
    """Work that holds the thread until released, noting `done` when it ends."""

    def __init__(self, done: list[str]) -> None:
        self.started, self.release, self.done = threading.Event(), threading.Event(), done

    def __call__(self) -> None:
        self.started.set()
        self.release.wait(5)
        self.done.append("held")


async def test_work_runs_on_the_thread_in_order_and_its_outcome_comes_back() -> None:
    thread = store_thread("test-store")
    done: list[int] = []

    def work(n: int) -> tuple[str, int]:
        done.append(n)
        return threading.current_thread().name, n

    def broken() -> None:
        raise ValueError("refused")

    try:
        results = await asyncio.gather(*(thread.run(work, n) for n in range(20)))
        assert [n for _, n in results] == done == list(range(20))
        assert {name for name, _ in results} == {"test-store_0"}
        assert threading.current_thread().name not in {name for name, _ in results}
        with pytest.raises(ValueError, match="refused"):
            await thread.run(broken)
        assert await thread.run(work, 20) == ("test-store_0", 20)  # and it goes on
    finally:
        thread.shutdown(wait=True)


async def test_shutdown_lets_handed_work_finish_and_refuses_more() -> None:
    thread = StoreThread("test-store")
    finished: list[str] = []
    held = _Held(finished)
    running = asyncio.ensure_future(thread.run(held))
    queued = asyncio.ensure_future(thread.run(finished.append, "queued"))
    await asyncio.to_thread(held.started.wait, 5)
    thread.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="after shutdown"):
        await thread.run(finished.append, "late")
    held.release.set()
    await asyncio.gather(running, queued)
    await asyncio.to_thread(thread.shutdown, True)
    assert finished == ["held", "queued"]


async def test_work_whose_caller_stopped_waiting_before_it_began_is_not_run() -> None:
    thread = StoreThread("test-store")
    ran: list[str] = []
    held = _Held(ran)
    try:
        running = asyncio.ensure_future(thread.run(held))
        await asyncio.to_thread(held.started.wait, 5)
        waiting = asyncio.ensure_future(thread.run(ran.append, "given up"))
        await asyncio.sleep(0)  # handed to the thread, behind `held`
        waiting.cancel()
        held.release.set()
        await running
        await thread.run(ran.append, "next")
        assert ran == ["held", "next"]
        assert waiting.cancelled()
    finally:
        thread.shutdown(wait=True)
