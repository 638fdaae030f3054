"""Rendering: inline comment bodies and the review summary, in GitHub/GitLab Markdown.

Everything the model or an author wrote is neutralised (bot/core/markdown.py) before it is
posted, paths are code spans, and each whole comment gets the last pass (`defused`); code
spans, fenced blocks and suggestions are left exactly as written.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.core.filters import NotReviewed
from bot.core.findings import DroppedFinding, Finding
from bot.core.markdown import code, defused, neutralise, suggestion_block, table_cell
from config.severity import SEVERITIES
from platforms.base import InlineComment, finding_marker

SUMMARY_CHARS = 60_000  # GitHub refuses comments over 65,536 characters
SEVERITY_MARK = {"critical": "🔴", "major": "🟠", "minor": "🟡", "nit": "⚪"}
OVERVIEW_CHARS = 1200
CUT_NOTE = "… (cut to fit the comment; the full list is in the review record)"


def comment_body(finding: Finding) -> str:
    """The inline comment for one finding."""
    mark = SEVERITY_MARK.get(finding.severity, "")
    parts = [
        f"{mark} **{finding.severity.capitalize()}** · {finding.category} · "
        f"**{_line(finding.title)}**",
        "",
        neutralise(finding.body),
    ]
    if finding.suggestion is not None:
        parts += ["", suggestion_block(finding.suggestion)]
    parts += [
        "",
        f"<sub>confidence {finding.confidence:.0%}</sub>",
    ]
    return defused("\n".join(parts)) + "\n" + finding_marker(finding.fingerprint)


def inline_comments(findings: Sequence[Finding]) -> list[InlineComment]:
    return [
        InlineComment(
            path=f.path,
            line=f.line,
            body=comment_body(f),
            start_line=f.start_line,
            previous_path=f.previous_path,
        )
        for f in findings
    ]


@dataclass(frozen=True)
class FileNote:
    """One row of the walkthrough: a reviewed file and the model's line on what changed."""

    path: str
    note: str
    additions: int = 0
    deletions: int = 0
    partial: bool = False  # part of its diff was left out (listed under Not reviewed)


@dataclass(frozen=True)
class SummaryFacts:
    """What the summary reports, gathered by the review."""

    model: str
    files_changed: int
    additions: int
    deletions: int
    reviewed_files: int
    overview: Sequence[str]  # the model's own summaries, one per chunk
    findings: Sequence[Finding]
    dropped: Sequence[DroppedFinding]
    not_reviewed: Sequence[NotReviewed]
    errors: Sequence[str]
    calls: int
    cached_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    priced: bool
    # Findings posted on this pull request by earlier reviews, by severity: still counted.
    earlier: Mapping[str, int] = field(default_factory=dict)
    walkthrough: Sequence[FileNote] = ()  # the reviewed files, one line each
    cache_read_tokens: int = 0  # input billed at the prompt cache's price


def summary_markdown(facts: SummaryFacts, *, max_chars: int = SUMMARY_CHARS) -> str:
    """The review summary: what changed, findings by severity, what was not reviewed and why,
    tokens and cost. Lists are cut (and say so) only to stay under `max_chars`."""
    head: list[str] = ["## Arbiter review", ""]
    overview = overall_summary(facts.overview)
    if overview:
        head += ["### Walkthrough", "", _line(overview), ""]
    changed = (
        f"**What changed:** {facts.files_changed} file{_s(facts.files_changed)}, "
        f"+{facts.additions} −{facts.deletions}; {facts.reviewed_files} reviewed."
    )
    head += [changed, ""]

    counts = Counter(f.severity for f in facts.findings)
    if facts.findings:
        tally = " · ".join(
            f"{SEVERITY_MARK[s]} {counts[s]} {s}" for s in SEVERITIES if counts.get(s)
        )
        head += [f"### Findings: {len(facts.findings)}", "", tally, ""]
    else:
        head += ["### Findings: none", ""]
    earlier = {s: n for s, n in facts.earlier.items() if n}
    if earlier:
        tally = " · ".join(
            f"{SEVERITY_MARK[s]} {earlier[s]} {s}" for s in SEVERITIES if s in earlier
        )
        total = sum(earlier.values())
        head += [f"Also on this pull request from earlier reviews: {total} ({tally}).", ""]

    if facts.errors:
        head += ["### ⚠️ The review is incomplete", ""]
        head += [f"- {_line(error)}" for error in dict.fromkeys(facts.errors)]
        head.append("")

    footer = [
        "",
        f"<sub>{_usage_line(facts)}</sub>",
    ]

    sections: list[list[str]] = []
    if facts.walkthrough:
        sections.append(_walkthrough_table(facts.walkthrough))
    if facts.findings:
        lines = ["<details><summary>Findings by file</summary>", ""]
        for f in facts.findings:
            where = f"{f.start_line}–{f.line}" if f.start_line else str(f.line)
            lines.append(
                f"- {SEVERITY_MARK[f.severity]} {code(f.path)} line {where}: {_line(f.title)}"
            )
        lines += ["", "</details>", ""]
        sections.append(lines)
    if facts.not_reviewed:
        sections.append(_not_reviewed_section(facts.not_reviewed))
    if facts.dropped:
        sections.append(_dropped_section(facts.dropped))

    text = "\n".join(head)
    tail = "\n".join(footer)
    for section in sections:
        block = "\n".join(section)
        room = max_chars - len(text) - len(tail) - 4  # the joining newlines
        if len(block) <= room:
            text += "\n" + block
        elif room > len(CUT_NOTE):
            text += "\n" + _cut(section, room)
        else:
            break
    return defused((text.rstrip("\n") + "\n" + tail).strip() + "\n")


def overall_summary(summaries: Sequence[str], *, max_chars: int = OVERVIEW_CHARS) -> str:
    """One paragraph from the chunks' summaries: each said once, in review order."""
    said = dict.fromkeys(" ".join(t.split()) for t in summaries if t.strip())
    text = " ".join(said)
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0] + " …"
    return text


def _walkthrough_table(notes: Sequence[FileNote]) -> list[str]:
    """The reviewed files, a line each: CodeRabbit's table of changes."""
    lines = ["| File | Change |", "|---|---|"]
    for n in notes:
        counts = f" (+{n.additions} −{n.deletions})" if n.additions or n.deletions else ""
        note = _line(n.note) or "—"
        if n.partial:
            note += " *(partly reviewed)*"
        lines.append(f"| {table_cell(code(n.path))}{counts} | {table_cell(note)} |")
    lines.append("")
    return lines


def _not_reviewed_section(items: Sequence[NotReviewed]) -> list[str]:
    """Grouped by reason (its headline, before any ": details"), then by directory, so
    thousands of files still fit a comment."""
    by_reason: dict[str, list[NotReviewed]] = defaultdict(list)
    for item in items:
        by_reason[item.reason.split(": ", 1)[0]].append(item)
    files = len({item.path for item in items})
    lines = [f"### Not reviewed: {files} file{_s(files)}", ""]
    for reason, group in by_reason.items():
        lines.append(f"- **{_line(reason)}** ({len(group)})")
        by_dir: dict[str, list[str]] = defaultdict(list)
        for i in group:
            directory, _, name = i.path.rpartition("/")
            span = f" (lines {i.lines[0]}–{i.lines[1]})" if i.lines else ""
            by_dir[directory].append(code(name) + span)
        for directory, names in by_dir.items():
            where = code(directory + "/") + ": " if directory else ""
            lines.append(f"  - {where}{', '.join(names)}")
    lines.append("")
    return lines


def _dropped_section(items: Sequence[DroppedFinding]) -> list[str]:
    reasons = Counter(_reason_kind(d.reason) for d in items)
    lines = [
        f"<details><summary>Findings left out: {len(items)}</summary>",
        "",
    ]
    lines += [f"- {_line(kind)}: {n}" for kind, n in reasons.most_common()]
    lines.append("")
    for d in items:
        lines.append(f"- {code(d.path)} line {d.line}: {_line(d.title)} ({_line(d.reason)})")
    lines += ["", "</details>", ""]
    return lines


def _reason_kind(reason: str) -> str:
    if reason.startswith("line ") and reason.endswith("is not in the diff"):
        return "not on a line of the diff"
    if reason.startswith("duplicate of"):
        return "duplicates"
    if reason.startswith("confidence"):
        return "below the confidence floor"
    return reason


def _cut(section: list[str], room: int) -> str:
    """As much of a section as fits in `room` characters, cutting a long list at an item."""
    out: list[str] = []
    used = 0
    for line in section:
        if used + len(line) + 1 + len(CUT_NOTE) <= room:
            out.append(line)
            used += len(line) + 1
            continue
        left = room - used - len(CUT_NOTE) - 4
        if left > 40 and ", " in line[:left]:
            out.append(line[:left].rsplit(", ", 1)[0] + ", …")
        out.append(CUT_NOTE)
        break
    return "\n".join(out)


def _usage_line(facts: SummaryFacts) -> str:
    calls = f"{facts.calls} model call{_s(facts.calls)}"
    if facts.cached_calls:
        calls += f" ({facts.cached_calls} from cache)"
    cost = f"${facts.cost_usd:.4f}" if facts.priced else "cost unknown (no price for the model)"
    cached = (
        f" ({facts.cache_read_tokens:,} from the prompt cache)" if facts.cache_read_tokens else ""
    )
    return (
        f"{facts.model} · {calls} · {facts.input_tokens:,} input{cached} + "
        f"{facts.output_tokens:,} output tokens · {cost}"
    )


def _line(text: str) -> str:
    """Author- or model-written text on one line of a comment (a title, a reason)."""
    return neutralise(" ".join(text.split()))


def _s(n: int) -> str:
    return "" if n == 1 else "s"
