"""SQLite through the standard library's sqlite3 alone, for the paths that need none of
SQLAlchemy: intake's batches (the SQL store's hottest path) and the store of a web-only process
(`sqlite_web`), which never imports SQLAlchemy. Nothing here imports it either.

The connection settings are the ones every connection of the SQL store gets (`sql_engine` applies
them through this module too), so a plain connection and SQLAlchemy's behave alike on one file.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import queue
import sqlite3
import stat
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lz4.frame

from bot.logs import get_logger
from bot.store.base import Delivery, Enqueued, JobState, NewJob
from bot.store.revisions import VERSION_TABLE

T = TypeVar("T")
# `deliveries.event` holds this much of an event's label (a platform's `object_kind` and `action`
# are not bounded): one odd delivery must not fail those written in the same batch.
EVENT_CHARS = 100  # sa.String(100) in bot/store/schema.py
BUSY_TIMEOUT_MS = 10_000
# The WAL is reused from its start once a checkpoint has copied all of it, but SQLite keeps the
# file as large as it ever grew: a long burst of deliveries (no checkpoint completes while
# batches keep landing) left gigabytes on disk for good. With a limit, the first write after
# the next complete checkpoint truncates it back to this (intake at full speed writes some
# 25-30 MB between two checkpoints, so a steady load keeps its file as it is).
WAL_KEPT_BYTES = 64 * 1024 * 1024
# A job's payload this long or longer is kept LZ4-compressed, as a BLOB (a webhook's whole body:
# a 25 KB `pull_request` delivery takes 3 KB and 10 µs to pack). Every row of it is written to
# the WAL, copied to the database by the checkpoint, and rewritten whole by each UPDATE of its job
# (claimed, finished): at 25 KB that was a third of intake's writing. Shorter payloads stay text.
PACKED_FROM_CHARS = 2048

INSERT_DELIVERY = (
    "INSERT INTO deliveries (platform, delivery_id, event, received_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
INSERT_JOB = (
    "INSERT INTO jobs (kind, key, payload, state, attempts, max_attempts, run_at, delivery_id, "
    "created_at, updated_at) VALUES (?, NULL, ?, 'queued', 0, ?, ?, ?, ?, ?) RETURNING id"
)
JOB_COUNTS = "SELECT state, count(*) FROM jobs GROUP BY state"
SPENT_SINCE = "SELECT coalesce(sum(cost_usd), 0.0) FROM usage WHERE at >= ?"


def store_thread(name: str, *, yielding: bool = False) -> StoreThread:
    """A thread for SQLite's work (a connection's statements, checkpoints). `yielding`: one that
    does not take the core from the event loop when work is handed to it (`yield_to_the_loop`),
    for work that gathers while it waits (intake's batches) or that nobody waits for
    (checkpoints). Not for a review's reads and writes: each is on its review's way to the
    model, and a thread that waits for the next turn of the scheduler (milliseconds, when the
    other cores are busy too) instead of preempting made the worker bench's reviews reach the
    model 5-10 ms later."""
    return StoreThread(name, initializer=yield_to_the_loop if yielding else None)


class StoreThread:
    """One thread that runs what the event loop hands it, in order: `await thread.run(work,
    *args)` is `work(*args)` there, its value or its exception.

    What `loop.run_in_executor` over a one-thread ThreadPoolExecutor does, with one future
    instead of two chained ones (a concurrent.futures.Future, its lock and condition, and the
    asyncio future that mirrors it): a store call's round trip to its thread cost the two
    threads 170-200 µs of CPU that way, 110-120 here, and a review makes a dozen and a half
    (issue 20). Work handed over is run even if its caller stops waiting (it may be a write, as
    with the executor once it has begun), unless the caller was cancelled before the thread
    took it. The thread starts with its first work and ends at `shutdown` (or when the
    interpreter exits)."""

    def __init__(self, name: str, *, initializer: Callable[[], None] | None = None) -> None:
        self.name = name
        self._initializer = initializer
        self._queue: queue.SimpleQueue[_Handed | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError(f"{self.name}: cannot run work after shutdown")
        if self._thread is None:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Handed(loop, future, work, args))
        return await future

    def shutdown(self, wait: bool = True) -> None:
        """No more work; the thread ends once what it was handed is done (`wait`: this waits
        for that)."""
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            if wait and thread is not threading.current_thread():
                thread.join()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                # The thread of a ThreadPoolExecutor of one was named thus: logs and tests
                # that tell the store's threads apart by name still do.
                thread = threading.Thread(target=self._serve, name=f"{self.name}_0", daemon=True)
                thread.start()
                self._thread = thread
                _LIVE.add(self)

    def _serve(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while (handed := self._queue.get()) is not None:
            try:
                handed.run()
            except Exception as exc:  # never lose the thread: every later call would hang
                get_logger(component="store").error(
                    "store thread could not hand back a result", thread=self.name, error=str(exc)
                )


@dataclass
class _Handed:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    work: Callable[..., Any]
    args: tuple[Any, ...]

    def run(self) -> None:
        if self.future.cancelled():  # the caller stopped waiting before the thread took it
            return
        try:
            value, error = self.work(*self.args), None
        except BaseException as exc:  # the caller's to handle, as run_in_executor's
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(_settle, self.future, value, error)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


# Threads still running at exit are handed their end, and finish the work before it (as
# ThreadPoolExecutor's are): a write in flight is not cut off by the interpreter's exit.
_LIVE: weakref.WeakSet[StoreThread] = weakref.WeakSet()


@atexit.register
def _end_all() -> None:
    for thread in list(_LIVE):
        thread.shutdown(wait=True)


def yield_to_the_loop() -> None:
    """Schedule the calling thread as SCHED_BATCH (Linux): the same share of the CPU, but waking
    it does not preempt the thread that woke it.

    The event loop wakes a store thread for every batch it hands over, and the store thread
    needs the GIL the loop holds: preempted on a shared core, the loop gave the core to a thread
    that could only wait for the GIL and give it back, two context switches for nothing, about
    one and a half per delivery at intake. Left to run when the loop waits (for the batch's
    commit, among others), the thread finds the GIL free and more of the batch gathered: on one
    core, a sixth more deliveries per second for the same work. Where the kernel refuses (another
    system, a sandbox), the thread runs as it always did.
    """
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:
        get_logger(component="store").debug(
            "store thread left to the default policy", error=str(exc)
        )


def pack_payload(text: str) -> str | bytes:
    """A job's payload as SQLite keeps it: an LZ4 frame (standard, so `lz4 -d` reads one
    exported by hand) from PACKED_FROM_CHARS characters on, the text itself below."""
    if len(text) < PACKED_FROM_CHARS:
        return text
    packed: bytes = lz4.frame.compress(text.encode())
    return packed


def unpack_payload(value: str | bytes) -> str:
    """A job's payload as `pack_payload` kept it (text written by a release that did not pack
    is read as it is). A frame that cannot be unpacked becomes a message saying so instead of an
    exception: one unreadable row must not fail every claim that returns it; its job then fails
    on that message (it is not JSON) and is parked as dead with it."""
    if isinstance(value, str):
        return value
    try:
        unpacked: bytes = lz4.frame.decompress(value)
        return unpacked.decode()
    except (RuntimeError, UnicodeDecodeError) as exc:
        return f"unreadable job payload ({len(value)} bytes stored): {exc}"


def configure(connection: sqlite3.Connection, *, memory: bool) -> None:
    """The settings of every store connection: transactions begun by the store itself (so a
    writer's is `BEGIN IMMEDIATE`), WAL with checkpoints left to `sql_checkpoint` and a file
    cut back to WAL_KEPT_BYTES after a burst, a busy wait instead of an immediate "database is
    locked", foreign keys on."""
    connection.isolation_level = None
    cursor = connection.cursor()
    try:
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            # Checkpoints run in a thread of their own (sql_checkpoint), not on a commit.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.execute(f"PRAGMA journal_size_limit={WAL_KEPT_BYTES}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def immediate(conn: sqlite3.Connection, work: Callable[..., T], *args: Any) -> T:
    """`work(conn, *args)` in one `BEGIN IMMEDIATE … COMMIT` (the write lock taken first), rolled
    back whole if it fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def accept_many(
    conn: sqlite3.Connection, items: list[tuple[Delivery, NewJob]], now: float
) -> list[Enqueued]:
    """Deliveries and their jobs (none with a key: coalescing is the SQL store's), inside the
    caller's transaction: the hot path of intake, so the two statements go to the driver as
    plain SQL (its statement cache keeps them prepared); through SQLAlchemy's expression layer
    they cost several times the insert itself."""
    cursor = conn.cursor()
    results: list[Enqueued] = []
    try:
        for delivery, job in items:
            cursor.execute(
                INSERT_DELIVERY,
                (delivery.platform, delivery.delivery_id, delivery.event[:EVENT_CHARS], now),
            )
            if cursor.rowcount == 0:
                results.append(Enqueued(job_id=None, duplicate=True))
                continue
            run_at = job.run_at if job.run_at is not None else now
            cursor.execute(
                INSERT_JOB,
                (
                    job.kind,
                    pack_payload(job.payload),
                    job.max_attempts,
                    run_at,
                    job.delivery_id,
                    now,
                    now,
                ),
            )
            results.append(Enqueued(job_id=cursor.fetchone()[0]))
    finally:
        cursor.close()
    return results


def job_counts(conn: sqlite3.Connection, states: tuple[JobState, ...]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(states, 0)
    counts.update({str(state): int(n) for state, n in conn.execute(JOB_COUNTS)})
    return counts


def spent_since(conn: sqlite3.Connection, since: float) -> float:
    return float(conn.execute(SPENT_SINCE, (since,)).fetchone()[0])


def current_revision(conn: sqlite3.Connection) -> str | None:
    """The schema's revision, or None (no revision table, or more than one row in it: Alembic
    says what is wrong then)."""
    table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
    ).fetchone()
    if table is None:
        return None
    rows = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()  # noqa: S608
    return str(rows[0][0]) if len(rows) == 1 else None


def file_database(url: str) -> str | None:
    """The file a `sqlite[+driver]:///PATH` URL names, as SQLAlchemy opens it (made absolute);
    None for anything else (in memory, a URI, a query string, `~` or %-escapes: the SQL store
    reads those as it always did)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("sqlite") or not rest.startswith("/"):
        return None
    path = rest[1:]
    if not path or path == ":memory:" or any(c in path for c in "?#%~"):
        return None
    return os.path.abspath(path)


def private_database(path: Path) -> None:
    """The database holds reviewed code (the model cache) and every review: it is created 0600,
    and SQLite gives its -wal and -shm files the database's mode. A file an older release left
    readable by others is tightened, with its companions, and the log says so."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(0o600)
                get_logger(component="store").warning(
                    "database file was readable by other users; it is now 0600",
                    file=str(file),
                    mode=f"{mode:04o}",
                )
        except FileNotFoundError:
            continue
        except OSError as exc:
            get_logger(component="store").warning(
                "database file is readable by other users: make it private (chmod 600)",
                file=str(file),
                error=str(exc),
            )
