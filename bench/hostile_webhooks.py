"""Hostile webhook traffic against `arbiter serve`: memory taken and `/health` latency.

    .venv/bin/python -m bench.hostile_webhooks [--rounds 3]

Starts `arbiter serve` (web only, SQLite, default limits) and, while a process of its own polls
`/health` every 50 ms, sends in turn:

- burst: 40 concurrent unsigned 24 MiB bodies (half with a Content-Length, half chunked);
- bombs: 2 MB gzip bombs (2 GiB inflated), 4 at a time;
- large: unsigned bodies of ARBITER_MAX_WEBHOOK_BYTES (25 MiB), one after another.

For each phase it prints the answers, the server's peak RSS above its RSS before the phase
(VmHWM, reset through /proc/PID/clear_refs), and the slowest and median `/health` answers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.bad_input import MIB, gzip_bomb
from tests.e2e.serve import ServeProcess
from tests.rawhttp import Answer, chunked, exchange, request_bytes

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret"


def _memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _reset_peak(pid: int) -> None:
    """Restart VmHWM from the current RSS, so each phase's peak is its own."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _head(i: int, *, length: int | None, **extra: str) -> bytes:
    headers = [
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", "pull_request"),
        ("X-GitHub-Delivery", f"hostile-{i}"),
        ("X-Hub-Signature-256", "sha256=" + f"{i:064x}"),
        *extra.items(),
    ]
    head = request_bytes("/webhooks/github", headers, length=length)
    if length is None:
        head = head.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    return head


async def _burst(port: int) -> list[Answer | None]:
    body = b"x" * (24 * MIB)
    framed = chunked(body, size=256 * 1024)
    sends = [
        exchange("127.0.0.1", port, [_head(i, length=len(body)), body])
        if i % 2 == 0
        else exchange("127.0.0.1", port, [_head(i, length=None), framed])
        for i in range(40)
    ]
    return list(await asyncio.gather(*sends))


async def _bombs(port: int) -> list[Answer | None]:
    bomb = gzip_bomb(2048)
    gate = asyncio.Semaphore(4)

    async def one(i: int) -> Answer | None:
        async with gate:
            head = _head(i, length=len(bomb), **{"Content-Encoding": "gzip"})
            return await exchange("127.0.0.1", port, [head, bomb])

    return list(await asyncio.gather(*(one(i) for i in range(20))))


async def _large(port: int) -> list[Answer | None]:
    body = b'{"zen": "' + b"x" * (25 * MIB - 11) + b'"}'
    return [
        await exchange("127.0.0.1", port, [_head(i, length=len(body)), body]) for i in range(10)
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=1, help="run every phase this many times")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="arbiter-hostile-"))
    env = {
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/bench.db",
        "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
        "ARBITER_GITHUB_TOKEN": "ghp_bench_not_used",
        "ARBITER_GITHUB_BASE_URL": "http://127.0.0.1:9",
        "ARBITER_LOG_LEVEL": "ERROR",
    }
    server = ServeProcess(workdir, env, args=("--no-workers",))
    await server.start()
    assert server.process is not None
    pid = server.process.pid
    poller = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.health_poller", server.url, "0.05"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    phases: list[tuple[str, float, float, Counter[int | None], int]] = []
    runs: list[tuple[str, Callable[[int], Awaitable[list[Answer | None]]]]] = [
        ("burst", _burst),
        ("bombs", _bombs),
        ("large", _large),
    ]
    try:
        for _ in range(args.rounds):
            for name, run in runs:
                _reset_peak(pid)
                before = _memory(pid)["VmRSS"]
                started = time.time()
                answers = await run(server.port)
                peak = max(0, _memory(pid)["VmHWM"] - before)
                statuses = Counter(a.status if a else None for a in answers)
                phases.append((name, started, time.time(), statuses, peak))
                await asyncio.sleep(1)
    finally:
        out, _ = poller.communicate("", timeout=60)
        server.stop()
    polls = [line.split() for line in out.splitlines()]
    print(f"{'phase':6} {'answers':36} {'peak RSS':>9} {'health max':>11} {'median':>8}")
    for name, since, until, statuses, peak in phases:
        during = [float(p[1]) for p in polls if since <= float(p[0]) < until] or [0.0]
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str))
        print(
            f"{name:6} {shown:36} {peak // MIB:>5} MiB {max(during) * 1000:>8.0f} ms "
            f"{statistics.median(during) * 1000:>5.0f} ms"
        )
    failures = [p for p in polls if p[2] != "200"]
    print(f"health polls: {len(polls)}, not 200: {len(failures)}")


if __name__ == "__main__":
    asyncio.run(main())
