from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.core.filters import NotReviewed
from bot.core.findings import DroppedFinding, Finding
from bot.core.markdown import ZWSP, neutralise
from bot.core.render import (
    SummaryFacts,
    comment_body,
    inline_comments,
    summary_markdown,
)
from platforms.base import finding_marker

FINDING = Finding(
    path="src/app.py",
    line=12,
    start_line=10,
    severity="major",
    category="bug",
    title="Ask @alice",
    body="cc @acme/security-team; mail ops@example.com; see `@decorator`",
    suggestion="@property\ndef value(self):\n    return 1",
    confidence=0.85,
    fingerprint="0123456789abcdef",
    previous_path="src/old_app.py",
)


def test_mentions_are_neutralised_outside_code_only() -> None:
    text = "Hi @bob and @org/team.\n```python\n@bob_decorator\n```\n`@inline` <!-- arbiter -->"
    assert neutralise(text) == (
        f"Hi @{ZWSP}bob and @{ZWSP}org/team.\n```python\n@bob_decorator\n```\n"
        "`@inline` &lt;!-- arbiter -->"
    )
    assert neutralise("ops@example.com") == "ops@example.com"


def test_comment_body_has_a_suggestion_block_and_the_fingerprint() -> None:
    body = comment_body(FINDING)
    assert body.startswith("🟠 **Major** · bug · **Ask @\u200balice**")
    assert f"cc @{ZWSP}acme/security-team" in body
    assert "ops@example.com" in body and "`@decorator`" in body
    # The suggestion is code: left exactly as written, decorators included.
    assert "```suggestion\n@property\ndef value(self):\n    return 1\n```" in body
    assert "confidence 85%" in body
    assert body.endswith(finding_marker("0123456789abcdef"))
    fenced = comment_body(replace(FINDING, suggestion='doc = """```x```"""'))
    assert '````suggestion\ndoc = """```x```"""\n````' in fenced
    assert "```suggestion" not in comment_body(replace(FINDING, suggestion=None))


def test_inline_comments_carry_the_anchor() -> None:
    (comment,) = inline_comments([FINDING])
    assert (comment.path, comment.line, comment.start_line, comment.side) == (
        "src/app.py",
        12,
        10,
        "RIGHT",
    )
    assert comment.previous_path == "src/old_app.py"
    assert comment.body == comment_body(FINDING)


def _facts(**changes: Any) -> SummaryFacts:
    facts = SummaryFacts(
        model="gpt-4o",
        files_changed=5,
        additions=40,
        deletions=3,
        reviewed_files=2,
        overview=["Adds a cache @carol asked for."],
        findings=[FINDING, replace(FINDING, severity="nit", line=20, title="Typo")],
        dropped=[DroppedFinding("src/app.py", 99, "major", "Ghost", "line 99 is not in the diff")],
        not_reviewed=[
            NotReviewed("assets/logo.png", "binary file"),
            NotReviewed("assets/icon.png", "binary file"),
            NotReviewed("yarn.lock", "lock file"),
            NotReviewed("src/big.py", "over the cost cap: could cost up to $0.0300", (300, 900)),
        ],
        errors=[],
        calls=3,
        cached_calls=1,
        input_tokens=12345,
        output_tokens=678,
        cost_usd=0.0375,
        priced=True,
    )
    return replace(facts, **changes)


def test_summary_reports_changes_findings_gaps_and_cost() -> None:
    text = summary_markdown(_facts())
    assert "**What changed:** 5 files, +40 −3; 2 reviewed." in text
    assert f"### Walkthrough\n\nAdds a cache @{ZWSP}carol asked for." in text
    assert "### Findings: 2" in text and "🟠 1 major · ⚪ 1 nit" in text
    assert "### Not reviewed: 4 files" in text
    assert "- **binary file** (2)\n  - `assets/`: `logo.png`, `icon.png`" in text
    assert "- **lock file** (1)\n  - `yarn.lock`" in text
    assert "`big.py` (lines 300–900)" in text
    assert "Findings left out: 1" in text and "`src/app.py` line 99: Ghost" in text
    assert "gpt-4o · 3 model calls (1 from cache) · 12,345 input + 678 output tokens" in text
    assert "$0.0375" in text
    assert "incomplete" not in text


def test_summary_names_errors_and_unknown_cost() -> None:
    text = summary_markdown(
        _facts(errors=["the model provider is down: 503"], priced=False, findings=[])
    )
    assert "### ⚠️ The review is incomplete\n\n- the model provider is down: 503" in text
    assert "### Findings: none" in text
    assert "cost unknown (no price for the model)" in text


def test_summary_stays_under_the_comment_limit() -> None:
    many = [NotReviewed(f"dir{i % 7}/file_{i:05d}.py", "over the cost cap") for i in range(20_000)]
    text = summary_markdown(_facts(not_reviewed=many), max_chars=20_000)
    assert len(text) <= 20_000
    assert "cut to fit the comment" in text
    assert text.rstrip().endswith("$0.0375</sub>")  # the bill is never cut off


def test_one_walkthrough_a_summary_said_once_and_a_line_per_reviewed_file() -> None:
    from bot.core.render import FileNote

    facts = _facts(
        overview=["Synthetic change."] * 4 + ["Adds a cache."],
        walkthrough=[
            FileNote("src/app.py", "Caches totals | per user, for @dave.", 12, 3),
            FileNote("src/big.py", "Splits the parser.", 400, 0, partial=True),
            FileNote("src/x.py", "", 1, 0),
        ],
        cache_read_tokens=1024,
    )
    text = summary_markdown(facts)
    assert text.count("Synthetic change.") == 1
    assert "### Walkthrough\n\nSynthetic change. Adds a cache.\n" in text
    assert "| File | Change |\n|---|---|\n" in text
    assert f"| `src/app.py` (+12 −3) | Caches totals \\| per user, for @{ZWSP}dave. |" in text
    assert "| `src/big.py` (+400 −0) | Splits the parser. *(partly reviewed)* |" in text
    assert "| `src/x.py` (+1 −0) | — |" in text
    assert "12,345 input (1,024 from the prompt cache)" in text
