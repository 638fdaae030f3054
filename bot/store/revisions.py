"""The schema's head revision, read from the migration scripts' `revision =` and
`down_revision =` lines without Alembic or SQLAlchemy: a process on a current store (and the
web-only store, `sqlite_web`, which imports neither) knows it is current with one SELECT."""

from __future__ import annotations

import ast
import re
from pathlib import Path

VERSIONS = Path(__file__).with_name("migrations") / "versions"
VERSION_TABLE = "alembic_version"  # Alembic's default, which migrations/env.py keeps
_ASSIGNED = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.MULTILINE)


def scripted_head() -> str | None:
    """The one head of the scripts, read from their `revision = "…"` and `down_revision = …`
    lines; None when they say anything less plain (a merge, a branch), for Alembic to decide."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = {m[1]: m[2] for m in _ASSIGNED.finditer(text)}
        try:
            revision = ast.literal_eval(found["revision"])
            parent = ast.literal_eval(found["down_revision"])
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(revision, str) or not (parent is None or isinstance(parent, str)):
            return None
        revisions.add(revision)
        if parent is not None:
            parents.add(parent)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None
