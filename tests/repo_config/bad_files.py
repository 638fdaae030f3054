"""Bad `.arbiter.yml` files, each with what its one problem must say.

Shared by the pure tests (config.repo.resolve) and the ones over the fake GitHub (a handler
reading the file and reporting it on the pull request).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class BadFile:
    text: str
    key: str | None  # the dotted key the problem names (None: the file as a whole)
    line: int | None
    says: tuple[str, ...]  # fragments the message must hold, in this order


BAD_FILES = {
    "unknown key": BadFile(
        "profile: quiet\nreveiw:\n  max_comments: 3\n",
        "reveiw",
        2,
        ("reveiw: not a key Arbiter knows", "did you mean review?", "path_filters"),
    ),
    "wrong type": BadFile(
        "review:\n  min_severity: major\n  max_comments: ten\n",
        "review.max_comments",
        3,
        ('review.max_comments: got the text "ten"', "accepts a whole number from 0 to 100"),
    ),
    "bad glob": BadFile(
        "path_filters:\n  - src/**\n  - 'src/[z-a].py'\n",
        "path_filters[1]",
        3,
        (
            'path_filters[1]: "src/[z-a].py"',
            "not a valid glob",
            "invalid character class range: z-a",  # RE2's words
            "path_filters accepts a list of globs",
        ),
    ),
    "bad regex": BadFile(
        "auto_review:\n  base_branches:\n    - main\n    - 'release/('\n",
        "auto_review.base_branches[1]",
        4,
        (
            'auto_review.base_branches[1]: "release/("',
            "not a valid regular expression",
            "missing )",
            "accepts a list of regular expressions",
        ),
    ),
    "YAML syntax error": BadFile(
        "review:\n  max_comments: 3\n   min_severity: major\n",
        None,
        3,
        ("the YAML does not parse", "mapping values are not allowed here", "line 3, column 16"),
    ),
    "1 MB file": BadFile(
        "profile: quiet\n" + "# padding\n" * 104_857,
        None,
        None,
        ("1,048,585 bytes", "over the limit of 65,536 bytes (64 KB)", "not read"),
    ),
    "empty file": BadFile(
        "", None, None, ("the file is empty (or only comments)", "`profile: quiet`")
    ),
    "a list instead of a mapping": BadFile(
        "- profile: quiet\n- review:\n    max_comments: 3\n",
        None,
        1,
        ("the file holds a list of 2 items", "it must be a mapping of keys"),
    ),
}

# More ways to get it wrong, checked without a platform.
MORE_BAD_FILES = {
    "only comments": BadFile("# profile: quiet\n", None, None, ("the file is empty",)),
    "a scalar": BadFile("quiet\n", None, 1, ('the file holds the text "quiet"',)),
    "nested unknown key": BadFile(
        "review:\n  max_coments: 3\n",
        "review.max_coments",
        2,
        ("not a key Arbiter knows", "did you mean max_comments?", "the keys under review are"),
    ),
    "a section that is not a mapping": BadFile(
        "review: true\n",
        "review",
        1,
        ("review: got true", "a mapping with the keys max_comments, min_severity"),
    ),
    "a string for a boolean": BadFile(
        "enabled: 'no'\n", "enabled", 1, ('enabled: got the text "no"', "true or false")
    ),
    "an unknown profile": BadFile(
        "profile: loud\n",
        "profile",
        1,
        ('profile: got the text "loud"', "quiet", "balanced", "thorough"),
    ),
    "a version from the future": BadFile(
        "version: 2\n", "version", 1, ("version: got the number 2", "1 (the only version")
    ),
    "out of range": BadFile(
        "review:\n  min_confidence: 1.5\n",
        "review.min_confidence",
        2,
        ("got the number 1.5", "a number from 0 to 1"),
    ),
    "a zero cost cap (would mean no cap)": BadFile(
        "budget:\n  max_cost_per_review_usd: 0\n",
        "budget.max_cost_per_review_usd",
        2,
        ("got the number 0", "a positive number of US dollars"),
    ),
    "unquoted on as a key": BadFile(
        "profile: quiet\non: push\n",
        "true",
        2,
        ("YAML reads this key as true", "quote it"),
    ),
    "a key written twice": BadFile(
        "review:\n  summary: false\nprofile: quiet\nreview:\n  max_comments: 3\n",
        "review",
        4,
        ("review is written twice (lines 1 and 4)",),
    ),
    "path instruction without instructions": BadFile(
        "path_instructions:\n  - path: src/api/**\n",
        "path_instructions[0].instructions",
        2,
        ("path_instructions[0].instructions is missing", "text for the reviewer"),
    ),
    "an exclusion without a pattern": BadFile(
        "path_filters: ['!']\n", "path_filters[0]", 1, ("'!' needs a pattern after it",)
    ),
    "an unclosed bracket": BadFile(
        "path_filters: ['src/[abc']\n",
        "path_filters[0]",
        1,
        ("has a [ without its closing ]", "write [[] for a literal ["),
    ),
    "aliases expanding past the limit": BadFile(
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
        None,
        None,
        ("expands to more than 10,000 values",),
    ),
    "nesting deep enough to exhaust the parser": BadFile(
        "[" * 20_000 + "]" * 20_000, None, None, ("nested too deeply",)
    ),
    "two documents": BadFile(
        "profile: quiet\n---\nprofile: thorough\n",
        None,
        2,
        ("expected a single document in the stream, but found another document",),
    ),
}


def bad_file_params(table: dict[str, BadFile]) -> list[object]:
    return [pytest.param(case, id=name) for name, case in table.items()]
