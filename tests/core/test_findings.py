from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bot.core.diff import DiffFile, parse_diff
from bot.core.findings import (
    FindingAnswer,
    ReviewAnswer,
    anchor,
    apply_floors,
    drop_known,
    fingerprint,
    limit,
    merge_duplicates,
)
from tests.core.conftest import numbered, patch_of
from tests.fakes.openai import finding

BEFORE = numbered(30)
AFTER = BEFORE.replace("line 10\n", "line 10\nresult = divide(total, count)\nreturn result\n")


def _files(before: str = BEFORE, after: str = AFTER) -> dict[str, DiffFile]:
    return {f.path: f for f in parse_diff(patch_of({"calc.py": (before, after)}))}


def _answer(path: str = "calc.py", line: int = 11, **fields: Any) -> FindingAnswer:
    return FindingAnswer.model_validate(finding(path, line, **fields))


def test_findings_on_lines_of_the_diff_are_kept() -> None:
    kept, dropped = anchor([_answer(line=11), _answer(line=8, category="style")], _files())
    assert [(f.path, f.line) for f in kept] == [("calc.py", 11), ("calc.py", 8)]  # 8: context
    assert dropped == []


def test_off_diff_lines_and_unknown_files_are_dropped_and_counted() -> None:
    kept, dropped = anchor(
        [_answer(line=25), _answer(path="other.py", line=1), _answer(path="./calc.py")],
        _files(),
    )
    assert [(f.path, f.line) for f in kept] == [("calc.py", 11)]  # "./calc.py" is calc.py
    assert [(d.path, d.line, d.reason) for d in dropped] == [
        ("calc.py", 25, "line 25 is not in the diff"),
        ("other.py", 1, "not a file in this review"),
    ]


def test_a_range_must_lie_in_one_hunk_or_its_suggestion_goes() -> None:
    files = _files()
    (good,), _ = anchor([_answer(line=12, start_line=11, suggestion="x = 1\ny = 2")], files)
    assert (good.start_line, good.suggestion) == (11, "x = 1\ny = 2")
    (bad,), _ = anchor([_answer(line=12, start_line=2, suggestion="x = 1")], files)
    assert (bad.line, bad.start_line, bad.suggestion) == (12, None, None)
    (same,), _ = anchor([_answer(line=12, start_line=12, suggestion="y")], files)
    assert (same.start_line, same.suggestion) == (None, "y")


def test_answers_are_normalised_not_guessed() -> None:
    (f,), _ = anchor(
        [
            _answer(
                severity="Major",
                confidence=1.7,
                title="  Divides\nby zero  ",
                suggestion="```python\nresult = divide(total, count or 1)\n```",
            )
        ],
        _files(),
    )
    assert f.severity == "major"
    assert f.confidence == 1.0
    assert f.title == "Divides by zero"
    assert f.suggestion == "result = divide(total, count or 1)"
    with pytest.raises(ValidationError):
        _answer(severity="blocker")
    with pytest.raises(ValidationError):
        ReviewAnswer.model_validate({"summary": "x"})


def test_the_fingerprint_survives_lines_moving() -> None:
    (before,), _ = anchor([_answer(line=11)], _files())
    moved = _files("header\n" * 40 + BEFORE, "header\n" * 40 + AFTER)
    (after,), _ = anchor([_answer(line=51)], moved)
    assert after.line == before.line + 40
    assert after.fingerprint == before.fingerprint
    edited = _files(BEFORE, AFTER.replace("divide(total, count)", "divide(total, n)"))
    (changed,), _ = anchor([_answer(line=11)], edited)
    assert changed.fingerprint != before.fingerprint
    (other_kind,), _ = anchor([_answer(line=11, category="performance")], _files())
    assert other_kind.fingerprint != before.fingerprint


def test_a_short_anchor_takes_in_the_lines_above() -> None:
    before = "def a():\n    x = 1\n\ndef b():\n    y = 2\n"
    after = "def a():\n    x = 1\n}\n\ndef b():\n    y = 2\n}\n"
    (file,) = parse_diff(patch_of({"s.py": (before, after)}))
    assert file.new_lines[3] == "}" and file.new_lines[7] == "}"
    assert fingerprint(file, "bug", 3, 3) != fingerprint(file, "bug", 7, 7)


def test_duplicates_merge_into_the_most_severe() -> None:
    found, _ = anchor(
        [
            _answer(severity="minor", confidence=0.99, title="A"),
            _answer(severity="major", confidence=0.6, title="B"),
            _answer(line=12, title="C"),
        ],
        _files(),
    )
    kept, dropped = merge_duplicates(found)
    assert sorted(f.title for f in kept) == ["B", "C"]
    assert [(d.title, d.reason) for d in dropped] == [("A", "duplicate of 'B' on the same lines")]


def test_floors_limit_and_known_fingerprints() -> None:
    found, _ = anchor(
        [
            _answer(line=11, severity="nit", title="nit"),
            _answer(line=12, severity="critical", confidence=0.3, title="unsure"),
            _answer(line=8, severity="major", title="major"),
            _answer(line=9, severity="critical", title="critical"),
            _answer(line=10, severity="minor", title="minor"),
        ],
        _files(),
    )
    kept, low = apply_floors(found, min_severity="minor", min_confidence=0.5)
    assert sorted(f.title for f in kept) == ["critical", "major", "minor"]
    assert sorted(d.reason for d in low) == [
        "below the severity floor (minor)",
        "confidence 0.30 below the floor (0.50)",
    ]
    top, over = limit(kept, 2)
    assert [f.title for f in top] == ["critical", "major"]
    assert [(d.title, d.reason) for d in over] == [
        ("minor", "over the limit of 2 comments per review")
    ]
    fresh, known = drop_known(top, {top[0].fingerprint})
    assert [f.title for f in fresh] == ["major"]
    assert known[0].reason == "already reported earlier"
