"""Diff parsing: a unified diff, or the platform's per-file patches, into files and hunks.

Each line keeps its new-side line number (what a finding cites and a platform anchors an
inline comment to) and its old-side one. Parsing is unidiff's; this module only reshapes its
objects into small frozen records the rest of the reviewer can hold cheaply.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from unidiff.errors import UnidiffParseError
from unidiff.patch import Hunk as UniHunk
from unidiff.patch import PatchedFile, PatchSet

from platforms.base import FileChange, FileStatus

ADDED, REMOVED, CONTEXT = "+", "-", " "
_MOVED = frozenset({"renamed", "copied", "unchanged"})


class DiffError(ValueError):
    """The text is not a unified diff this reviewer can read."""


@dataclass(frozen=True, slots=True)
class DiffLine:
    kind: str  # "+" added, "-" removed, " " context
    text: str  # without the trailing newline
    new: int | None  # line number in the new file; None for a removed line
    old: int | None  # line number in the old file; None for an added line


@dataclass(frozen=True)
class Hunk:
    old_start: int
    old_length: int
    new_start: int
    new_length: int
    header: str  # the text after the second @@ (often the enclosing function)
    lines: tuple[DiffLine, ...]

    @property
    def heading(self) -> str:
        head = f"@@ -{self.old_start},{self.old_length} +{self.new_start},{self.new_length} @@"
        return f"{head} {self.header}" if self.header else head


@dataclass(frozen=True)
class DiffFile:
    path: str
    status: FileStatus
    hunks: tuple[Hunk, ...] = ()
    previous_path: str | None = None
    binary: bool = False
    too_large: bool = False  # the platform withheld the patch
    parse_error: str | None = None

    @property
    def additions(self) -> int:
        return sum(1 for h in self.hunks for ln in h.lines if ln.kind == ADDED)

    @property
    def deletions(self) -> int:
        return sum(1 for h in self.hunks for ln in h.lines if ln.kind == REMOVED)

    @functools.cached_property
    def new_lines(self) -> dict[int, str]:
        """New-side line number to text, for every line the diff shows on the new side
        (added and context): the lines a finding may be anchored to."""
        return {ln.new: ln.text for h in self.hunks for ln in h.lines if ln.new is not None}

    def hunk_of(self, line: int) -> Hunk | None:
        for hunk in self.hunks:
            if hunk.new_start <= line < hunk.new_start + max(hunk.new_length, 1):
                return hunk
        return None


def parse_diff(text: str) -> list[DiffFile]:
    """Every file of a unified diff (git's format, or plain `diff -u` / `--- +++` patches)."""
    try:
        patch = PatchSet(text)
    except UnidiffParseError as exc:
        raise DiffError(f"not a readable unified diff: {exc}") from None
    files = [_from_patched(pf) for pf in patch]
    if not files and text.strip():
        raise DiffError("no file changes found in the diff")
    return files


def from_file_changes(changes: Iterable[FileChange]) -> list[DiffFile]:
    """The platform's files, each with its patch (hunks only) parsed. A patch that cannot be
    parsed becomes a file with `parse_error` set, so it is reported, not lost."""
    return [_from_change(change) for change in changes]


def _from_change(change: FileChange) -> DiffFile:
    # A pure rename or copy comes without a patch: that is no withheld diff.
    moved = change.status in _MOVED and not (change.additions or change.deletions)
    base = DiffFile(
        path=change.path,
        status=change.status,
        previous_path=change.previous_path,
        binary=change.binary,
        too_large=change.too_large or (change.patch is None and not change.binary and not moved),
    )
    if change.patch is None or change.binary:
        return base
    if not change.patch.strip():
        return base  # a rename or mode change without content changes
    old = change.previous_path or change.path
    body = change.patch if change.patch.endswith("\n") else change.patch + "\n"
    try:
        patch = PatchSet(f"--- a/{old}\n+++ b/{change.path}\n{body}")
        hunks = tuple(_hunk(h) for pf in patch for h in pf)
    except UnidiffParseError as exc:
        return DiffFile(
            path=change.path,
            status=change.status,
            previous_path=change.previous_path,
            parse_error=str(exc),
        )
    return DiffFile(
        path=change.path, status=change.status, previous_path=change.previous_path, hunks=hunks
    )


def _from_patched(pf: PatchedFile) -> DiffFile:
    path = _clean_path(pf.path)
    previous: str | None = None
    status: FileStatus
    if pf.is_added_file:
        status = "added"
    elif pf.is_removed_file:
        status = "removed"
        path = _clean_path(pf.source_file)
    elif pf.is_rename:
        status = "renamed"
        previous = _clean_path(pf.source_file)
    else:
        status = "modified"
    return DiffFile(
        path=path,
        status=status,
        previous_path=previous,
        binary=bool(pf.is_binary_file),
        hunks=tuple(_hunk(h) for h in pf),
    )


def _hunk(h: UniHunk) -> Hunk:
    lines = tuple(
        DiffLine(
            kind=ln.line_type,
            text=ln.value.rstrip("\r\n"),
            new=ln.target_line_no,
            old=ln.source_line_no,
        )
        for ln in h
        if ln.line_type in (ADDED, REMOVED, CONTEXT)
    )
    return Hunk(
        old_start=h.source_start,
        old_length=h.source_length,
        new_start=h.target_start,
        new_length=h.target_length,
        header=h.section_header.strip(),
        lines=lines,
    )


def _clean_path(raw: str) -> str:
    path = raw
    if len(path) >= 2 and path[0] == '"' and path[-1] == '"':
        path = path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        path = path.encode("latin-1", "ignore").decode("utf-8", "replace")
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return path


def changed_lines(files: Sequence[DiffFile]) -> int:
    """Added plus removed lines across `files`."""
    return sum(f.additions + f.deletions for f in files)
