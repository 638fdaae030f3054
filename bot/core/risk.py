"""Risk order: which files, and which hunks of a file, a reviewer reads first.

Files go by tier, then within a tier by the repository's path instructions, by risky code in
what they add, and small before large (a 6-line change before a 20,000-line one):

0. source changes on security-sensitive paths (auth, crypto, secrets, SQL, payments…), or
   adding risky calls (eval, shell=True, pickle, TLS verification off…);
1. other source changes;
2. tests;
3. docs, configuration and anything else;
4. CI files, dependency manifests and changelogs: never before source changes.

Within a file, `hunk_order` puts hunks with risky code first, then larger changes first.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence

from bot.core.diff import ADDED, DiffFile, Hunk
from bot.core.prompting import PathInstruction
from config.globs import matches

SENSITIVE, SOURCE, TESTS, OTHER, LAST = range(5)

_SENSITIVE_PATH = re.compile(
    r"auth|login|passw|secret|token|credential|crypt|permission|acl|session|oauth|jwt|csrf|"
    r"security|sanitiz|payment|billing|admin|sql|migration|privilege",
    re.IGNORECASE,
)
_RISKY_CODE = re.compile(
    r"\beval\(|\bexec\(|shell\s*=\s*True|os\.system\(|subprocess|pickle\.loads?\(|"
    r"yaml\.load\(|verify\s*=\s*False|\bmd5\b|\bsha1\b|innerHTML|dangerouslySetInnerHTML|"
    r"\bexecute\(\s*f?[\"']|password\s*=\s*[\"']|secret\s*=\s*[\"']|chmod\(|0o?777|"
    r"except\s*(Exception)?\s*:\s*pass|\bunsafe\b|disable_ssl|allow_redirects|"
    r"\brandom\.(random|randint)\(",
    re.IGNORECASE,
)
_TEST_DIRS = frozenset({"test", "tests", "__tests__", "spec", "specs", "testing"})
_TEST_NAME = re.compile(r"^test_.*|.*_test\.\w+$|.*\.(test|spec)\.\w+$|.*Tests?\.\w+$")
_SOURCE_EXT = frozenset(
    {
        *("py", "pyi", "js", "jsx", "mjs", "cjs", "ts", "tsx", "go", "rs", "java", "kt", "kts"),
        *("scala", "rb", "php", "cs", "fs", "c", "h", "cc", "cpp", "hpp", "cxx", "m", "mm"),
        *("swift", "dart", "ex", "exs", "erl", "hs", "ml", "clj", "lua", "pl", "pm", "r", "jl"),
        *("sh", "bash", "zsh", "ps1", "sql", "vue", "svelte", "tf", "sol", "zig", "nim", "groovy"),
    }
)
_CI = (
    ".github/workflows/**",
    ".github/actions/**",
    ".gitlab-ci.yml",
    ".gitlab/ci/**",
    ".circleci/**",
    "Jenkinsfile",
    ".travis.yml",
    "azure-pipelines.yml",
    ".buildkite/**",
    "bitbucket-pipelines.yml",
    ".pre-commit-config.yaml",
)
_DEPENDENCIES = (
    "requirements*.txt",
    "requirements/*.txt",
    "constraints*.txt",
    "Pipfile",
    "package.json",
    "go.mod",
    "Cargo.toml",
    "Gemfile",
    "*.gemspec",
    "environment.yml",
)
_CHANGELOG = re.compile(r"^(change(s|log)|history|news|release[-_]?notes)(\.\w+)?$", re.I)
_CHANGELOG_DIRS = frozenset({"changelog.d", ".changeset", "changes", "newsfragments"})


def tier(file: DiffFile, risky: int | None = None) -> int:
    """The file's tier (see the module's docstring); lower is read first. `risky`: the file's
    `risky_lines`, when the caller has counted them already."""
    path = file.path
    name = posixpath.basename(path)
    directories = {d.lower() for d in path.split("/")[:-1]}
    if (
        any(matches(p, path) for p in (*_CI, *_DEPENDENCIES))
        or _CHANGELOG.match(name)
        or directories & _CHANGELOG_DIRS
    ):
        return LAST
    if directories & _TEST_DIRS or _TEST_NAME.match(name):
        return TESTS
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension not in _SOURCE_EXT:
        return OTHER
    if _SENSITIVE_PATH.search(path):
        return SENSITIVE
    if (risky_lines(file.hunks) if risky is None else risky) > 0:
        return SENSITIVE
    return SOURCE


def risky_lines(hunks: Sequence[Hunk]) -> int:
    """Added lines that call or set something risky."""
    return sum(
        1
        for hunk in hunks
        for line in hunk.lines
        if line.kind == ADDED and _RISKY_CODE.search(line.text)
    )


def order_files(
    files: Sequence[DiffFile],
    sizes: dict[str, int],
    path_instructions: Sequence[PathInstruction] = (),
) -> list[DiffFile]:
    """`files` in the order to review them; `sizes` are their diffs' tokens."""

    def key(file: DiffFile) -> tuple[int, int, int, int, str]:
        named = any(matches(p.path, file.path) for p in path_instructions if p.instructions)
        risky = risky_lines(file.hunks)  # once a file: a regular expression over every line
        return (tier(file, risky), 0 if named else 1, -risky, sizes[file.path], file.path)

    return sorted(files, key=key)


def hunk_order(hunks: Sequence[Hunk]) -> list[int]:
    """Indexes of `hunks`, riskiest first: risky code, then more added lines, then position."""
    if len(hunks) < 2:
        return list(range(len(hunks)))  # nothing to order: no line is read for it

    def key(index: int) -> tuple[int, int, int]:
        hunk = hunks[index]
        added = sum(1 for ln in hunk.lines if ln.kind == ADDED)
        return (-risky_lines([hunk]), -added, index)

    return sorted(range(len(hunks)), key=key)
