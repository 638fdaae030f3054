"""Decisions about a review, as pure functions: its queue key, the commit status it ends with,
the counts its summary shows, and when the daily budget comes back. (Whether to review at
all, and with which options, follows the repository's configuration: bot/repo_config.py.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import cast

from bot.reviewer.findings import SEVERITY_RANK, Finding, Severity
from bot.reviewer.review import ReviewResult
from platforms.base import StatusState

REVIEWING = "Arbiter is reviewing"


def review_job_key(platform: str, repo: str, number: int) -> str:
    """One queued review per pull request: a newer push replaces a queued one with this key."""
    return f"review:{platform}:{repo}#{number}"


def final_status(result: ReviewResult, fail_on: str) -> tuple[StatusState, str]:
    """The commit status after a review: failure when a finding reaches `fail_on`."""
    found = result.findings
    counts = severity_counts(found)
    tally = ", ".join(f"{n} {s}" for s, n in counts.items())
    worst = result.at_least(cast(Severity, fail_on)) if fail_on in SEVERITY_RANK else []
    if worst:
        return "failure", f"{len(worst)} finding(s) at or above {fail_on}: {tally}"
    if result.errors:
        # Only the last attempt posts a partial review, and says so.
        return "error", f"Incomplete review: {result.errors[0]}"
    if not result.complete:
        skipped = len({n.path for n in result.not_reviewed})
        note = f"; {skipped} file(s) not reviewed (see the summary)"
    else:
        note = ""
    if not found:
        return "success", f"No new findings{note}"
    return "success", f"{len(found)} new finding(s): {tally}{note}"


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    """Counts by severity, most severe first, zeros left out."""
    counts: Counter[str] = Counter(f.severity for f in findings)
    return {s: counts[s] for s in SEVERITY_RANK if counts[s]}


def earlier_counts(severities: Iterable[str]) -> dict[str, int]:
    """Counts by severity of findings posted by earlier reviews, most severe first."""
    counts: Counter[str] = Counter(severities)
    return {s: counts[s] for s in SEVERITY_RANK if counts[s]}


def seconds_to_next_utc_day(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    tomorrow = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - moment).total_seconds()


def utc_day_start(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
