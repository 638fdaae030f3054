"""Worker throughput: how long 100 pull requests take to be reviewed with a 1 s model.

    .venv/bin/python -m bench.worker_throughput [--prs 100] [--model-seconds 1] [--jobs 10]
                                                [--store-url URL] [--worker-processes K]

Starts a fake GitHub holding N open pull requests and a fake OpenAI that answers every review
after `--model-seconds`, runs `arbiter serve` as its own process against both with
ARBITER_WORKER_MAX_JOBS=`--jobs`, sends one signed `pull_request` `opened` delivery per pull
request (after `--warmup` pull requests reviewed first, and half a second for the server to
settle), and prints the seconds until every pull request carries its final commit status (when
the fake GitHub took the last of them; the bench, which looks every 20 ms, sees it up to 20 ms
later, and prints by how much).
With `--worker-processes K` (PostgreSQL) it runs the deployment guide's layout instead:
`arbiter serve --no-workers` takes the deliveries and K `arbiter worker` processes share the
slots (`--jobs` / K each), woken by the store's notifications of queued jobs.
The ideal is N × model-seconds / jobs; the goal (issue 20) is at least 95 % of ideal (ideal /
measured), 10.5 s for the defaults. Every round starts with both processes idle for most of a
second (every slot waits for its model): where waking from idle is slow (a virtual machine),
each round pays that a few times over; `python -m bench.idle_wake` prints what one wake costs.
The fakes answer from the bench's own event loop, which collects no garbage while the clock
runs (a full collection of its heap stalled every answer in flight by 50-70 ms).

On PostgreSQL it prints how many server sessions Arbiter's processes opened (a connection pool
that closes and reopens connections under load shows here). Where the rest went is printed
from what the fakes saw: when the first round's last review
started and asked the model (the slowest slot begins that late), and per review, the time from
fetching the pull request to asking the model (before: a review claimed ahead of a free slot
waits for one in it), from the model's answer to the final status (after), and how long a
slot's model stood idle between a review's final status and the model call of the review that
took its place (refill: once the review gave its slot back, a review claimed ahead takes it
with its first steps done; else the next job's claim and first steps). "In step" is how close
together each round's model calls were: calls asked together are answered together, and the
reviews' work after them shares one event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bench.harness import never_collecting
from bench.webhooks import cpu_seconds
from tests.conftest import fixture_json, github_headers
from tests.e2e.serve import ServeProcess, WorkerProcess
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, LLMRequest, Slow, finding, review_answer

REPO = "Codertocat/Hello-World"
PAT = "ghp_" + "b" * 36
SECRET = "bench-secret"
GOAL = 0.95  # of ideal (ideal / measured), issue 20
SETTLE_SECONDS = 0.5  # between the warm-up and the clock's start


def _payload(github: FakeGitHub, number: int) -> bytes:
    payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
    payload["number"] = number
    payload["pull_request"] = github.update_pull(REPO, number)
    return json.dumps(payload).encode()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prs", type=int, default=100)
    parser.add_argument("--model-seconds", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="pull requests reviewed before the clock starts (first use: imports, tokenizer)",
    )
    parser.add_argument(
        "--store-url",
        help="default: a fresh SQLite file in a temporary folder; a PostgreSQL database given "
        "here is the bench's own: it is emptied first (cached model answers would skip calls)",
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=0,
        metavar="K",
        help="K `arbiter worker` processes beside `arbiter serve --no-workers` (PostgreSQL), "
        "--jobs / K slots each; 0 (default): the workers run inside `arbiter serve`",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an ARBITER_ setting for every Arbiter process, e.g. DATABASE_POOL_SIZE=10 "
        "(repeatable; the bench's own settings cannot be changed this way)",
    )
    parser.add_argument(
        "--trace",
        type=int,
        metavar="N",
        help="print what pull request N's review asked of the fakes, in order, with times",
    )
    args = parser.parse_args()
    apart = args.worker_processes
    if apart:
        if not args.store_url or args.store_url.startswith("sqlite"):
            raise SystemExit("--worker-processes needs a shared store: --store-url postgresql…")
        if args.jobs % apart:
            raise SystemExit(f"--jobs {args.jobs} does not split into {apart} processes")
        # Each process loads its imports and tokenizer on its first review: warm them all.
        args.warmup = max(args.warmup, 3 * apart)

    settings = {}
    for setting in args.setting:
        name, equals, value = setting.partition("=")
        if not equals or not name:
            raise SystemExit(f"--setting {setting!r}: give NAME=VALUE")
        settings["ARBITER_" + name.upper().removeprefix("ARBITER_")] = value
    workdir = Path(tempfile.mkdtemp(prefix="arbiter-throughput-"))
    store_url = args.store_url or f"sqlite+aiosqlite:///{workdir}/bench.db"
    key = AppKey.generate()
    async with (
        FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as github,
        FakeOpenAI(record=False) as openai,
    ):
        github.add_repo(REPO, installation_id=1)
        heads: dict[int, str] = {}  # timed pull requests, then the warm-up ones
        for number in range(1, args.prs + args.warmup + 1):
            head = uuid.uuid4().hex + "0" * 8
            github.add_pull(
                REPO,
                number,
                files=[PullFile.added(f"m{number}.py", "def f(x):\n    return eval(x)\n")],
                head_sha=head,
            )
            heads[number] = head
        warmup = {n: heads.pop(n) for n in range(args.prs + 1, args.prs + args.warmup + 1)}
        answer = review_answer(finding(f"m{1}.py", 2))  # same answer for all: findings vary
        asked: dict[int, float] = {}  # pull request → when the model was asked (wall clock)

        def respond(request: LLMRequest) -> Slow:
            if found := re.search(r"\bm(\d+)\.py\b", request.user):
                asked.setdefault(int(found.group(1)), time.time())
            return Slow(args.model_seconds, answer)

        openai.respond(respond)

        env = {
            **settings,
            "ARBITER_DATABASE_URL": store_url,
            "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
            "ARBITER_GITHUB_TOKEN": PAT,
            "ARBITER_GITHUB_BASE_URL": github.url,
            "ARBITER_WORKER_MAX_JOBS": str(args.jobs),
            "ARBITER_LOG_LEVEL": "WARNING",
            # The recovery passes are not what is measured: the reconcile sweep, once the
            # warm-up has made the repository known, would queue reviews of the timed pull
            # requests (open, never reviewed) before their deliveries are sent.
            "ARBITER_RECONCILE_INTERVAL_SECONDS": "0",
            "ARBITER_REDELIVERY_INTERVAL_SECONDS": "0",
            **openai.env(),
        }
        server = ServeProcess(workdir, env, args=("--no-workers",) if apart else ())
        workers = [
            WorkerProcess(workdir, {**env, "ARBITER_WORKER_MAX_JOBS": str(args.jobs // apart)})
            for _ in range(apart)
        ]
        if not store_url.startswith("sqlite"):
            server.migrate()
            await _empty(store_url)
        sessions_before = None if store_url.startswith("sqlite") else await _sessions(store_url)
        try:
            # Inside the try: a process that did start is stopped if a later one fails to.
            await server.start()
            for worker in workers:
                await worker.start()
            async with aiohttp.ClientSession() as http:
                warm_started = time.perf_counter()
                await _deliver(http, server.url, {n: _payload(github, n) for n in warmup})
                await _reviewed(github, warmup, warm_started)
                warm = time.perf_counter() - warm_started
                # A server settles its heap once after its first review (bot/heap.py: a full
                # collection, 30-50 ms of its event loop here), just after that review's final
                # status: first use, like the imports, and not what the clock measures.
                await asyncio.sleep(SETTLE_SECONDS)
                bodies = {n: _payload(github, n) for n in heads}
                load = os.getloadavg()[0]
                processes = [p.process for p in (server, *workers) if p.process is not None]
                cpu_before = sum(_cpu_seconds(p.pid) for p in processes)
                with never_collecting():  # a full collection stalled every fake answer in flight
                    started = time.perf_counter()
                    started_at = time.time()
                    await _deliver(http, server.url, bodies)
                    sent = time.perf_counter() - started
                    await _reviewed(github, heads, started)
                    seen = time.perf_counter() - started
                cpu = sum(_cpu_seconds(p.pid) for p in processes) - cpu_before
        finally:
            for worker in workers:
                worker.stop()
            server.stop()
        sessions = None
        if sessions_before is not None:
            after = await _sessions(store_url)
            # Each reading is a session of its own, counted once it ends: the first one's too.
            sessions = None if after is None else after - sessions_before - 1
        last = _last_states(github)
        states = {last[head] for head in heads.values()}
        timeline = _timeline(github, heads, asked, args.model_seconds, started_at)
        early = _early(github, heads, started_at)
        if early:
            raise SystemExit(
                f"pull requests {early[:10]} were fetched for a review before the clock started "
                "(before their deliveries were sent): this run measures nothing"
            )
        # The moment the last final status arrived, by the fake's clock (the poll is later).
        elapsed = _last_final(github, heads) - started_at
    ideal = args.prs * args.model_seconds / args.jobs
    ratio = ideal / elapsed
    print(f"store            {store_url.split('://')[0]}")
    print(f"pull requests    {args.prs}, one {args.model_seconds:g} s model call each")
    if apart:
        print(
            f"workers          {apart} `arbiter worker` processes, "
            f"ARBITER_WORKER_MAX_JOBS={args.jobs // apart} each, beside `serve --no-workers`"
        )
    else:
        print(f"workers          ARBITER_WORKER_MAX_JOBS={args.jobs}, inside `arbiter serve`")
    if warmup:
        print(f"warm-up          {len(warmup)} pull request(s) reviewed first, in {warm:.2f} s")
    print(f"load average     {load:.2f} when the clock started ({os.cpu_count()} cores)")
    print(f"deliveries sent  in {sent:.2f} s")
    print(
        f"all reviewed     in {elapsed:.2f} s (final statuses: {sorted(states)}; "
        f"seen by the bench {max(seen - elapsed, 0) * 1000:.0f} ms later)"
    )
    print(f"ideal            {ideal:.2f} s")
    print(
        f"ratio to ideal   {ratio:.1%} (ideal / measured); goal >= {GOAL:.0%}: "
        + ("met" if ratio >= GOAL else "NOT met")
    )
    if cpu >= 0:
        print(f"Arbiter CPU      {cpu:.2f} s, {cpu / args.prs * 1000:.1f} ms per pull request")
    if sessions is not None:
        # A pool that keeps its connections opens about as many as it holds at once.
        print(f"server sessions  {sessions} opened by Arbiter's processes, warm-up to stop")
    for line in _describe(timeline, args.jobs):
        print(line)
    if args.trace is not None:
        for line in _trace(github, heads.get(args.trace, ""), args.trace, asked, t0=started_at):
            print(line)
    print(
        json.dumps(
            {
                "seconds": round(elapsed, 2),
                "ideal": ideal,
                "ratio_to_ideal": round(ratio, 4),
                "goal_met": ratio >= GOAL,
                "warmup_seconds": round(warm, 2) if warmup else None,
                "server_cpu_seconds": round(cpu, 2) if cpu >= 0 else None,
                "load_average": round(load, 2),
                "worker_processes": apart,
                "server_sessions": sessions,
            }
        )
    )


async def _deliver(http: aiohttp.ClientSession, url: str, bodies: dict[int, bytes]) -> None:
    """One signed `pull_request` `opened` delivery per pull request, one after the other."""
    for number, body in bodies.items():
        headers = github_headers("pull_request", str(uuid.uuid4()), body, SECRET)
        async with http.post(f"{url}/webhooks/github", data=body, headers=headers) as response:
            if response.status != 202:
                raise SystemExit(f"delivery {number}: {response.status}")


async def _sessions(url: str) -> int | None:
    """How many sessions PostgreSQL has counted for the database at `url` (`sessions` of
    pg_stat_database, PostgreSQL 14 and later, counted as each one ends; this one's own once it
    has ended); None where the server does not count them. Read until it stops moving: a
    session's count lands as its server process exits."""
    import asyncpg

    connection = await asyncpg.connect(url.replace("+asyncpg", "", 1))
    query = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    try:
        last = await connection.fetchval(query)
        for _ in range(20):
            await asyncio.sleep(0.2)
            now = await connection.fetchval(query)
            if now == last:
                break
            last = now
    except asyncpg.UndefinedColumnError:
        return None
    finally:
        await connection.close()
    return None if last is None else int(last)


async def _empty(url: str) -> None:
    """Every table of Arbiter's in the PostgreSQL database at `url` emptied (the schema kept)."""
    import asyncpg

    connection = await asyncpg.connect(url.replace("+asyncpg", "", 1))
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " AND tablename <> 'alembic_version'"
        )
        names = ", ".join(f'"{row["tablename"]}"' for row in tables)
        if names:
            await connection.execute(f"TRUNCATE {names} RESTART IDENTITY")
    finally:
        await connection.close()


def _cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user + system), from /proc; -1 where there is none."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return -1.0


def _last_states(github: FakeGitHub) -> dict[str, str]:
    """Each head's latest commit status state."""
    return github.latest_states(REPO)


def _early(github: FakeGitHub, heads: dict[int, str], started_at: float) -> list[int]:
    """The timed pull requests a review fetched before `started_at` (the fake's clock)."""
    early = set()
    for request in github.requests_to("GET", f"/repos/{REPO}/pulls/*"):
        tail = request.path.rsplit("/", 1)[-1]
        if tail.isdigit() and int(tail) in heads and request.at < started_at:
            early.add(int(tail))
    return sorted(early)


def _last_final(github: FakeGitHub, heads: dict[int, str]) -> float:
    """When the fake took the last final (not pending) status of `heads` (its clock: the wall
    clock, as `started_at`)."""
    timed = set(heads.values())
    return max(
        request.at
        for request in github.requests_to("POST", f"/repos/{REPO}/statuses/*")
        if request.path.rsplit("/", 1)[-1] in timed and request.json().get("state") != "pending"
    )


async def _reviewed(github: FakeGitHub, heads: dict[int, str], started: float) -> None:
    """Until every head carries its final status (one read of the fake per look: the fakes
    share this process, and what the bench spends is time they cannot answer in)."""
    while True:
        last = _last_states(github)
        final = sum(1 for head in heads.values() if last.get(head, "pending") != "pending")
        if final == len(heads):
            return
        if time.perf_counter() - started > 600:
            raise SystemExit(f"only {final} of {len(heads)} reviewed after 600 s")
        await asyncio.sleep(0.02)


def _timeline(
    github: FakeGitHub,
    heads: dict[int, str],
    asked: dict[int, float],
    model_seconds: float,
    t0: float,
) -> dict[str, list[float]]:
    """Per review, from what the fakes saw (seconds since the first delivery was sent)."""
    fetched: dict[int, float] = {}
    for request in github.requests_to("GET", f"/repos/{REPO}/pulls/*"):
        if (tail := request.path.rsplit("/", 1)[-1]).isdigit():
            fetched.setdefault(int(tail), request.at)
    final: dict[int, float] = {}
    number_of = {head: n for n, head in heads.items()}
    for request in github.requests_to("POST", f"/repos/{REPO}/statuses/*"):
        pr = number_of.get(request.path.rsplit("/", 1)[-1])
        if pr is not None and request.json().get("state") != "pending":
            final[pr] = request.at
    done = [n for n in heads if n in fetched and n in asked and n in final]
    return {
        "start": sorted(fetched[n] - t0 for n in done),
        "final": sorted(final[n] - t0 for n in done),
        "asked": sorted(asked[n] - t0 for n in done),
        "before": [asked[n] - fetched[n] for n in done],
        "after": [final[n] - asked[n] - model_seconds for n in done],
    }


def _trace(
    github: FakeGitHub, head: str, number: int, asked: dict[int, float], t0: float
) -> list[str]:
    """The requests of one review (its pull request, files, head's statuses), in order."""
    mine = re.compile(rf"/(pulls|issues)/{number}(/|$)|/statuses/{head}$|/contents/")
    seen = [r for r in github.requests if head and mine.search(r.path)]
    events = [(r.at, f"{r.method:5} {r.path} -> {r.status}") for r in seen]
    if number in asked:
        events.append((asked[number], "model asked"))
    events.sort()
    return [f"trace {number:3}    {(at - t0) * 1000:8.1f} ms  {what}" for at, what in events]


def _describe(timeline: dict[str, list[float]], jobs: int) -> list[str]:
    starts, finals = timeline["start"], timeline["final"]
    if not starts:
        return []
    # The k-th model call after the first `jobs` took the slot the (k - jobs)-th review freed.
    refill = [a - f for a, f in zip(timeline["asked"][jobs:], finals, strict=False)]
    last = min(jobs, len(starts)) - 1  # the first round's last review

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        ms = sorted(v * 1000 for v in values)
        p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
        return (
            f"median {statistics.median(ms):.0f} ms, mean {statistics.fmean(ms):.0f} ms, "
            f"p90 {p90:.0f} ms, max {ms[-1]:.0f} ms"
        )

    return [
        f"first review     started {starts[0]:.2f} s after the first delivery",
        # The first round's last model call: how late the slowest slot began its ten reviews.
        f"first round      the last of its {last + 1} reviews started at {starts[last]:.2f} s, "
        f"asked the model at {timeline['asked'][last]:.2f} s",
        f"before model     {spread(timeline['before'])} (pull request fetched → model asked; "
        "with a wait for a slot)",
        f"after model      {spread(timeline['after'])} (model answered → final status)",
        f"slot refill      {spread(refill)} (final status → the next model call in its place)",
        # The slots in step: a round's model calls asked close together are answered together,
        # and what each review does next shares the event loop with the others'.
        f"in step          {spread(_round_spans(timeline['asked'], jobs))} (from the first to "
        f"the last model call of each round of {jobs})",
    ]


def _round_spans(asked: list[float], jobs: int) -> list[float]:
    """How far apart each round's model calls were: the k-th round is the k-th `jobs` calls."""
    rounds = [asked[i : i + jobs] for i in range(0, len(asked) - jobs + 1, jobs)]
    return [r[-1] - r[0] for r in rounds]


if __name__ == "__main__":
    asyncio.run(main())
