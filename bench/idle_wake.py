"""What waking from idle costs on this machine: the first round trip between two processes
after they sat idle, against the ones right after it.

    .venv/bin/python -m bench.idle_wake [--idle 0.85] [--rounds 8] [--work-ms 2]

A server process (asyncio, as Arbiter's) answers each one-byte request after `--work-ms` of busy
CPU; a client process sleeps `--idle` seconds, then sends six requests one after another, and
does that `--rounds` times. Printed per round: each round trip in ms; then the medians of the
first round trip and of the others, and the difference (what one wake costs the chain).

Why: in `bench.worker_throughput` every slot waits out its 1 s model call, so each round of
reviews starts with both Arbiter and the fakes idle for most of a second, and a review's chain
then crosses the two processes a dozen times. Where waking a vCPU from idle is slow (a virtual
machine whose host deschedules idle vCPUs), each round pays it a few times over, whatever
Arbiter does: this prints how much, so the worker bench's figure can be read against it. This
prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

CLIENT = """
import socket, sys, time
port, idle, rounds = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
conn = socket.create_connection(("127.0.0.1", port))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(rounds):
    time.sleep(idle)
    trips = []
    for _ in range(6):
        started = time.perf_counter()
        conn.sendall(b"x")
        conn.recv(1)
        trips.append((time.perf_counter() - started) * 1000)
    print(" ".join(f"{trip:.2f}" for trip in trips), flush=True)
"""


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle", type=float, default=0.85, help="seconds idle before a round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--work-ms", type=float, default=2.0, help="server CPU per request")
    args = parser.parse_args()
    work = args.work_ms / 1000

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1):
            started = time.perf_counter()
            while time.perf_counter() - started < work:  # the server's own work, on its CPU
                pass
            writer.write(b"y")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        str(port),
        str(args.idle),
        str(args.rounds),
        stdout=asyncio.subprocess.PIPE,
    )
    assert client.stdout is not None
    first: list[float] = []
    rest: list[float] = []
    print(f"round trips (ms) after {args.idle:g} s idle, {args.work_ms:g} ms of server work each")
    async for line in client.stdout:
        trips = [float(value) for value in line.split()]
        first.append(trips[0])
        rest.extend(trips[1:])
        print("  " + " ".join(f"{trip:6.2f}" for trip in trips))
    await client.wait()
    server.close()
    await server.wait_closed()
    woken, steady = statistics.median(first), statistics.median(rest)
    print(f"first after idle  median {woken:.2f} ms")
    print(f"the others        median {steady:.2f} ms")
    print(f"one wake costs    {woken - steady:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
