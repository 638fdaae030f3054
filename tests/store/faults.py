"""A fault injector around a real store: the database "goes away" for the calls a test names.

`Outage(store)` passes every call through to the real store it wraps, except while a fault is
on: then the calls it names (all of them by default; or only those about some jobs) raise
StoreUnavailable before reaching the store, as they would with the database unreachable. It is
not a mock: what the store does and answers is the real store's; only its reachability is
faked. Every call is written down (name, monotonic time, whether it failed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, cast

from bot.store import Store, StoreUnavailable

# The calls that end a job's run: their first argument is the job's id.
OUTCOME_CALLS = frozenset({"complete", "retry_later", "bury", "release"})


@dataclass(frozen=True)
class Call:
    name: str
    at: float  # time.monotonic()
    failed: bool


class Outage:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[Call] = []
        self._names: Collection[str] | None = None
        self._jobs: Collection[int] | None = None
        self._on = False

    def as_store(self) -> Store:
        return cast(Store, self)

    def begin(
        self, names: Collection[str] | None = None, *, jobs: Collection[int] | None = None
    ) -> None:
        """From now on, `names` (None: every call) fail; with `jobs`, only outcome calls and
        lease renewals about those jobs do."""
        self._names, self._jobs, self._on = names, jobs, True

    def end(self) -> None:
        self._on = False

    def count(self, name: str, *, failed: bool | None = None) -> int:
        return sum(1 for c in self.calls if c.name == name and failed in (None, c.failed))

    def _fails(self, name: str, args: tuple[Any, ...]) -> bool:
        if not self._on or (self._names is not None and name not in self._names):
            return False
        if self._jobs is None:
            return True
        if name in OUTCOME_CALLS:
            return bool(args) and args[0] in self._jobs
        if name == "renew_leases":
            return any(job_id in self._jobs for job_id in args[1])  # (worker, ids, seconds)
        return False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute
        method = cast(Callable[..., Any], attribute)

        async def call(*args: Any, **kwargs: Any) -> Any:
            failed = self._fails(name, args)
            self.calls.append(Call(name, time.monotonic(), failed))
            if failed:
                raise StoreUnavailable(f"injected outage: {name}: connection refused")
            return await method(*args, **kwargs)

        return call
