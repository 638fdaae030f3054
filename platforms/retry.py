"""What both platforms' HTTP clients share: which answers are worth retrying, how long to back
off, how to read a wait out of a header, and the header that carries the delivery id."""

from __future__ import annotations

DELIVERY_HEADER = "X-Arbiter-Delivery"  # so the platform's request logs can be matched to ours
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


def backoff(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds before retry number `failures` (1-based): base·2^(failures-1), at most `cap`."""
    return float(min(base * 2 ** (failures - 1), cap))


def header_seconds(value: str | None) -> float | None:
    """A header's number of seconds (Retry-After, a reset time), or None when absent or not one."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
