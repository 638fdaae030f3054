"""The same handlers and reviewer serve GitHub and GitLab: no platform branches in them.

Everything a platform does differently lives behind the Platform protocol (platforms/); a
handler or the reviewer that asked "is this GitLab?" would be a second implementation hiding
in the shared core. This checks `handlers/`, the review core and the use cases both with a grep
and with Python's parser (which also sees `match` statements and comparisons split over lines).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

SHARED = ("handlers", "bot/core", "bot/review", "bot/conversation")
PLATFORM_NAMES = frozenset({"github", "gitlab"})
IMPLEMENTATIONS = ("platforms.github", "platforms.gitlab", "gidgethub", "gitlab")
# platforms.github_diff, platforms.gitlab_transport, …: a platform's modules, whatever their suffix
PLATFORM_MODULE = re.compile(r"^platforms\.(github|gitlab)(_\w+)?(\.|$)")
# `x.platform == …`, `platform != …`, `… == "gitlab"`, `"github" in …`
GREP = re.compile(
    r"""\bplatform\b\s*(==|!=|\bin\b|\bis\b)"""
    r"""|(==|!=)\s*["'](github|gitlab)["']"""
    r"""|["'](github|gitlab)["']\s*(==|!=|\bin\b)"""
)


def shared_sources() -> list[Path]:
    files = sorted(p for root in SHARED for p in (ROOT / root).rglob("*.py"))
    assert files, "no shared sources found: did the layout change?"
    return files


def grep(text: str) -> list[str]:
    """Lines that branch on a platform; comments and docstrings (prose) left out."""
    prose = {
        line
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        if number not in prose and GREP.search(code):
            found.append(f"{number}: {line.strip()}")
    return found


def _names_platform(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value.lower() in PLATFORM_NAMES
    if isinstance(node, ast.Attribute):
        return node.attr == "platform" or _names_platform(node.value)
    if isinstance(node, ast.Name):
        return node.id == "platform"
    return False


def parsed(text: str) -> list[str]:
    """Comparisons and matches on a platform, isinstance checks on an implementation, and
    imports of one, found by the parser."""
    found = []
    for node in ast.walk(ast.parse(text)):
        where = f"{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_names_platform(o) for o in operands) and any(
                isinstance(o, ast.Constant | ast.Set | ast.Tuple | ast.List) for o in operands
            ):
                found.append(f"{where}: comparison on a platform")
        elif isinstance(node, ast.Match) and _names_platform(node.subject):
            found.append(f"{where}: match on a platform")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            if "GitHub" in ast.unparse(node) or "GitLab" in ast.unparse(node):
                found.append(f"{where}: isinstance on a platform implementation")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
            )
            if any(
                m == i or m.startswith(f"{i}.") or PLATFORM_MODULE.match(m)
                for m in modules
                for i in IMPLEMENTATIONS
            ):
                found.append(f"{where}: imports {', '.join(modules)}")
    return found


@pytest.mark.parametrize(
    "source",
    [
        'if ctx.event.platform == "gitlab":\n    pass\n',
        'if event.platform != "github":\n    pass\n',
        'kind = "inline" if "gitlab" == name else "conversation"\n',
        'match ctx.event.platform:\n    case "gitlab":\n        pass\n',
        "if platform in (\n    'github',\n):\n    pass\n",
        "from platforms.gitlab import GitLabPlatform\n",
        "from platforms.github_diff import anchor_problem\n",
        "if isinstance(ctx.platform, GitHubPlatform):\n    pass\n",
    ],
)
def test_the_checks_catch_a_platform_branch(source: str) -> None:
    assert parsed(source), source
    if "import" not in source and "isinstance" not in source and "match" not in source:
        assert grep(source), source


def test_handlers_and_the_reviewer_do_not_branch_on_the_platform() -> None:
    problems = {
        str(path.relative_to(ROOT)): grep(text) + parsed(text)
        for path in shared_sources()
        if (text := path.read_text())
    }
    assert {path: found for path, found in problems.items() if found} == {}
