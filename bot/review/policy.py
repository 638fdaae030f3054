"""Decisions about a review, as pure functions: whether the repository's configuration wants
a pull request reviewed, the review core's options under it, the commit status a review ends
with, and the counts its summary shows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import cast

from bot.core.findings import Finding
from bot.core.prompting import PathInstruction
from bot.core.review import ReviewOptions, ReviewResult
from config.patterns import PatternError, compile_regex
from config.repo import EffectiveConfig
from config.severity import SEVERITY_RANK, Severity
from platforms.base import PullRequest, StatusState

REVIEWING = "Arbiter is reviewing"


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


def review_options(
    effective: EffectiveConfig,
    *,
    known_fingerprints: frozenset[str] = frozenset(),
    max_cost_usd: float | None = None,
) -> ReviewOptions:
    """The reviewer core's options for a review under this configuration; `max_cost_usd`
    replaces the configuration's cap (e.g. with what is left of a daily budget)."""
    config = effective.config
    cap = effective.max_cost_per_review_usd if max_cost_usd is None else max_cost_usd
    instructions = config.instructions
    if config.language.lower() not in ("en", "english"):
        note = f"Write every title and comment in {config.language}."
        instructions = f"{note}\n{instructions}".strip()
    return ReviewOptions(
        model=effective.model,
        path_filters=tuple(config.path_filters),
        instructions=instructions,
        path_instructions=tuple(
            PathInstruction(entry.path, entry.instructions) for entry in config.path_instructions
        ),
        min_severity=effective.min_severity,
        min_confidence=config.review.min_confidence,
        max_comments=effective.max_comments,
        max_cost_usd=cap,  # 0 (no cap) only when the operator set none
        known_fingerprints=known_fingerprints,
    )


def skip_reason(
    effective: EffectiveConfig, pr: PullRequest, *, default_branch: str | None = None
) -> str | None:
    """Why the configuration says not to review `pr` automatically, or None to review it."""
    config = effective.config
    auto = config.auto_review
    if not config.enabled:
        return f"Arbiter is turned off here (enabled: false, {effective.sources['enabled']})"
    if not auto.enabled:
        return "automatic reviews are off (auto_review.enabled: false)"
    if pr.draft and not auto.drafts:
        return "a draft (auto_review.drafts is false)"
    default = default_branch or effective.branch or pr.default_branch
    if (
        default is not None
        and pr.base_ref != default
        and not any(_branch_matches(pattern, pr.base_ref) for pattern in auto.base_branches)
    ):
        return (
            f"its base branch {pr.base_ref} is neither the default branch ({default}) nor "
            "matched by auto_review.base_branches"
        )
    ignored = {login.casefold() for login in auto.ignore_authors}
    if pr.author.casefold() in ignored:
        return f"its author {pr.author} is in auto_review.ignore_authors"
    title = pr.title.casefold()
    keyword = next((k for k in auto.ignore_title_keywords if k.casefold() in title), None)
    if keyword is not None:
        return f"its title contains {keyword!r} (auto_review.ignore_title_keywords)"
    labels = {label.casefold() for label in pr.labels}
    excluded = [x[1:].strip() for x in auto.labels if x.startswith("!")]
    required = [x for x in auto.labels if not x.startswith("!")]
    hit = next((x for x in excluded if x.casefold() in labels), None)
    if hit is not None:
        return f"it is labelled {hit!r} (excluded by auto_review.labels)"
    if required and not any(x.casefold() in labels for x in required):
        return f"it carries none of the labels {', '.join(required)} (auto_review.labels)"
    return None


def _branch_matches(pattern: str, branch: str) -> bool:
    """In linear time (RE2); the file's check refused what RE2 cannot compile already."""
    try:
        return compile_regex(pattern).fullmatch(branch)
    except PatternError:
        return False
