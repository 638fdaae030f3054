"""SQLite's WAL checkpoints, in a thread of their own instead of on a commit.

By default SQLite checkpoints on the commit that takes the WAL past 1,000 pages: that commit
copies the pages into the database file and syncs both before it returns, and every delivery
waiting on it waits too (the p99 of intake). The store's connections turn that off
(`wal_autocheckpoint=0`), and this moves the WAL into the database every `interval` seconds
when something was written, with a PASSIVE checkpoint on a connection of its own (it never
blocks a writer or a reader). The WAL is the durable record either way: a process killed
between checkpoints loses nothing, and the next one to open the database checkpoints it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3

from bot.logs import get_logger
from bot.store.sqlite_plain import store_thread

CHECKPOINT_SECONDS = 0.5


class Checkpointer:
    def __init__(self, database: str, *, uri: bool = False, interval: float = CHECKPOINT_SECONDS):
        self._database = database if uri else os.path.expanduser(database)
        self._uri = uri
        self._interval = interval
        self._written = False
        self._thread = store_thread("arbiter-sqlite-checkpoint", yielding=True)
        self._connection: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sqlite-checkpoint")

    def written(self) -> None:
        """Something may have been written: the next turn checkpoints."""
        self._written = True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._checkpoint_now()
        await self._thread.run(self._disconnect)
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._written:
                self._written = False
                await self._checkpoint_now()

    async def _checkpoint_now(self) -> None:
        try:
            await self._thread.run(self._checkpoint)
        except sqlite3.Error as exc:
            # Nothing is lost (the WAL holds every commit) and the next turn tries again; say
            # so once, not twice a second.
            self._written = True
            if not self._failing:
                get_logger(component="store").warning("SQLite checkpoint failed", error=str(exc))
            self._failing = True
        else:
            self._failing = False

    def _checkpoint(self) -> None:
        if self._connection is None:
            self._connection = sqlite3.connect(
                self._database, uri=self._uri, isolation_level=None, check_same_thread=False
            )
            self._connection.execute("PRAGMA busy_timeout=10000")
        self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
