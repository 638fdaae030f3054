"""What `arbiter review` prints: findings grouped by file, what was dropped and not reviewed
(one line per reason, however many files share it), errors once each, and the bill; or all of
it as JSON, with the inline comments and the summary as the bot would post them."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.markup import escape

from bot.core.findings import Finding
from bot.core.review import ReviewResult
from config.severity import SEVERITIES

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # terminal escapes in model text
# What the core says of the parts it skipped once a model call failed (bot/core/review.py).
_STOPPED = "the review stopped after an error: "


def print_json(result: ReviewResult, out: Console, **extra: Any) -> None:
    data = result.as_dict()
    data["comments"] = [
        {"path": c.path, "line": c.line, "start_line": c.start_line, "side": c.side, "body": c.body}
        for c in result.comments
    ]
    data.update(extra)
    out.print_json(json.dumps(data, default=str))


def print_result(result: ReviewResult, out: Console) -> None:
    """Findings grouped by file, then what was left out, then the bill."""
    by_file: dict[str, list[Finding]] = defaultdict(list)
    for finding in result.findings:
        by_file[finding.path].append(finding)
    errors = list(dict.fromkeys(result.errors))  # parallel parts fail with the same words
    for path, findings in by_file.items():
        out.print(f"[bold]{escape(path)}[/bold]")
        for f in findings:
            where = f"{f.start_line}-{f.line}" if f.start_line else str(f.line)
            out.print(
                f"  line {where}  [bold]{f.severity}[/bold]  {f.category}  "
                f"{escape(_clean(f.title))}  [dim](confidence {f.confidence:.0%})[/dim]"
            )
            for line in _clean(f.body).splitlines():
                out.print(f"      {escape(line)}")
            if f.suggestion is not None:
                out.print("      suggestion:")
                for line in _clean(f.suggestion).splitlines() or [""]:
                    out.print(f"        [green]{escape(line)}[/green]")
        out.print()
    if errors and result.chunks_reviewed == 0:
        out.print(f"[bold red]Review failed:[/bold red] {escape(errors[0])}")
        out.print()
    elif not result.findings:
        out.print("No findings." if not errors else "No findings in what was reviewed.")
        out.print()
    failed_first = result.chunks_reviewed == 0
    for error in errors[1 if failed_first else 0 :]:
        out.print(f"[bold red]Error:[/bold red] {escape(error)}")
    if errors[1 if failed_first else 0 :]:
        out.print()
    if result.dropped:
        out.print(f"[bold]Dropped findings ({len(result.dropped)}):[/bold]")
        for d in result.dropped:
            out.print(
                f"  {escape(d.path)}:{d.line}  {escape(d.reason)}  ({escape(_clean(d.title))})"
            )
        out.print()
    if result.not_reviewed:
        _print_not_reviewed(result, errors, out)
    counts = {s: 0 for s in SEVERITIES}
    for f in result.findings:
        counts[f.severity] += 1
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"
    u = result.usage
    cost = f"${u.cost_usd:.4f}" if u.priced else "cost unknown"
    cached = f" ({u.cached_calls} cached)" if u.cached_calls else ""
    out.print(
        f"{len(result.findings)} finding{'s' if len(result.findings) != 1 else ''} ({tally}) · "
        f"{escape(result.model)} · {u.calls} call{'s' if u.calls != 1 else ''}{cached} · "
        f"{u.input_tokens:,} input + {u.output_tokens:,} output tokens · {cost}"
    )


def _print_not_reviewed(result: ReviewResult, errors: list[str], out: Console) -> None:
    """One line per file when its reason is its own; a reason many files share, once."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for n in result.not_reviewed:
        reason = n.reason.removeprefix(_STOPPED)
        span = f" (lines {n.lines[0]}-{n.lines[1]})" if n.lines else ""
        by_reason[reason].append(f"{n.path}{span}")
    files = len({n.path for n in result.not_reviewed})
    out.print(f"[bold]Not reviewed ({files} file{'s' if files != 1 else ''}):[/bold]")
    for reason, where in by_reason.items():
        label = "the error above" if reason in errors else reason
        if len(where) == 1:
            out.print(f"  {escape(where[0])}: {escape(label)}")
            continue
        out.print(f"  {escape(label)} ({len(where)}):")
        for place in where:
            out.print(f"    {escape(place)}")
    out.print()


def _clean(text: str) -> str:
    return _CONTROL.sub("", text)
