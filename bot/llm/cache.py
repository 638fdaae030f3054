"""The response cache: a cachetools TTL cache in this process, in front of the store's.

Keys are a sha256 of provider, model, the answer's schema and the exact prompt, so a hit is
an answer to the very same question. The store is a shared second level (other workers,
restarts); when it fails, the cache degrades to memory only and the call goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import TYPE_CHECKING

from cachetools import TTLCache

from bot.logs import get_logger

if TYPE_CHECKING:
    from bot.store import Store

KEY_VERSION = "v1"
MEMORY_ENTRIES = 1024


def cache_key(provider: str, model: str, schema_text: str, system: str, user: str) -> str:
    """A 64-character hex key for this exact question."""
    material = json.dumps([KEY_VERSION, provider, model, schema_text, system, user])
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


class ResponseCache:
    def __init__(
        self, store: Store | None, *, ttl_seconds: float, max_entries: int = MEMORY_ENTRIES
    ) -> None:
        self.enabled = ttl_seconds > 0
        self._ttl = ttl_seconds
        self._store = store
        self._memory: TTLCache[str, str] = TTLCache(max_entries, ttl_seconds or 1)
        self._writing: set[asyncio.Task[None]] = set()  # store writes not yet done
        self._log = get_logger(component="llm.cache")

    async def get(self, key: str) -> str | None:
        if not self.enabled:
            return None
        value = self._memory.get(key)
        if value is not None or self._store is None:
            return value
        try:
            value = await self._store.cache_get(key)
        except Exception as exc:  # a cache is an optimisation: a broken store must not stop a call
            self._log.warning("store cache unavailable, using memory only", error=exc)
            return None
        if value is not None:
            self._memory[key] = value
        return value

    def put(self, key: str, value: str) -> None:
        """Keep the answer: in this process at once (the same question asked here from now on
        is a hit), and in the store behind it. The store's write is not waited for: the answer
        goes on to its caller meanwhile (a review's slot waits for each step after the model),
        and `flush` waits for the writes still under way."""
        if not self.enabled:
            return
        self._memory[key] = value
        if self._store is None:
            return
        task = asyncio.ensure_future(self._store_put(self._store, key, value))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _store_put(self, store: Store, key: str, value: str) -> None:
        try:
            await store.cache_put(key, value, ttl_seconds=self._ttl)
        except Exception as exc:
            self._log.warning("store cache unavailable, answer kept in memory only", error=exc)

    async def flush(self) -> None:
        """Wait for the store writes under way (before the store closes)."""
        while self._writing:
            await asyncio.wait(list(self._writing))

    def forget(self, key: str) -> None:
        self._memory.pop(key, None)
