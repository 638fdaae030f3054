"""The bad-input corpus through `arbiter serve`: no 5xx, nothing stored, bounded memory, live.

One server (default limits, SQLite) takes a burst of 40 concurrent unsigned 24 MiB bodies, then
every case of tests/bad_input.py, while a process of its own polls `/health`. Afterwards: no
answer was ≥ 500, each case got the answer it must, the store holds the controls and nothing
else, the burst did not take the memory of the bodies it was sent, and `/health` always
answered within a second.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from bot.store.sql import SQLStore
from tests.bad_input import MIB, Case, build_corpus
from tests.conftest import ROOT
from tests.e2e.serve import ServeProcess
from tests.rawhttp import Answer, chunked, exchange, request_bytes

pytestmark = pytest.mark.e2e

SECRET = "corpus-webhook-secret"
TOKEN = "corpus-gitlab-token"
HEALTH_BOUND = 1.0  # seconds: a liveness bound (GitHub gives a delivery 10 s), not a benchmark
BURST = 40
BURST_BODY = 24 * MIB
# Reading 40 bodies of 24 MiB whole takes 960 MiB; a bounded server takes its budget (64 MiB by
# default) plus buffers. A third of the whole is generous and still catches whole-body reading.
RSS_BOUND = 320 * MIB
CONCURRENCY = 6


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _reset_peak(pid: int) -> bool:
    """Restart VmHWM from the current RSS (Linux ≥ 4.0), so the peak is the burst's own."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class HealthPoller:
    """`/health` polled from its own process for as long as the block runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lines: list[str] = []
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> HealthPoller:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.health_poller", self.url, "0.05"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._process is not None
        out, _ = self._process.communicate("", timeout=60)
        self.lines = out.splitlines()

    @property
    def latencies(self) -> list[float]:
        return [float(line.split()[1]) for line in self.lines]

    def slowest(self, since: float, until: float) -> float:
        """The slowest poll that started in [since, until)."""
        polls = [line.split() for line in self.lines]
        return max((float(p[1]) for p in polls if since <= float(p[0]) < until), default=0.0)

    @property
    def failures(self) -> list[str]:
        return [line for line in self.lines if line.split()[2] != "200"]


async def _burst(server: ServeProcess) -> tuple[Counter[int | None], dict[str, int]]:
    """40 concurrent unsigned 24 MiB bodies (half with a Content-Length, half chunked) and 10
    GitLab ones with a wrong token; the answers, and the server's memory around them."""
    pid = server.process.pid if server.process else 0
    body = b"x" * BURST_BODY
    framed = chunked(body, size=256 * 1024)
    heads: list[tuple[bytes, bytes]] = []
    for i in range(BURST):
        headers = [
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", f"burst-{i}"),
            ("X-Hub-Signature-256", "sha256=" + f"{i:064x}"),
        ]
        if i % 2:
            head = request_bytes("/webhooks/github", headers, length=None, chunk=False)
            head = head.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            heads.append((head, framed))
        else:
            heads.append((request_bytes("/webhooks/github", headers, length=len(body)), body))
    for _ in range(10):
        headers = [("X-Gitlab-Event", "Merge Request Hook"), ("X-Gitlab-Token", "wrong")]
        heads.append((request_bytes("/webhooks/gitlab", headers, length=len(body)), body))
    reset = _reset_peak(pid)
    before = _status(pid)
    answers = await asyncio.gather(
        *(exchange("127.0.0.1", server.port, [head, rest]) for head, rest in heads)
    )
    after = _status(pid)
    figures = {
        "rss_before": before["VmRSS"],
        "rss_after": after["VmRSS"],
        "peak": after["VmHWM"] if reset else max(after["VmRSS"], before["VmRSS"]),
    }
    return Counter(a.status if a else None for a in answers), figures


async def _run(corpus: list[Case], server: ServeProcess) -> list[Answer | None]:
    """Every case: the small ones a few at a time, then the large or compressed ones in turn."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(case: Case) -> Answer | None:
        async with gate:
            return await exchange(
                "127.0.0.1", server.port, case.request, half_close=case.half_close, timeout=60
            )

    answers: dict[int, Answer | None] = {}
    small = [i for i, case in enumerate(corpus) if not case.alone]
    for i, answer in zip(
        small, await asyncio.gather(*(one(corpus[i]) for i in small)), strict=True
    ):
        answers[i] = answer
    for i, case in enumerate(corpus):
        if case.alone:
            answers[i] = await one(case)
    return [answers[i] for i in range(len(corpus))]


def _check(case: Case, answer: Answer | None) -> str | None:
    """What is wrong with this answer to this case, if anything."""
    if answer is None:
        return None if case.expect is None else "no answer"
    if answer.status >= 500:
        return f"answered {answer.status}: {answer.body[:200]!r}"
    if case.expect is not None and answer.status != case.expect:
        return f"answered {answer.status} (expected {case.expect}): {answer.body[:200]!r}"
    if case.expect is None and not 400 <= answer.status < 500:
        return f"answered {answer.status} (expected a 4xx)"
    if case.json_reason and not case.accepted:
        try:
            reason = answer.json()["error"]
        except (ValueError, KeyError, TypeError):
            return f"no JSON reason: {answer.body[:200]!r}"
        if not isinstance(reason, str) or not reason:
            return f"an empty reason: {answer.body[:200]!r}"
    return None


async def _stored(tmp_path: Path, corpus: list[Case]) -> tuple[set[str], list[str], int]:
    """Event jobs' delivery ids, rejected cases whose delivery is recorded, all deliveries."""
    url = f"sqlite+aiosqlite:///{tmp_path}/corpus.db"
    store = SQLStore(url)
    await store.open()
    try:
        jobs = {job.delivery_id or "" for job in await store.list_jobs(limit=100_000)}
        seen = [
            case.name
            for case in corpus
            if case.delivery
            and not case.accepted
            and await store.seen_delivery(case.platform, case.delivery)
        ]
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "corpus.db") as db:
        (deliveries,) = db.execute("SELECT count(*) FROM deliveries").fetchone()
    return jobs, seen, int(deliveries)


async def test_the_bad_input_corpus(tmp_path: Path) -> None:
    corpus = build_corpus(SECRET, TOKEN)
    platforms = Counter(case.platform for case in corpus)
    assert len(corpus) >= 200 and min(platforms.values()) >= 60, platforms
    env = {
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/corpus.db",
        "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
        "ARBITER_GITHUB_TOKEN": "ghp_corpus_not_used",
        "ARBITER_GITLAB_WEBHOOK_TOKEN": TOKEN,
        "ARBITER_GITLAB_TOKEN": "glpat-corpus-not-used",
        "ARBITER_GITHUB_BASE_URL": "http://127.0.0.1:9",
        "ARBITER_GITLAB_BASE_URL": "http://127.0.0.1:9",
        "ARBITER_LOG_LEVEL": "WARNING",
    }
    server = ServeProcess(tmp_path, env, args=("--no-workers",))
    await server.start()
    try:
        with HealthPoller(server.url) as poller:
            started = time.time()
            burst, memory = await _burst(server)
            burst_done = time.time()
            answers = await _run(corpus, server)
            await asyncio.sleep(0.5)  # a last poll after the final answer
    finally:
        with suppress(Exception):
            server.stop()

    problems = [
        f"{case.name}: {problem}"
        for case, answer in zip(corpus, answers, strict=True)
        if (problem := _check(case, answer))
    ]
    statuses = Counter(a.status if a else None for a in answers)
    growth = memory["peak"] - memory["rss_before"]
    print(f"\ncorpus: {len(corpus)} cases {dict(platforms)}, answers {dict(statuses)}")
    print(
        f"burst: answers {dict(burst)}, memory { ({k: v // MIB for k, v in memory.items()}) } MiB"
    )
    print(
        f"health: {len(poller.latencies)} polls, slowest {max(poller.latencies):.3f} s "
        f"(burst {poller.slowest(started, burst_done):.3f} s, "
        f"corpus {poller.slowest(burst_done, time.time()):.3f} s)"
    )

    assert not problems, "\n".join(problems)
    assert not any(status is not None and status >= 500 for status in burst), burst
    assert set(burst) <= {401, 429, None}, burst
    assert growth < RSS_BOUND, f"the burst took {growth // MIB} MiB (bound {RSS_BOUND // MIB})"
    assert not poller.failures, poller.failures[:10]
    assert max(poller.latencies) < HEALTH_BOUND, sorted(poller.latencies)[-5:]
    assert len(poller.latencies) >= 10

    jobs, seen, deliveries = await _stored(tmp_path, corpus)
    controls = {case.delivery for case in corpus if case.accepted}
    assert jobs == controls
    assert seen == []
    assert deliveries == len(controls)
