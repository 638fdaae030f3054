"""Review decisions that are pure functions: the final status, counts, the budget's day."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.core.budget import seconds_to_next_utc_day, utc_day_start
from bot.core.findings import Finding
from bot.core.review import ReviewResult, Usage
from bot.review.policy import earlier_counts, final_status, severity_counts
from bot.review.request import review_job_key


def _finding(severity: str, line: int = 1) -> Finding:
    return Finding(
        path="a.py",
        line=line,
        severity=severity,  # type: ignore[arg-type]
        category="bug",
        title="t",
        body="b",
        confidence=0.9,
        fingerprint=f"fp{line}{severity}",
    )


def _result(*findings: Finding, errors: tuple[str, ...] = (), chunks: int = 1) -> ReviewResult:
    return ReviewResult(
        model="openai:gpt-4o",
        findings=findings,
        dropped=(),
        not_reviewed=(),
        reviewed_paths=("a.py",),
        usage=Usage(),
        errors=errors,
        chunks=chunks,
        chunks_reviewed=chunks - len(errors),
        overview=(),
        files_changed=1,
        additions=1,
        deletions=0,
        summary_markdown="",
        comments=(),
    )


@pytest.mark.parametrize(
    ("severities", "fail_on", "state", "words"),
    [
        ((), "none", "success", "No new findings"),
        (("minor", "critical"), "none", "success", "2 new finding(s): 1 critical, 1 minor"),
        (("minor", "critical"), "major", "failure", "1 finding(s) at or above major"),
        (("minor",), "major", "success", "1 new finding(s): 1 minor"),
        (("nit",), "nit", "failure", "at or above nit"),
    ],
)
def test_final_status(severities: tuple[str, ...], fail_on: str, state: str, words: str) -> None:
    result = _result(*(_finding(s, i) for i, s in enumerate(severities)))
    got_state, description = final_status(result, fail_on)
    assert got_state == state
    assert words in description


def test_an_incomplete_review_says_so_in_its_status() -> None:
    result = _result(_finding("minor"), errors=("the model provider is down: 503",), chunks=2)
    assert final_status(result, "none") == (
        "error",
        "Incomplete review: the model provider is down: 503",
    )


def test_counts_are_most_severe_first_without_zeros() -> None:
    findings = [_finding("nit", 1), _finding("critical", 2), _finding("nit", 3)]
    assert list(severity_counts(findings).items()) == [("critical", 1), ("nit", 2)]
    assert list(earlier_counts(["minor", "major", "minor"]).items()) == [("major", 1), ("minor", 2)]


def test_the_budget_day_is_the_utc_day() -> None:
    moment = datetime(2026, 11, 27, 22, 30, tzinfo=UTC).timestamp()
    assert utc_day_start(moment) == datetime(2026, 11, 27, tzinfo=UTC).timestamp()
    assert seconds_to_next_utc_day(moment) == 90 * 60


def test_one_queue_key_per_pull_request() -> None:
    assert review_job_key("github", "o/r", 7) == review_job_key("github", "o/r", 7)
    assert review_job_key("github", "o/r", 7) != review_job_key("gitlab", "o/r", 7)
