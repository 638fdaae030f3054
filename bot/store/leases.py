"""Expired leases, as both stores treat them: what a job whose worker stopped renewing its lease
says, and how often a claiming worker looks for such jobs."""

from __future__ import annotations

LEASE_SWEEP_INTERVAL = 1.0
LEASE_EXPIRED = "lease expired: the worker running this job stopped before finishing"


class LeaseSweeps:
    """When each claiming worker last looked for expired leases (by worker: a worker's sweep
    spares the jobs it still holds). Leases are seconds long: looking once a second is often
    enough."""

    def __init__(self, interval: float = LEASE_SWEEP_INTERVAL) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}

    def due(self, worker_id: str, now: float) -> bool:
        """Whether this claim should sweep first; if so, it counts as done at `now`."""
        last = self._last.get(worker_id, float("-inf"))
        if now - last >= self._interval or now < last:
            self._last[worker_id] = now
            return True
        return False
