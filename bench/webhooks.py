"""Webhook intake benchmark: signed pull_request/opened deliveries → `arbiter serve`.

    .venv/bin/python -m bench.webhooks [--deliveries 5000] [--concurrency 32] [--store-url URL]

Starts `arbiter serve` as its own process (workers on, dispatching to a no-op handler), sends
signed deliveries from this process over loopback, and prints deliveries/s and the p50/p99 of
the answer latency. Every delivery must be answered 202; anything else is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp

from tests.conftest import FixturesNotFound, find_fixtures
from tests.e2e.serve import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret"
OPENED = "github/webhooks/pull_request/opened.payload.json"


def _body() -> bytes:
    try:
        return (find_fixtures(ROOT, os.environ) / OPENED).read_bytes()
    except FixturesNotFound as exc:
        raise SystemExit(str(exc)) from None


async def _load(
    url: str, body: bytes, count: int, concurrency: int
) -> tuple[float, list[float], Counter[int]]:
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-Hub-Signature-256": signature,
    }
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for _ in range(count):
        queue.put_nowait(str(uuid.uuid4()))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while not queue.empty():
                delivery = queue.get_nowait()
                started = time.perf_counter()
                async with session.post(
                    f"{url}/webhooks/github",
                    data=body,
                    headers={**headers, "X-GitHub-Delivery": delivery},
                ) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, statuses


async def _open_loop(
    url: str, body: bytes, count: int, rate: float
) -> tuple[float, list[float], Counter[int]]:
    """Deliveries at a fixed rate, as independent senders would make them; each latency runs
    from the moment its request was due, so a stalled server cannot hide its queue."""
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-Hub-Signature-256": signature,
    }
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(due: float) -> None:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            async with session.post(
                f"{url}/webhooks/github",
                data=body,
                headers={**headers, "X-GitHub-Delivery": str(uuid.uuid4())},
            ) as response:
                await response.read()
            latencies.append(time.perf_counter() - due)
            statuses[response.status] += 1

        started = time.perf_counter() + 0.05
        await asyncio.gather(*(send(started + i / rate) for i in range(count)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, statuses


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--store-url", help="default: a fresh SQLite file in a temporary folder")
    parser.add_argument("--no-workers", action="store_true", help="web only (intake alone)")
    parser.add_argument(
        "--rate",
        type=float,
        help="open loop: send this many deliveries per second (default: closed loop, as fast "
        "as --concurrency clients get answers)",
    )
    args = parser.parse_args()

    body = _body()
    workdir = Path(tempfile.mkdtemp(prefix="arbiter-bench-"))
    store_url = args.store_url or f"sqlite+aiosqlite:///{workdir}/bench.db"
    env = {
        "ARBITER_DATABASE_URL": store_url,
        "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
        "ARBITER_GITHUB_TOKEN": "ghp_bench_not_used",
        # The reviews the built-in handler queues fail at once here: nothing listens on port 9.
        "ARBITER_GITHUB_BASE_URL": "http://127.0.0.1:9",
        "ARBITER_HANDLERS": "bench.handlers",
    }
    server = ServeProcess(workdir, env, args=("--no-workers",) if args.no_workers else ())
    if not store_url.startswith("sqlite"):
        server.migrate()
    await server.start()
    try:
        await _load(server.url, body, args.warmup, args.concurrency)
        if args.rate:
            elapsed, latencies, statuses = await _open_loop(
                server.url, body, args.deliveries, args.rate
            )
        else:
            elapsed, latencies, statuses = await _load(
                server.url, body, args.deliveries, args.concurrency
            )
    finally:
        server.stop()
    rate = args.deliveries / elapsed
    mode = (
        f"open loop at {args.rate:g}/s" if args.rate else f"closed loop, {args.concurrency} clients"
    )
    workers = "web only" if args.no_workers else "web + workers"
    p50, p99 = _percentile(latencies, 0.50) * 1000, _percentile(latencies, 0.99) * 1000
    print(f"store          {store_url.split('://')[0]} ({workers})")
    print(f"body           {len(body)} bytes, signed pull_request/opened")
    print(f"deliveries     {args.deliveries}, {mode}, after {args.warmup} warm-up")
    print(f"answers        {dict(statuses)}")
    print(f"throughput     {rate:.0f} deliveries/s")
    print(f"latency p50    {p50:.1f} ms")
    print(f"latency p99    {p99:.1f} ms")
    print(f"latency mean   {statistics.fmean(latencies) * 1000:.1f} ms")
    summary = {"mode": mode, "deliveries_per_s": round(rate, 1), "p50_ms": round(p50, 2)}
    print(json.dumps({**summary, "p99_ms": round(p99, 2)}))
    if statuses != Counter({202: args.deliveries}):
        raise SystemExit("some deliveries were not answered 202")


if __name__ == "__main__":
    asyncio.run(main())
