"""The layout's rules, read from the source with `ast`: no import cycle among the project's
modules, `config/` below `bot/`, and a pure review core (bot/core/) that reaches no context,
store, worker, platform client, web framework or database driver, directly or through another
module."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("bot", "config", "handlers", "platforms", "prompts")
CORE = "bot.core"
# What the pure core must not load: the Context, the store, the worker, the platform clients
# (platforms.base, the shared data types, is fine), HTTP and database libraries.
FORBIDDEN_IN_CORE = (
    "bot.context",
    "bot.store",
    "bot.worker",
    "bot.runtime",
    "bot.review",
    "bot.conversation",
    "platforms.github",
    "platforms.gitlab",
    "aiohttp",
    "gidgethub",
    "gitlab",
    "sqlalchemy",
    "pymongo",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {
        module_name(path): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    }
    assert len(found) > 50, "the packages were not found: did the layout change?"
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    tree: ast.AST, *, top_level_only: bool, type_checking: bool = True
) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(module, names) for every import the file makes: `if TYPE_CHECKING:` ones too (a cycle
    through them is still a knot for the reader and for mypy) unless `type_checking` is false;
    with `top_level_only` imports inside functions (run later, on first use) are left out."""

    def walk(nodes: list[ast.stmt]) -> Iterator[tuple[str, tuple[str, ...]]]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, ()
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.module, tuple(a.name for a in node.names)
            elif isinstance(node, ast.If):
                skip = _type_checking_only(node) and not type_checking
                for branch in [node.orelse] if skip else [node.body, node.orelse]:
                    yield from walk(branch)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody):
                    yield from walk(block)
                for handler in node.handlers:
                    yield from walk(handler.body)
            elif isinstance(node, ast.With) or (
                not top_level_only
                and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            ):
                yield from walk(node.body)

    assert isinstance(tree, ast.Module)
    yield from walk(tree.body)


def import_graph(*, top_level_only: bool = True, type_checking: bool = True) -> dict[str, set[str]]:
    """Module → the project modules it imports (with `type_checking` false: those it loads)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text())
        for target, names in _imports(
            tree, top_level_only=top_level_only, type_checking=type_checking
        ):
            submodules = {f"{target}.{n}" for n in names} & modules.keys()
            edges.update(submodules)
            # `from package import name`: the package's own code, unless every name is a module
            if target in modules and (len(submodules) < len(names) or not names):
                edges.add(target)
            # importing a.b.c runs a/__init__ and a/b/__init__ first, unless the importer is
            # inside them (its own packages are already being imported)
            parts = target.split(".")
            edges.update(
                p
                for i in range(1, len(parts))
                if (p := ".".join(parts[:i])) in modules and not name.startswith(p + ".")
            )
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_the_projects_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_config_imports_nothing_from_bot() -> None:
    graph = import_graph(top_level_only=False)
    reaching = {
        module: sorted(t for t in targets if t == "bot" or t.startswith("bot."))
        for module, targets in graph.items()
        if module == "config" or module.startswith("config.")
    }
    assert {m: t for m, t in reaching.items() if t} == {}


def _reached_from(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_CORE)


def test_the_pure_core_reaches_no_use_case_store_or_platform_client_in_the_source() -> None:
    """Directly (type-only imports included) and through what its imports load."""
    graph = import_graph(type_checking=False)
    core = [m for m in graph if m == CORE or m.startswith(CORE + ".")]
    assert len(core) >= 8
    for module in core:
        bad = sorted(m for m in _reached_from(graph, module) if _forbidden(m))
        assert bad == [], f"{module} imports {bad}"
        direct = {
            target
            for target, _ in _imports(
                ast.parse(project_modules()[module].read_text()), top_level_only=False
            )
        }
        assert sorted(t for t in direct if _forbidden(t)) == [], module


@pytest.mark.parametrize("probe", ["bot.core", "bot.core.review", "bot.core.render"])
def test_the_pure_core_loads_no_forbidden_library_when_imported(probe: str) -> None:
    """The same, as Python sees it: what importing the core puts in `sys.modules`."""
    code = f"import sys, {probe}; print('\\n'.join(sorted(m for m in sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = done.stdout.split()
    assert probe in loaded
    assert sorted(m for m in loaded if _forbidden(m)) == []
