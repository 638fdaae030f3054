"""The vocabulary of a finding: how severe it is and what kind of problem it names.

A leaf module: the `.arbiter.yml` schema (config/repo.py) and the review core (bot/core/)
both speak it, and it imports nothing of either.
"""

from __future__ import annotations

from typing import Literal

Severity = Literal["critical", "major", "minor", "nit"]
Category = Literal["bug", "security", "performance", "maintainability", "tests", "docs", "style"]
SEVERITIES: tuple[Severity, ...] = ("critical", "major", "minor", "nit")  # most severe first
CATEGORIES: tuple[Category, ...] = (
    "bug",
    "security",
    "performance",
    "maintainability",
    "tests",
    "docs",
    "style",
)
SEVERITY_RANK: dict[str, int] = {"critical": 3, "major": 2, "minor": 1, "nit": 0}
