"""Rows and documents of the recovery records (passes, redeliveries, repositories seen) as
records, written once for the SQL and the MongoDB store."""

from __future__ import annotations

import json
from typing import Any, cast

from bot.store.base import KnownRepository, PassRun, RedeliveryRecord
from bot.store.records import Row

REDELIVERY_STATES = ("requested", "accepted", "refused")


def summary_text(summary: dict[str, Any]) -> str:
    return json.dumps(dict(summary), sort_keys=True, separators=(",", ":"))


def to_pass_run(row: Row) -> PassRun:
    raw = row.get("summary")
    summary: dict[str, Any] = {}
    if isinstance(raw, str) and raw:
        loaded = json.loads(raw)
        summary = cast(dict[str, Any], loaded) if isinstance(loaded, dict) else {}
    return PassRun(
        name=str(row.get("name") or row.get("_id")),
        holder=row.get("holder"),
        lease_until=_float(row.get("lease_until")),
        started_at=_float(row.get("started_at")),
        finished_at=_float(row.get("finished_at")),
        summary=summary,
        total=int(row.get("total") or 0),
    )


def to_redelivery(row: Row) -> RedeliveryRecord:
    state = str(row["state"])
    if state not in REDELIVERY_STATES:
        raise ValueError(f"unknown redelivery state {state!r}")
    return RedeliveryRecord(
        platform=str(row["platform"]),
        guid=str(row["guid"]),
        source=str(row["source"]),
        attempt_id=int(row["attempt_id"]),
        attempts=int(row["attempts"]),
        state=cast(Any, state),
        requested_at=float(row["requested_at"]),
        error=row.get("error"),
    )


def to_known_repository(row: Row) -> KnownRepository:
    installation = row.get("installation_id")
    return KnownRepository(
        platform=str(row["platform"]),
        repo=str(row["repo"]),
        first_seen_at=float(row["first_seen_at"]),
        last_seen_at=float(row["last_seen_at"]),
        installation_id=int(installation) if installation is not None else None,
    )


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None
