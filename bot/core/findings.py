"""Findings: the answer schema the model fills in, and the checks a finding must pass.

`ReviewAnswer` is the structured output asked of the model. `anchor()` keeps a finding only
when its file and lines are in the diff; `merge_duplicates()`, `apply_floors()` and `limit()`
then drop what repeats, what is below the severity and confidence floors, and what is over
the comment limit. Every dropped finding keeps its reason. A finding's fingerprint hashes its
file, category and the text of the lines it is anchored to, not their numbers, so the same
finding is recognised after the lines around it move.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.core.diff import DiffFile
from config.severity import SEVERITY_RANK, Category, Severity

TITLE_CHARS = 200
BODY_CHARS = 6000
FINGERPRINT_CHARS = 16
SHORT_ANCHOR = 8  # an anchor this short ("}", "") is made specific with the lines above it
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})[^\n]*\n(?P<code>.*?)\n?\1\s*$", re.DOTALL)


def _untitled(schema: dict[str, Any]) -> None:
    """Drop the "title" pydantic gives every property: tokens the model is sent for nothing
    (the system prompt says what each field holds)."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)


class FindingAnswer(BaseModel):
    # A problem on new-side lines of one file. (No docstring: it would be sent with the
    # schema on every call.)

    model_config = ConfigDict(json_schema_extra=_untitled)

    path: str
    line: int
    start_line: int | None
    severity: Severity
    category: Category
    title: str
    body: str
    suggestion: str | None
    confidence: float

    @field_validator("severity", "category", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class FileAnswer(BaseModel):
    # One file of the walkthrough: what changed in it, in one line. (No docstring: it would
    # be sent with the schema on every call.)

    model_config = ConfigDict(json_schema_extra=_untitled)

    path: str
    summary: str


class ReviewAnswer(BaseModel):
    """Report the review of these changes."""

    model_config = ConfigDict(json_schema_extra=_untitled)

    summary: str
    files: list[FileAnswer] = Field(default_factory=list)
    findings: list[FindingAnswer]


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    severity: Severity
    category: Category
    title: str
    body: str
    confidence: float
    fingerprint: str
    start_line: int | None = None
    suggestion: str | None = None
    previous_path: str | None = None  # a renamed file's old path (GitLab positions need it)

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]


@dataclass(frozen=True)
class DroppedFinding:
    path: str
    line: int
    severity: str
    title: str
    reason: str


def anchor(
    answers: Iterable[FindingAnswer], files: Mapping[str, DiffFile]
) -> tuple[list[Finding], list[DroppedFinding]]:
    """Findings whose file and lines are in the diff; the others, dropped with the reason."""
    kept: list[Finding] = []
    dropped: list[DroppedFinding] = []
    for answer in answers:
        path = _known_path(answer.path, files)
        title = " ".join(answer.title.split())[:TITLE_CHARS] or "(untitled)"
        if path is None:
            dropped.append(
                DroppedFinding(
                    answer.path, answer.line, answer.severity, title, "not a file in this review"
                )
            )
            continue
        file = files[path]
        if answer.line not in file.new_lines:
            dropped.append(
                DroppedFinding(
                    path,
                    answer.line,
                    answer.severity,
                    title,
                    f"line {answer.line} is not in the diff",
                )
            )
            continue
        start = answer.start_line
        suggestion = _unfenced(answer.suggestion)
        if start is not None and start != answer.line:
            same_hunk = file.hunk_of(start) is not None and file.hunk_of(start) is file.hunk_of(
                answer.line
            )
            if not (start < answer.line and start in file.new_lines and same_hunk):
                # The range is unusable; a suggestion meant for it would replace the wrong lines.
                start, suggestion = None, None
        if start == answer.line:
            start = None
        confidence = answer.confidence if math.isfinite(answer.confidence) else 0.0
        kept.append(
            Finding(
                path=path,
                line=answer.line,
                start_line=start,
                severity=answer.severity,
                category=answer.category,
                title=title,
                body=answer.body.strip()[:BODY_CHARS],
                suggestion=suggestion,
                confidence=min(max(confidence, 0.0), 1.0),
                fingerprint=fingerprint(file, answer.category, start or answer.line, answer.line),
                previous_path=file.previous_path,
            )
        )
    return kept, dropped


def fingerprint(file: DiffFile, category: str, first: int, last: int) -> str:
    """A hash of the file, the category and the anchored lines' text (whitespace-normalised).

    A short anchor ("}", a blank line) takes in the nearest non-blank lines above it, so that
    it still names one place in the file.
    """
    lines = file.new_lines
    anchored = [_norm(lines[n]) for n in range(first, last + 1) if n in lines]
    text = "\n".join(anchored).strip()
    above = first - 1
    while len(text) < SHORT_ANCHOR and above in lines:
        if _norm(lines[above]):
            text = f"{_norm(lines[above])}\n{text}"
        above -= 1
    material = f"{file.path}\x00{category}\x00{text}"
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT_CHARS]


def merge_duplicates(findings: Sequence[Finding]) -> tuple[list[Finding], list[DroppedFinding]]:
    """One finding per fingerprint: the most severe (then most confident) stays."""
    best: dict[str, Finding] = {}
    for finding in findings:
        current = best.get(finding.fingerprint)
        if current is None or (finding.rank, finding.confidence) > (
            current.rank,
            current.confidence,
        ):
            best[finding.fingerprint] = finding
    kept = list(best.values())
    winners = {id(f) for f in kept}
    dropped = [
        _dropped(f, f"duplicate of {best[f.fingerprint].title!r} on the same lines")
        for f in findings
        if id(f) not in winners
    ]
    return kept, dropped


def drop_known(
    findings: Sequence[Finding], known: Collection[str]
) -> tuple[list[Finding], list[DroppedFinding]]:
    """Findings not already reported (by fingerprint) on an earlier review of this PR."""
    if not known:
        return list(findings), []
    kept = [f for f in findings if f.fingerprint not in known]
    dropped = [_dropped(f, "already reported earlier") for f in findings if f.fingerprint in known]
    return kept, dropped


def apply_floors(
    findings: Sequence[Finding], *, min_severity: Severity, min_confidence: float
) -> tuple[list[Finding], list[DroppedFinding]]:
    floor = SEVERITY_RANK[min_severity]
    kept: list[Finding] = []
    dropped: list[DroppedFinding] = []
    for finding in findings:
        if finding.rank < floor:
            dropped.append(_dropped(finding, f"below the severity floor ({min_severity})"))
        elif finding.confidence < min_confidence:
            dropped.append(
                _dropped(
                    finding,
                    f"confidence {finding.confidence:.2f} below the floor ({min_confidence:.2f})",
                )
            )
        else:
            kept.append(finding)
    return kept, dropped


def limit(
    findings: Sequence[Finding], max_comments: int | None
) -> tuple[list[Finding], list[DroppedFinding]]:
    """The `max_comments` most important findings (severity, then confidence)."""
    ranked = sorted(findings, key=lambda f: (-f.rank, -f.confidence, f.path, f.line))
    if max_comments is None or len(ranked) <= max_comments:
        return ranked, []
    over = [
        _dropped(f, f"over the limit of {max_comments} comments per review")
        for f in ranked[max_comments:]
    ]
    return ranked[:max_comments], over


def in_file_order(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.path, f.line, -f.rank))


def _known_path(path: str, files: Mapping[str, DiffFile]) -> str | None:
    cleaned = path.strip().strip("`")
    for candidate in (cleaned, cleaned.removeprefix("./")):
        if candidate in files:
            return candidate
    if cleaned.startswith(("a/", "b/")) and cleaned[2:] in files:
        return cleaned[2:]
    return None


def _unfenced(suggestion: str | None) -> str | None:
    if suggestion is None:
        return None
    match = _FENCE.match(suggestion)
    text = match.group("code") if match else suggestion
    return text.rstrip("\n") if text.strip() else None


def _norm(text: str) -> str:
    return " ".join(text.split())


def _dropped(finding: Finding, reason: str) -> DroppedFinding:
    return DroppedFinding(finding.path, finding.line, finding.severity, finding.title, reason)
