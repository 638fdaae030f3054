"""Group commit (bot/store/batching.py): callers that arrive together share a write; each gets
its own answer once the write holding its item is done."""

from __future__ import annotations

import asyncio

from bot.store.batching import GroupCommit


async def test_one_submit_after_another_is_written_each_time() -> None:
    """The second caller comes as soon as the first has its answer, while the first write's
    flusher is returning: it must start a write of its own, not wait for one that is over."""
    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        batches.append(items)
        return [item * 10 for item in items]

    group = GroupCommit(write)
    async with asyncio.timeout(5):
        for n in range(5):
            assert await group.submit(n) == n * 10
    assert batches == [[0], [1], [2], [3], [4]]


async def test_items_arriving_during_a_write_share_the_next() -> None:
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        batches.append(items)
        await release.wait()
        return items

    group = GroupCommit(write)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(group.submit(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    release.set()
    async with asyncio.timeout(5):
        assert await asyncio.gather(first, *rest) == [0, 1, 2, 3]
    assert batches == [[0], [1, 2, 3]]


async def test_with_two_in_flight_a_second_write_starts_before_the_first_ends() -> None:
    started: list[list[int]] = []
    release = asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        started.append(items)
        await release.wait()
        return items

    group = GroupCommit(write, in_flight=2)
    calls = [asyncio.create_task(group.submit(0))]
    await asyncio.sleep(0)
    calls += [asyncio.create_task(group.submit(n)) for n in (1, 2)]
    await asyncio.sleep(0.01)
    assert started[0] == [0] and len(started) == 2  # the second write did not wait
    calls.append(asyncio.create_task(group.submit(3)))  # both in flight: this one waits
    await asyncio.sleep(0.01)
    assert len(started) == 2
    release.set()
    async with asyncio.timeout(5):
        assert await asyncio.gather(*calls) == [0, 1, 2, 3]
        await group.drain()
    assert sorted(n for batch in started for n in batch) == [0, 1, 2, 3]
