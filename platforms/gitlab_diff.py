"""GitLab's diffs and diff positions, as pure functions.

A GitLab file diff (`/merge_requests/:iid/diffs`, `/repository/compare`) becomes a
`FileChange`. An `InlineComment` becomes a discussion `position`: GitLab wants the merge
request version's three SHAs, both paths, and the line on each side where it exists: `new_line`
alone for an added line, `old_line` alone for a removed one, both for a context line. Any other
combination, or a line outside the diff, is refused with 400 ("line_code can't be blank").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from platforms.base import FileChange, FileStatus, InlineComment

MAX_DIFF_FILES = 1000  # GitLab's default diff limit: a merge request shows at most this many
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


@dataclass(frozen=True)
class DiffRefs:
    """A merge request version: merge base, target branch head and source branch head."""

    base_sha: str
    start_sha: str
    head_sha: str

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> DiffRefs:
        return cls(str(data["base_sha"]), str(data["start_sha"]), str(data["head_sha"]))


def file_change_from(data: Mapping[str, Any]) -> FileChange:
    """One file of GitLab's diff list. GitLab sends an empty `diff` both for a binary file and
    for one over its limits (`too_large` / `collapsed`); a pure rename has none either."""
    diff = data.get("diff") or ""
    path = str(data.get("new_path") or data.get("old_path"))
    old_path = str(data.get("old_path") or path)
    status: FileStatus = "modified"
    if data.get("new_file"):
        status = "added"
    elif data.get("deleted_file"):
        status = "removed"
    elif data.get("renamed_file"):
        status = "renamed"
    too_large = bool(data.get("too_large") or data.get("collapsed")) and not diff
    binary = not too_large and (
        diff.startswith("Binary files") or (not diff and status != "renamed")
    )
    patch = None if binary or too_large else diff
    added = removed = 0
    for line in diff.splitlines():
        if line.startswith("+"):
            added += 1
        elif line.startswith("-"):
            removed += 1
    return FileChange(
        path=path,
        status=status,
        patch=patch,
        previous_path=old_path if status == "renamed" else None,
        additions=added,
        deletions=removed,
        binary=binary,
        too_large=too_large,
    )


@dataclass(frozen=True, slots=True)
class DiffLine:
    kind: Literal["+", "-", " "]
    old: int | None
    new: int | None


def diff_lines(patch: str) -> tuple[DiffLine, ...]:
    """Every line of a diff's hunks, with its old-side and new-side numbers."""
    lines: list[DiffLine] = []
    old = new = 0
    started = False
    for text in patch.splitlines():
        header = _HUNK_HEADER.match(text)
        if header:
            old, new, started = int(header[1]), int(header[2]), True
        elif not started or text.startswith("\\"):  # "\ No newline at end of file"
            continue
        elif text.startswith("+"):
            lines.append(DiffLine("+", None, new))
            new += 1
        elif text.startswith("-"):
            lines.append(DiffLine("-", old, None))
            old += 1
        else:
            lines.append(DiffLine(" ", old, new))
            old, new = old + 1, new + 1
    return tuple(lines)


@dataclass(frozen=True)
class Placed:
    """Where GitLab will take a comment: its `position`, or why it will not."""

    position: dict[str, Any] | None
    problem: str | None = None


def place(comment: InlineComment, change: FileChange | None, refs: DiffRefs) -> Placed:
    """The discussion position for `comment` on this file's diff at `refs`.

    RIGHT comments name a new-side line, LEFT ones an old-side line (a removed line). A
    multi-line comment is anchored on its last line: GitLab's line ranges need its internal
    line codes, and one anchored line reads the same.
    """
    where = f"{comment.path}:{comment.line} ({comment.side})"
    if change is None:
        return Placed(None, f"{comment.path} is not changed in this merge request")
    if change.patch is None:
        return Placed(None, f"{comment.path} has no diff to comment on (binary or too large)")
    wanted = "new" if comment.side == "RIGHT" else "old"
    line = next(
        (ln for ln in diff_lines(change.patch) if getattr(ln, wanted) == comment.line), None
    )
    if line is None:
        return Placed(None, f"{where} is not part of the diff")
    new_path = change.path
    old_path = comment.previous_path or change.previous_path or change.path
    position: dict[str, Any] = {
        "position_type": "text",
        "base_sha": refs.base_sha,
        "start_sha": refs.start_sha,
        "head_sha": refs.head_sha,
        "old_path": old_path,
        "new_path": new_path,
    }
    if line.new is not None:
        position["new_line"] = line.new
    if line.old is not None:
        position["old_line"] = line.old
    return Placed(position)


def find_change(files: Mapping[str, FileChange], comment: InlineComment) -> FileChange | None:
    """The file a comment is about, by its new path (or, for a removed file, its old one)."""
    found = files.get(comment.path)
    if found is None and comment.previous_path:
        found = next((f for f in files.values() if f.previous_path == comment.previous_path), None)
    return found
