"""Webhook intake benchmark: signed 28 KB pull_request/opened deliveries → `arbiter serve`.

    .venv/bin/python -m bench.webhooks [--pin] [--baseline] [--no-workers] [--store-url URL]
        [--rounds 3] [--deliveries 3000] [--warmup 200] [--concurrency 16] [--rate 500]

Starts `arbiter serve` as its own process and sends it signed deliveries from this one over
loopback: a closed loop (`--concurrency` requests in flight) for deliveries/s, the server's
CPU time per delivery (from /proc) and the answers' p50/p99, then an open loop at `--rate`
deliveries/s for the p99 a steady stream sees. Every delivery must be answered 202.

- `--baseline` measures, in each round and under the same settings, a bare aiohttp server
  that checks the signature with gidgethub and stores nothing (bench/bare_server.py), and
  prints Arbiter's throughput as a ratio to it: the figure means the same on any machine. Both
  servers run through the round and take the closed loop in turns (`--slices` each), so a
  machine whose speed drifts within a minute weighs on both alike; after each slice a server's
  trailing work (SQLite's checkpoints) runs in a pause and counts as its time.
- `--noise` measures a second bare server in Arbiter's place: the ratio a quiet machine would
  give is 1, and how far its rounds stray is the noise of one round's ratio on this machine.
- `--pin` runs the server on core 0 (`taskset -c 0`) and this load generator on core 1, so
  the two do not compete for a core.
- This process collects no garbage while it loads the servers (bench/harness.py): one full
  collection of its heap stood every delivery in flight still for 35-50 ms, charged to
  whichever server it was sending to.
- With workers (the default), each delivery queues a review job in the same process, against
  a fake GitHub and a fake OpenAI run here; the bench waits until the queue has drained after
  the burst and prints how long that took.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.harness import never_collecting
from tests.conftest import FixturesNotFound, find_fixtures, free_port
from tests.e2e.serve import ServeProcess
from tests.fakes.github import FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret"
TOKEN = "ghp_" + "b" * 36
OPENED = "github/webhooks/pull_request/opened.payload.json"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _body() -> bytes:
    try:
        return (find_fixtures(ROOT, os.environ) / OPENED).read_bytes()
    except FixturesNotFound as exc:
        raise SystemExit(str(exc)) from None


# --- Load ----------------------------------------------------------------------------------------


def _headers(body: bytes) -> dict[str, str]:
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-Hub-Signature-256": signature,
    }


async def closed_loop(
    url: str, body: bytes, count: int, concurrency: int
) -> tuple[float, list[float], Counter[int]]:
    """`count` deliveries, `concurrency` in flight: each sender sends its next on an answer."""
    headers = _headers(body)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    remaining = count
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def sender() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(
                    f"{url}/webhooks/github",
                    data=body,
                    headers={**headers, "X-GitHub-Delivery": str(uuid.uuid4())},
                ) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, statuses


async def open_loop(
    url: str, body: bytes, count: int, rate: float
) -> tuple[float, list[float], Counter[int]]:
    """Deliveries at a fixed rate, as independent senders would make them; each latency runs
    from the moment its request was due, so a stalled server cannot hide its queue."""
    headers = _headers(body)
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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- The servers ---------------------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User and system CPU time of a process, all its threads (proc(5): fields 14 and 15), or
    of one of its threads."""
    stat = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


def _pin(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


class PinnedServe(ServeProcess):
    """`arbiter serve`, on one core when asked."""

    def __init__(self, *args: object, core: int | None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.core = core

    def _command(self) -> list[str]:
        return [*_pin(self.core), *super()._command()]


class BareServer:
    """bench/bare_server.py as its own process."""

    def __init__(self, core: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.core = core
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        command = [sys.executable, "-m", "bench.bare_server", str(self.port), SECRET]
        self.process = subprocess.Popen([*_pin(self.core), *command], cwd=ROOT)
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"{self.url}/health/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        raise SystemExit("the bare server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


async def queue_drained(url: str, within: float = 300) -> float:
    """Seconds until /metrics shows no job queued or running."""
    started = time.perf_counter()
    pattern = re.compile(r'^arbiter_jobs\{state="(queued|running)"\} (\S+)$', re.M)
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - started < within:
            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
            if sum(float(n) for _, n in pattern.findall(text)) == 0:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    raise SystemExit(f"the queue did not drain within {within:.0f} s")


@dataclass
class Row:
    name: str
    rate: float
    cpu_us: float
    main_us: float
    p50_ms: float
    p99_ms: float
    open_p99_ms: float | None
    idle_rss: float
    rss: float
    drain_s: float | None = None


# After each slice of the closed loop, a server's trailing work (SQLite's checkpoint runs every
# 0.5 s after a write) is given this long to run before the next slice, and counted as its own.
SETTLE_SECONDS = 0.6


@dataclass
class Subject:
    """One server of a round and what its slices of the closed loop added up to."""

    name: str
    url: str
    pid: int
    drain: Callable[[], Awaitable[float]] | None = None
    idle_rss: float = 0.0
    elapsed: float = 0.0  # wall time of its slices
    cpu: float = 0.0  # CPU time within them, all threads
    main: float = 0.0  # of which on the event loop's thread
    trailing: float = 0.0  # CPU time in the pauses after them (when not draining a queue)
    drained: float | None = None
    latencies: list[float] = field(default_factory=list)
    answered: Counter[int] = field(default_factory=Counter)
    open_p99: float | None = None

    async def closed_slice(self, body: bytes, count: int, args: argparse.Namespace) -> None:
        cpu, main = cpu_seconds(self.pid), cpu_seconds(self.pid, self.pid)
        elapsed, latencies, statuses = await closed_loop(self.url, body, count, args.concurrency)
        self.cpu += cpu_seconds(self.pid) - cpu
        self.main += cpu_seconds(self.pid, self.pid) - main
        self.elapsed += elapsed
        self.latencies += latencies
        self.answered += statuses
        if self.drain is not None:
            self.drained = (self.drained or 0.0) + await self.drain()
        else:
            before = cpu_seconds(self.pid)
            await asyncio.sleep(SETTLE_SECONDS)
            self.trailing += cpu_seconds(self.pid) - before

    def row(self, deliveries: int) -> Row:
        # The core's time for these deliveries: the slices, and the work they left behind.
        busy = self.elapsed + self.trailing
        return Row(
            name=self.name,
            rate=deliveries / busy,
            cpu_us=(self.cpu + self.trailing) / deliveries * 1e6,
            main_us=self.main / deliveries * 1e6,
            p50_ms=percentile(self.latencies, 0.50) * 1000,
            p99_ms=percentile(self.latencies, 0.99) * 1000,
            open_p99_ms=self.open_p99,
            idle_rss=self.idle_rss,
            rss=rss_mib(self.pid),
            drain_s=self.drained,
        )


async def measure(subjects: list[Subject], body: bytes, args: argparse.Namespace) -> list[Row]:
    """Every server of the round measured the same way, their closed loops in alternating
    slices (`--slices`): a machine whose speed drifts (a virtual one's does, by a third within a
    minute here) drifts under each of them alike, so their ratio holds."""
    await asyncio.sleep(1)  # idle, as after start
    for subject in subjects:
        subject.idle_rss = rss_mib(subject.pid)
    with never_collecting():  # its pauses would be the servers' time
        await _load(subjects, body, args)
    expected = args.warmup + args.deliveries + (args.open_deliveries if args.rate else 0)
    for subject in subjects:
        if subject.answered != Counter({202: expected}):
            raise SystemExit(
                f"{subject.name}: not every delivery was answered 202: {dict(subject.answered)}"
            )
    return [subject.row(args.deliveries) for subject in subjects]


async def _load(subjects: list[Subject], body: bytes, args: argparse.Namespace) -> None:
    """The round's load: a warm-up, the closed loop in slices taken in turns, the open loop."""
    for subject in subjects:
        _, _, statuses = await closed_loop(subject.url, body, args.warmup, args.concurrency)
        subject.answered += statuses
        if subject.drain is not None:
            await subject.drain()
    share, extra = divmod(args.deliveries, args.slices)
    for index in range(args.slices):
        for subject in subjects:
            await subject.closed_slice(body, share + (index < extra), args)
    for subject in subjects:
        if args.rate:
            _, latencies, statuses = await open_loop(
                subject.url, body, args.open_deliveries, args.rate
            )
            subject.answered += statuses
            subject.open_p99 = percentile(latencies, 0.99) * 1000
            if subject.drain is not None:
                await subject.drain()


async def noise_round(body: bytes, args: argparse.Namespace, core: int | None) -> list[Row]:
    """Two bare servers measured as a round measures the bare server and Arbiter: their ratio
    would be 1 on a quiet machine, and how far it strays is the noise of one round's ratio."""
    servers = [BareServer(core), BareServer(core)]
    try:
        subjects = []
        names = ("bare aiohttp + gidgethub", "the same, again")
        for name, server in zip(names, servers, strict=True):
            await server.start()
            assert server.process is not None
            subjects.append(Subject(name, server.url, server.process.pid))
        return await measure(subjects, body, args)
    finally:
        for server in servers:
            server.stop()


async def measure_round(
    body: bytes, args: argparse.Namespace, core: int | None, github: FakeGitHub, openai: FakeOpenAI
) -> list[Row]:
    """The bare server (with `--baseline`) and `arbiter serve`, both started, then measured."""
    if args.noise:
        return await noise_round(body, args, core)
    workdir = Path(tempfile.mkdtemp(prefix="arbiter-bench-"))
    store_url = args.store_url or f"sqlite+aiosqlite:///{workdir}/bench.db"
    env = {
        "ARBITER_DATABASE_URL": store_url,
        "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
        "ARBITER_GITHUB_TOKEN": TOKEN,
        "ARBITER_GITHUB_BASE_URL": github.url,
        **openai.env(),
    }
    bare = BareServer(core) if args.baseline else None
    server = PinnedServe(workdir, env, args=("--no-workers",) if args.no_workers else (), core=core)
    try:
        subjects: list[Subject] = []
        if bare is not None:
            await bare.start()
            assert bare.process is not None
            subjects.append(Subject("bare aiohttp + gidgethub", bare.url, bare.process.pid))
        # Migrated first (as an operator's `arbiter migrate` would), also on SQLite: a server
        # that migrates its own fresh file keeps Alembic's imports, 25 MiB of the idle figure.
        server.migrate()
        await server.start()
        assert server.process is not None
        name = "arbiter serve" + (" --no-workers" if args.no_workers else "")
        drain = None if args.no_workers else (lambda: queue_drained(server.url))
        subjects.append(Subject(name, server.url, server.process.pid, drain))
        return await measure(subjects, body, args)
    finally:
        server.stop()
        if bare is not None:
            bare.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _fmt(row: Row) -> str:
    open_p99 = f"{row.open_p99_ms:7.1f}" if row.open_p99_ms is not None else "      -"
    drain = f"{row.drain_s:6.2f}" if row.drain_s is not None else "     -"
    return (
        f"{row.name:32} {row.rate:7.0f} {row.cpu_us:8.0f} {row.p50_ms:6.1f} {row.p99_ms:6.1f} "
        f"{open_p99} {row.idle_rss:6.1f} {row.rss:6.1f} {drain}"
        f"\n{'':32} of the CPU µs: {row.main_us:.0f} on the event loop's thread, "
        f"{row.cpu_us - row.main_us:.0f} on its other threads and after the slices"
    )


HEADER = (
    f"{'server':32} {'del/s':>7} {'CPU µs':>8} {'p50':>6} {'p99':>6} {'open99':>7} "
    f"{'idleMB':>6} {'MiB':>6} {'drain':>6}"
)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--slices", type=int, default=6, help="the closed loop's share of each server, alternating"
    )
    parser.add_argument("--store-url", help="default: a fresh SQLite file in a temporary folder")
    parser.add_argument("--no-workers", action="store_true", help="web only (intake alone)")
    parser.add_argument("--baseline", action="store_true", help="measure the bare server too")
    parser.add_argument(
        "--noise",
        action="store_true",
        help="a second bare server in Arbiter's place: the noise of one round's ratio here",
    )
    parser.add_argument("--pin", action="store_true", help="server on core 0, client on core 1")
    parser.add_argument(
        "--rate", type=float, default=500, help="open-loop deliveries/s for its p99 (0: skip)"
    )
    parser.add_argument("--open-deliveries", type=int, default=2000)
    args = parser.parse_args()

    core = None
    if args.pin:
        if len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None:
            raise SystemExit("--pin needs two cores and taskset (util-linux)")
        os.sched_setaffinity(0, {1})
        core = 0
    body = _body()
    payload = json.loads(body)
    repo, number = payload["repository"]["full_name"], payload["number"]
    head = payload["pull_request"]["head"]["sha"]
    store = (args.store_url or "sqlite").split("://")[0].split("+")[0]
    print(
        f"{len(body)} B signed pull_request/opened; {args.deliveries} deliveries after "
        f"{args.warmup} warm-up, {args.concurrency} in flight; open loop {args.rate:g}/s; "
        f"store {store}; {'server on core 0, client on core 1' if core is not None else 'unpinned'}"
    )
    print("CPU µs = server CPU time per delivery; open99 = p99 in ms of the open loop; drain = s")
    print("until the queue is empty after the burst; idleMB = RSS at rest before the load\n")
    ratios: list[float] = []
    # The reviews the deliveries queue (one pull request's, one after another) make thousands of
    # calls in a few rounds: past GitHub's hourly 5,000 the fake answers as GitHub does, the
    # reviews are deferred an hour, and the queue never drains. Not what is measured here.
    unlimited = 10**9
    async with (
        FakeGitHub(token=TOKEN, rate_limit=unlimited) as github,
        FakeOpenAI(record=False) as openai,
    ):
        github.add_repo(repo, installation_id=None)
        github.add_pull(repo, number, files=[PullFile.added("a.py", "x = 1\n")], head_sha=head)
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}")
            print(HEADER)
            rows = await measure_round(body, args, core, github, openai)
            base, ours = (rows[0], rows[1]) if len(rows) == 2 else (None, rows[0])
            for row in rows:
                print(_fmt(row))
            if base is not None:
                ratios.append(ours.rate / base.rate)
                print(f"ratio          {ratios[-1]:.2f}× the bare server's deliveries/s\n")
    if ratios:
        print(f"ratio per round  {', '.join(f'{r:.2f}' for r in ratios)}")
        print(f"median ratio     {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
