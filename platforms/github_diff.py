"""GitHub's diffs, where a review comment may sit on them, and reviews as GitHub takes them:
pure functions.

A file of GitHub's pull request or comparison file list becomes a `FileChange`. A review comment
may sit only on a line of its file's diff, LEFT (old) or RIGHT (new), and a multi-line comment
only within one hunk; GitHub refuses the whole review otherwise, with a 422 that names no
comment. `anchor_problem` says, from the diff alone, why GitHub would refuse a comment;
`line_refusal` reads GitHub's 422 as such a refusal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast, get_args

from platforms.base import FileChange, FileStatus, InlineComment, PlatformError, PostedReview

MAX_PR_FILES = 3000  # GitHub lists at most this many files of a pull request
MAX_COMPARE_FILES = 300  # and at most this many of a comparison

_FILE_STATUSES = frozenset(get_args(FileStatus))
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def file_change_from(data: Mapping[str, Any]) -> FileChange:
    """GitHub sends no patch for binary files and for diffs too large to show; only the latter
    count added and removed lines. (An empty new file reads as binary: nothing to review.)"""
    patch = data.get("patch")
    status = data.get("status")
    changed = int(data.get("changes") or 0)
    # A pure rename or copy has neither patch nor changed lines, and is no binary file.
    binary = patch is None and changed == 0 and status not in ("renamed", "copied", "unchanged")
    return FileChange(
        path=data["filename"],
        status=cast(FileStatus, status) if status in _FILE_STATUSES else "modified",
        patch=patch,
        previous_path=data.get("previous_filename"),
        additions=int(data.get("additions") or 0),
        deletions=int(data.get("deletions") or 0),
        binary=binary,
        too_large=patch is None and changed > 0,
    )


# --- Reviews ------------------------------------------------------------------------------------


def review_payload(
    head_sha: str, comments: Sequence[InlineComment], *, summary: str | None = None
) -> dict[str, Any]:
    """A review as GitHub takes it: with a summary, a COMMENT review submitted at once;
    without, a pending review that no one else sees (a probe)."""
    payload: dict[str, Any] = {"commit_id": head_sha}
    if summary is not None:
        payload |= {"body": summary, "event": "COMMENT"}
    payload["comments"] = [review_comment_payload(comment) for comment in comments]
    return payload


def review_comment_payload(comment: InlineComment) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "path": comment.path,
        "line": comment.line,
        "side": comment.side,
        "body": comment.body,
    }
    # A one-line range is no range to GitHub: start_line must precede line.
    if comment.start_line is not None and comment.start_line != comment.line:
        payload["start_line"] = comment.start_line
        payload["start_side"] = comment.side
    return payload


# A comment's place in the list it came in, kept so dropped ones are reported in that order.
Numbered = tuple[int, InlineComment]
Dropped = tuple[int, InlineComment, str]


def posted_review(
    review: Mapping[str, Any],
    kept: Sequence[Numbered],
    dropped: Sequence[Dropped],
) -> PostedReview:
    return PostedReview(
        id=review.get("id"),
        posted=tuple(comment for _, comment in kept),
        dropped=tuple((comment, reason) for _, comment, reason in sorted(dropped, key=_first)),
        url=review.get("html_url"),
    )


def _first(item: Dropped) -> int:
    return item[0]


# --- Where GitHub lets a comment sit ------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """GitHub refused a review because a comment sits on a line outside the diff."""

    reason: str


# GitHub's words when a review comment is not on a line of the diff (the 422 names no comment).
_LINE_ERRORS = (
    "part of the diff",
    "could not be resolved",
    "same hunk",
    "diff hunk",
    "must precede the end line",
)


def line_refusal(exc: PlatformError) -> Refusal | None:
    if exc.status != 422:
        return None
    # gidgethub keeps GitHub's `errors` on the exception PlatformError was raised from.
    errors = getattr(exc.__cause__, "errors", None) or [str(exc)]
    reason = "; ".join(e if isinstance(e, str) else str(e.get("message") or e) for e in errors)
    if not any(words in reason.lower() for words in _LINE_ERRORS):
        return None
    return Refusal(reason)


@dataclass(frozen=True)
class Hunk:
    """The lines of one diff hunk a comment may sit on: LEFT (old) and RIGHT (new) numbers."""

    left: frozenset[int]
    right: frozenset[int]

    def has(self, side: str, line: int) -> bool:
        return line in (self.left if side == "LEFT" else self.right)


def diff_hunks(patch: str) -> tuple[Hunk, ...]:
    hunks: list[Hunk] = []
    left: set[int] = set()
    right: set[int] = set()
    old = new = 0
    started = False
    for line in patch.splitlines():
        header = _HUNK_HEADER.match(line)
        if header:
            if started:
                hunks.append(Hunk(frozenset(left), frozenset(right)))
            left, right, started = set(), set(), True
            old, new = int(header[1]), int(header[2])
        elif not started or line.startswith("\\"):  # "\ No newline at end of file"
            continue
        elif line.startswith("+"):
            right.add(new)
            new += 1
        elif line.startswith("-"):
            left.add(old)
            old += 1
        else:
            left.add(old)
            right.add(new)
            old, new = old + 1, new + 1
    if started:
        hunks.append(Hunk(frozenset(left), frozenset(right)))
    return tuple(hunks)


def anchor_problem(comment: InlineComment, change: FileChange | None) -> str | None:
    """Why GitHub would refuse this comment on this file's diff, or None when it would not."""
    where = f"{comment.path}:{comment.line} ({comment.side})"
    if change is None:
        return f"{comment.path} is not changed in this pull request"
    if change.patch is None:
        return f"{comment.path} has no diff to comment on (binary or too large)"
    hunk = next((h for h in diff_hunks(change.patch) if h.has(comment.side, comment.line)), None)
    if hunk is None:
        return f"{where} is not part of the diff"
    start = comment.start_line
    if start is None or start == comment.line:
        return None
    if start > comment.line:
        return f"{where}: start line {start} comes after the line"
    if not hunk.has(comment.side, start):
        return f"{where}: start line {start} is not in the same diff hunk"
    return None
