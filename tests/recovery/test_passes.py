"""A background pass runs in one process at a time, every interval, whichever process it is:
the store's lease decides, a process that dies or stops hands it over, a failing run records
its error (secrets masked) and the loop goes on, a store that is down only delays it."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest
from structlog.testing import capture_logs

from bot.logs import Redactor, configure_logging, get_logger
from bot.recovery import passes
from bot.recovery.passes import PeriodicPass, RunPass, Tally
from bot.store import Store
from bot.store.sql import SQLStore
from config.settings import load_settings
from tests.conftest import FakeClock
from tests.store.faults import Outage

INTERVAL = 300.0
TOKEN = "ghp_" + "s" * 36


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLStore]:
    opened = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/passes.db", clock=clock)
    await opened.open()
    await opened.migrate()
    yield opened
    await opened.close()


MakePass = Callable[..., PeriodicPass]


@pytest.fixture
def make_pass(store: SQLStore, clock: FakeClock) -> MakePass:
    def make(
        holder: str, run: RunPass, *, on: Store | None = None, lease: float = 120.0
    ) -> PeriodicPass:
        return PeriodicPass(
            "redelivery",
            run,
            store=on or store,
            interval=lambda: INTERVAL,
            log=get_logger(component="test"),
            redactor=Redactor([TOKEN]),
            holder=holder,
            clock=clock,
            lease_seconds=lease,
        )

    return make


def counting(runs: list[str], name: str, done: int = 1) -> RunPass:
    async def run(tally: Tally) -> None:
        runs.append(name)
        tally.done += done

    return run


async def test_one_process_runs_a_due_pass_and_the_next_run_waits_an_interval(
    make_pass: MakePass, store: SQLStore, clock: FakeClock
) -> None:
    runs: list[str] = []
    first, second = make_pass("a", counting(runs, "a")), make_pass("b", counting(runs, "b"))

    assert await first.run_if_due()
    assert not await second.run_if_due()  # it ran less than an interval ago, in "a"
    clock.advance(10)
    restarted = make_pass("a2", counting(runs, "a2"))  # a process started again meanwhile
    assert not await restarted.run_if_due()
    assert await restarted._until_due() == pytest.approx(INTERVAL - 10)
    clock.advance(INTERVAL)
    assert await second.run_if_due()
    assert runs == ["a", "b"]
    (run,) = await store.pass_runs()
    assert run.total == 2 and run.summary["done"] == 1 and run.holder is None


async def test_a_failing_run_records_its_error_masked_and_the_pass_goes_on(
    make_pass: MakePass, store: SQLStore, clock: FakeClock
) -> None:
    async def broken(tally: Tally) -> None:
        tally.listed = 3
        raise RuntimeError(f"GitHub refused: bad credentials {TOKEN}")

    written = io.StringIO()
    configure_logging(load_settings(log_format="json"), stream=written)
    assert await make_pass("a", broken).run_if_due()
    (run,) = await store.pass_runs()
    assert run.summary["error"] == "RuntimeError: GitHub refused: bad credentials ***"
    assert run.summary["listed"] == 3 and run.holder is None
    assert "recovery pass failed" in written.getvalue() and TOKEN not in written.getvalue()
    clock.advance(INTERVAL + 1)
    runs: list[str] = []
    assert await make_pass("b", counting(runs, "b")).run_if_due()


async def test_a_pass_whose_lease_is_taken_over_stops(
    make_pass: MakePass, store: SQLStore, clock: FakeClock
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(tally: Tally) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stalled = make_pass("a", slow, lease=0.3)  # renews every 0.1 s of real time
    running = asyncio.create_task(stalled.run_if_due())
    await started.wait()
    clock.advance(1)  # "a" froze past its lease (by the store's clock): "b" takes over
    assert await store.acquire_pass("redelivery", "b", lease_seconds=60, last_finished_before=0)
    assert await asyncio.wait_for(running, 5)
    assert cancelled.is_set()
    (run,) = await store.pass_runs()
    assert run.holder == "b"  # "a" recorded nothing over "b"'s run


async def test_stopping_a_process_frees_its_pass_for_the_others(
    make_pass: MakePass, store: SQLStore
) -> None:
    started = asyncio.Event()

    async def slow(tally: Tally) -> None:
        started.set()
        await asyncio.Event().wait()

    stopping = make_pass("a", slow)
    stopping.start()
    await asyncio.wait_for(started.wait(), 5)
    await stopping.stop()
    runs: list[str] = []
    assert await make_pass("b", counting(runs, "b")).run_if_due()  # at once, not in 120 s
    assert runs == ["b"]


async def test_the_loop_waits_out_a_store_outage(
    make_pass: MakePass, store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passes, "STORE_RETRY_SECONDS", 0.05)
    outage = Outage(store)
    outage.begin(["acquire_pass"])
    ran = asyncio.Event()

    async def run(tally: Tally) -> None:
        ran.set()

    loop = make_pass("a", run, on=outage.as_store())
    with capture_logs() as logs:
        loop.start()
        await asyncio.sleep(0.3)
        assert not ran.is_set()
        outage.end()
        await asyncio.wait_for(ran.wait(), 5)
        await loop.stop()
    assert outage.count("acquire_pass", failed=True) >= 2
    assert any(e["event"] == "recovery pass waits for the store" for e in logs)


async def test_an_interval_of_zero_never_runs(make_pass: MakePass, store: SQLStore) -> None:
    off = PeriodicPass(
        "reconcile",
        counting([], "x"),
        store=store,
        interval=lambda: 0.0,
        log=get_logger(component="test"),
        redactor=Redactor([]),
        holder="x",
    )
    assert not await off.run_if_due()
    assert await store.pass_runs() == []


class Flaky:
    """The store, whose first `acquire_pass` fails with an error no one expected."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        self.failed = 0

    async def acquire_pass(self, *args: object, **kwargs: object) -> bool:
        if not self.failed:
            self.failed += 1
            raise RuntimeError("a bug, not an outage")
        return await self.store.acquire_pass(*args, **kwargs)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


async def test_the_loop_survives_an_unexpected_error(
    make_pass: MakePass, store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passes, "STORE_RETRY_SECONDS", 0.05)
    flaky = Flaky(store)
    ran = asyncio.Event()

    async def run(tally: Tally) -> None:
        ran.set()

    loop = make_pass("a", run, on=cast(Store, flaky))
    with capture_logs() as logs:
        loop.start()
        await asyncio.wait_for(ran.wait(), 5)
        await loop.stop()
    assert flaky.failed == 1
    assert any(e["event"] == "recovery pass could not start" for e in logs)
