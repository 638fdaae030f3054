"""Store operations one at a time: the wall and CPU time of each, as a review's slot waits them.

    .venv/bin/python -m bench.store_ops [--store-url URL] [--ops 500] [--rounds 3]

Opens the SQL store at `--store-url` (default: a fresh SQLite file in a temporary folder; a
PostgreSQL database given here is migrated and written to, so give it one of its own), and
times, one after the other (never two at once), `--ops` of each of the operations a review makes
most: a read (`pr_state`), a one-statement write (`update_pr_state`, an upsert returning its
row), a cache write and read, a review's start, and a job's claim with its completion. Printed
per round and operation: microseconds of wall time and of this process's CPU time (the event
loop's and the store's threads' together) per operation. This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.store.base import NewJob, ReviewStart
from bot.store.sql import SQLStore

WORKER = "bench-store-ops"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store-url", help="default: a fresh SQLite file")
    parser.add_argument("--ops", type=int, default=500, help="operations of each kind a round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = args.store_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp())}/store-ops.db"
    store = SQLStore(url)
    await store.open()
    await store.migrate()
    numbers = itertools.count(1)

    async def read() -> None:
        await store.pr_state("github", "bench/ops", 1)

    async def upsert() -> None:
        await store.update_pr_state("github", "bench/ops", 1, last_reviewed_head="a" * 40)

    async def cache_put() -> None:
        await store.cache_put(f"bench-{next(numbers) % 64}", "x" * 2000, ttl_seconds=3600)

    async def cache_get() -> None:
        await store.cache_get(f"bench-{next(numbers) % 64}")

    jobs = itertools.count(1)

    async def start_review() -> None:
        # A review job's first attempt, as every review starts (its record inserted unless
        # the job has one).
        start = ReviewStart("github", "bench/ops", 2, "b" * 40, "full", job_id=next(jobs))
        await store.start_review(start)

    async def claim_and_complete() -> None:
        await store.enqueue(NewJob(kind="bench", payload="{}", max_attempts=1))
        (job,) = await store.claim(WORKER, limit=1, lease_seconds=30)
        await store.complete(job.id, WORKER)

    operations: list[tuple[str, Callable[[], Awaitable[None]], int]] = [
        ("read (pr_state)", read, 1),
        ("upsert (update_pr_state)", upsert, 1),
        ("cache put", cache_put, 1),
        ("cache get", cache_get, 1),
        ("review start", start_review, 1),
        ("enqueue + claim + complete", claim_and_complete, 3),
    ]
    print(f"store    {url.split('://')[0]}, {args.ops} of each, one at a time")
    try:
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}")
            for name, operation, calls in operations:
                for _ in range(20):  # warm: connections, statement caches
                    await operation()
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(args.ops):
                    await operation()
                wall = (time.perf_counter() - wall) / (args.ops * calls) * 1e6
                cpu = (time.process_time() - cpu) / (args.ops * calls) * 1e6
                print(f"  {name:28s} {wall:7.0f} µs wall {cpu:7.0f} µs CPU  per store call")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
