"""`arbiter review` at its edges, as a real process: bad globs, legacy encodings, no git
repository, no commit yet, a wrong key, an unpriced model, the repository's .arbiter.yml; each
ends with its documented exit code and never with a traceback."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fakes.openai import FakeOpenAI, ServerError, finding, findings_in_prompt

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

LATIN1_PATCH = (
    b"diff --git a/menu.txt b/menu.txt\n--- a/menu.txt\n+++ b/menu.txt\n"
    b"@@ -1 +1 @@\n-cafe\n+caf\xe9 cr\xe8me\n"
)


async def _arbiter(
    fake: FakeOpenAI, cwd: Path, *args: str, stdin: bytes | None = None, **env: str
) -> tuple[int, str, str]:
    """`arbiter review ARGS` in `cwd`, against the fake model; (exit code, stdout, stderr)."""
    script = Path(sys.executable).with_name("arbiter")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    proc = await asyncio.create_subprocess_exec(
        *command,
        "review",
        *args,
        cwd=cwd,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
            "PYTHONPATH": str(ROOT),
            "ARBITER_LOG_FORMAT": "json",
            "ARBITER_LLM_MAX_RETRIES": "0",
            **fake.env(),
            **env,
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode(), err.decode()


def _git(cwd: Path, *argv: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=T", *argv],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def _repo(tmp_path: Path, files: dict[str, str], *, commit: bool = True) -> Path:
    """A git repository with `files` committed (unless not `commit`)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    if commit:
        _git(repo, "add", ".")
        _git(repo, "commit", "-qm", "first")
    return repo


def _changed_repo(tmp_path: Path, committed: dict[str, str] | None = None) -> Path:
    files = {"a.txt": "a\n", "src/b.py": "b = 1\n", "docs/x.md": "x\n", **(committed or {})}
    repo = _repo(tmp_path, files)
    (repo / "a.txt").write_text("a\nmore\n")
    (repo / "src/b.py").write_text("b = 1\nc = b / 0\n")
    (repo / "docs/x.md").write_text("x\ny\n")
    return repo


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("[]a].txt", "not a valid glob"),
        ("src/[unclosed", "without its closing ]"),
        ("!", "needs a pattern after it"),
    ],
)
async def test_a_bad_path_filter_is_a_usage_error(
    tmp_path: Path, pattern: str, problem: str
) -> None:
    repo = _changed_repo(tmp_path)
    async with FakeOpenAI() as fake:
        code, _, err = await _arbiter(fake, repo, "-p", pattern)
    assert code == 2, err
    assert f"-p {pattern!r}: " in err and problem in err
    assert fake.requests == []


async def test_path_filters_that_match_nothing_say_so(tmp_path: Path) -> None:
    repo = _changed_repo(tmp_path)
    async with FakeOpenAI() as fake:
        code, _, err = await _arbiter(fake, repo, "-p", "nowhere/**")
    assert code == 0
    assert "nothing to review: the path filters match none of the 3 changed files" in err
    assert fake.requests == []


async def test_a_latin1_patch_is_read_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    (tmp_path / "latin1.patch").write_bytes(LATIN1_PATCH)
    async with FakeOpenAI() as fake:
        code, _, err = await _arbiter(fake, tmp_path, "--patch", "latin1.patch")
        assert code == 0, err
        code, _, err = await _arbiter(fake, tmp_path, "--patch", "-", stdin=LATIN1_PATCH)
        assert code == 0, err
    assert len(fake.requests) == 2
    for request in fake.requests:
        assert "+café crème" in request.user


async def test_outside_a_git_repository_it_says_so_in_a_line(tmp_path: Path) -> None:
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    async with FakeOpenAI() as fake:
        code, out, err = await _arbiter(fake, outside)
    assert code == 2
    assert "is not inside a git repository" in err and "--patch FILE" in err
    assert len(err.strip().splitlines()) <= 2, err  # not git's usage page
    assert out == ""


async def test_a_repository_without_commits_is_all_new(tmp_path: Path) -> None:
    repo = _repo(tmp_path, {"staged.py": "x = 1\n"}, commit=False)
    _git(repo, "add", "staged.py")
    (repo / "untracked.py").write_text("y = 2\n")
    async with FakeOpenAI() as fake:
        code, _, err = await _arbiter(fake, repo)
    assert code == 0, err
    (request,) = fake.requests
    assert "=== FILE staged.py (added) ===" in request.user and "+x = 1" in request.user
    assert "=== FILE untracked.py (added) ===" in request.user


async def test_a_wrong_key_is_one_error_under_a_failure_headline(tmp_path: Path) -> None:
    repo = _changed_repo(tmp_path)
    async with FakeOpenAI() as fake:
        fake.always(ServerError(401, "Incorrect API key provided: sk-wrong."))
        code, out, _ = await _arbiter(fake, repo)
    assert code == 3
    assert "No findings" not in out
    assert "Review failed: the model provider rejected our credentials" in out
    assert out.count("Incorrect API key provided") == 1, out
    assert "Not reviewed (3 files):" in out


async def test_an_unpriced_local_model_is_told_about_max_cost_0(tmp_path: Path) -> None:
    repo = _changed_repo(tmp_path)
    async with FakeOpenAI() as fake:
        code, _, err = await _arbiter(fake, repo, "--model", "house-model")
        assert code == 2
        assert "--max-cost 0" in err
        assert fake.requests == []
        code, out, err = await _arbiter(fake, repo, "--model", "house-model", "--max-cost", "0")
    assert code == 0, err
    assert "house-model" in out and "cost unknown" in out


ARBITER_YML = """\
instructions: Flag every division by zero.
path_filters: ["!docs/**"]
review:
  min_severity: major
  fail_on: major
"""


async def test_the_working_trees_arbiter_yml_is_applied(tmp_path: Path) -> None:
    repo = _changed_repo(tmp_path, {".arbiter.yml": ARBITER_YML})
    answers = [
        finding("src/b.py", 2, severity="major", title="Division by zero"),
        finding("a.txt", 2, severity="minor", title="A small thing"),
    ]
    async with FakeOpenAI() as fake:
        fake.respond(findings_in_prompt(answers))
        code, out, err = await _arbiter(fake, repo)
        assert f"config: {repo / '.arbiter.yml'}" in err
        assert code == 1  # review.fail_on: major, and a major finding
        prompt = fake.requests[-1].system + fake.requests[-1].user
        assert "Flag every division by zero." in prompt
        assert "docs/x.md: excluded by the path filter !docs/**" in out
        assert "line 2  major  bug  Division by zero" in out
        assert "line 2  minor" not in out and "1 finding (1 major)" in out  # min_severity

        # The command line wins over the file.
        code, out, err = await _arbiter(fake, repo, "--min-severity", "nit", "--fail-on", "none")
        assert code == 0 and "line 2  minor  bug  A small thing" in out

        code, out, err = await _arbiter(fake, repo, "--no-repo-config")
        assert "config: the repository's .arbiter.yml is skipped (--no-repo-config)" in err
        prompt = fake.requests[-1].system + fake.requests[-1].user
        assert "Flag every division by zero." not in prompt
        assert "=== FILE docs/x.md" in fake.requests[-1].user
        assert code == 0  # no fail_on without the file


async def test_a_broken_arbiter_yml_is_reported_and_the_defaults_apply(tmp_path: Path) -> None:
    repo = _changed_repo(tmp_path)
    (repo / ".arbiter.yml").write_text("review:\n  min_severity: fatal\npath_filters: [\n")
    (repo / "sub").mkdir()
    async with FakeOpenAI() as fake:
        code, _, err = await _arbiter(fake, repo / "sub")  # found from a subfolder too
    assert code == 0, err
    assert f"config: {repo / '.arbiter.yml'}" in err
    assert "config problem: " in err
    assert "is not used for its problems: the defaults apply" in err


async def test_no_arbiter_yml_is_said_too(tmp_path: Path) -> None:
    repo = _changed_repo(tmp_path)
    async with FakeOpenAI() as fake:
        code, _, err = await _arbiter(fake, repo)
    assert code == 0
    assert f"config: no .arbiter.yml in {repo}: the defaults apply" in err


def test_help_documents_the_exit_codes() -> None:
    script = Path(sys.executable).with_name("arbiter")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    done = subprocess.run(
        [*command, "review", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    text = " ".join(done.stdout.split())
    for line in (
        "0 the review ran, and no finding reached --fail-on",
        "1 a finding is at least as severe as --fail-on",
        "2 a usage or configuration error",
        "3 a service failed: the model provider",
    ):
        assert line in text, done.stdout
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    for code in ("`0`", "`1`", "`2`", "`3`"):
        assert f"| {code} |" in readme, f"README's exit codes of `arbiter review` lack {code}"
