"""The pure parts of platforms/github.py: GitHub's shapes to ours, diff anchors, rate limits."""

from __future__ import annotations

import pytest

from platforms.base import FileChange, InlineComment, comment_marker
from platforms.github import permission_from, trim_description
from platforms.github_diff import (
    anchor_problem,
    diff_hunks,
    file_change_from,
    review_comment_payload,
)
from platforms.github_transport import rate_limit_wait

PATCH = (
    "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
    "@@ -20,2 +20,3 @@ def f():\n x\n+y\n z\n\\ No newline at end of file"
)


def test_diff_hunks_number_both_sides() -> None:
    first, second = diff_hunks(PATCH)

    assert (sorted(first.left), sorted(first.right)) == ([1, 2, 3], [1, 2, 3])
    assert (sorted(second.left), sorted(second.right)) == ([20, 21], [20, 21, 22])


@pytest.mark.parametrize(
    ("comment", "problem"),
    [
        (InlineComment("a.py", 2, "."), None),
        (InlineComment("a.py", 22, "."), None),
        (InlineComment("a.py", 2, ".", side="LEFT"), None),
        (InlineComment("a.py", 22, ".", side="LEFT"), "a.py:22 (LEFT) is not part of the diff"),
        (InlineComment("a.py", 10, "."), "a.py:10 (RIGHT) is not part of the diff"),
        (InlineComment("a.py", 3, ".", start_line=1), None),
        (InlineComment("a.py", 3, ".", start_line=3), None),
        (InlineComment("a.py", 21, ".", start_line=2), "start line 2 is not in the same diff hunk"),
        (InlineComment("a.py", 2, ".", start_line=3), "start line 3 comes after the line"),
        (InlineComment("b.py", 1, "."), "b.py is not changed in this pull request"),
    ],
)
def test_anchor_problem(comment: InlineComment, problem: str | None) -> None:
    change = FileChange("a.py", "modified", PATCH) if comment.path == "a.py" else None

    found = anchor_problem(comment, change)

    assert found == problem or (problem is not None and found is not None and problem in found)


def test_a_file_without_a_patch_takes_no_comment() -> None:
    binary = FileChange("logo.png", "added", None, binary=True)

    assert "binary or too large" in str(anchor_problem(InlineComment("logo.png", 1, "."), binary))


def test_review_comment_payload_sends_ranges_only_when_they_are_ranges() -> None:
    single = review_comment_payload(InlineComment("a.py", 3, "x", start_line=3))
    ranged = review_comment_payload(InlineComment("a.py", 3, "x", side="LEFT", start_line=1))

    assert single == {"path": "a.py", "line": 3, "side": "RIGHT", "body": "x"}
    assert ranged["start_line"] == 1 and ranged["start_side"] == "LEFT"


def test_file_change_from_github_file() -> None:
    renamed = file_change_from(
        {"filename": "b.py", "status": "renamed", "previous_filename": "a.py", "changes": 0}
    )
    odd = file_change_from({"filename": "c.py", "status": "something-new", "patch": "@@"})

    assert (renamed.previous_path, renamed.binary, renamed.too_large) == ("a.py", False, False)
    assert odd.status == "modified"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"permission": "admin", "role_name": "admin"}, "admin"),
        ({"permission": "write", "role_name": "maintain"}, "write"),
        ({"permission": "read", "role_name": "triage"}, "read"),
        ({"permission": "read", "role_name": "security-auditor"}, "read"),
        ({"permission": "none"}, "none"),
        ({}, "none"),
    ],
)
def test_permission_from(data: dict[str, str], expected: str) -> None:
    assert permission_from(data) == expected


def test_comment_marker_is_a_well_formed_html_comment() -> None:
    assert comment_marker("summary") == "<!-- arbiter:summary -->"
    assert comment_marker("a--b c>d") == "<!-- arbiter:a-b-c-d -->"


def test_trim_description_fits_githubs_140_characters() -> None:
    assert trim_description("  short\n text ") == "short text"
    trimmed = trim_description("word " * 100)
    assert len(trimmed) <= 140 and trimmed.endswith("…")


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (200, {"retry-after": "5"}, b"", None),
        (403, {}, b'{"message": "Resource not accessible by integration"}', None),
        (403, {"retry-after": "3"}, b"", (3.0, "secondary")),
        (429, {}, b"", (60.0, "secondary")),
        (403, {}, b'{"message": "You have exceeded a secondary rate limit."}', (60.0, "secondary")),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1030"}, b"", (30.0, "primary")),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "990"}, b"", (1.0, "primary")),
    ],
)
def test_rate_limit_wait(
    status: int, headers: dict[str, str], body: bytes, expected: tuple[float, str] | None
) -> None:
    wait = rate_limit_wait(status, headers, body, now=1000.0)

    assert (None if wait is None else (wait.seconds, wait.kind)) == expected
