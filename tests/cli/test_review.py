"""`arbiter review`: as a real process against the fake servers, and in-process for the rest."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bot.cli.review import (
    EXIT_FINDINGS,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_USAGE,
    add_review_arguments,
)
from bot.cli.review_local import GitError, run_review
from tests.core.conftest import settings_for
from tests.core.test_review import PATCH
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.openai import (
    FakeLLMServer,
    FakeOpenAI,
    Malformed,
    Slow,
    finding,
    findings_in_prompt,
)

ROOT = Path(__file__).resolve().parents[2]
FINDINGS = [
    finding("src/app.py", 21, severity="critical", title="Division by zero"),
    finding("src/util.py", 2, severity="major", category="security", title="eval of input"),
    finding("src/app.py", 35, title="Off the diff"),
]


async def _arbiter(fake: FakeLLMServer, *args: str, stdin: str | None = None) -> tuple[int, str]:
    """Run the installed `arbiter` with the fake's settings; (exit code, stdout)."""
    script = Path(sys.executable).with_name("arbiter")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
        "PYTHONPATH": str(ROOT),
        "ARBITER_LOG_FORMAT": "json",
        **fake.env(),
    }
    proc = await asyncio.create_subprocess_exec(
        *command,
        "review",
        *args,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    assert proc.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode()


async def test_review_a_patch_against_the_fake_openai(tmp_path: Path) -> None:
    patch = tmp_path / "change.patch"
    patch.write_text(PATCH)
    async with FakeOpenAI() as fake:
        fake.respond(findings_in_prompt(FINDINGS))
        code, out = await _arbiter(fake, "--patch", str(patch))
    assert code == EXIT_OK
    assert "src/app.py\n  line 21  critical  bug  Division by zero  (confidence 90%)\n" in out
    assert "src/util.py\n  line 2  major  security  eval of input" in out
    assert "Dropped findings (1):\n  src/app.py:35  line 35 is not in the diff" in out
    assert "assets/logo.png: binary file" in out
    assert "2 findings (1 critical, 1 major) · openai:gpt-4o · 1 call ·" in out
    assert len(fake.requests) == 1 and fake.requests[0].model == "gpt-4o"


async def test_review_stdin_as_json_against_the_fake_anthropic() -> None:
    async with FakeAnthropic() as fake:
        fake.respond(findings_in_prompt(FINDINGS))
        code, out = await _arbiter(
            fake,
            "--patch",
            "-",
            "--json",
            "--model",
            "claude-sonnet-4-6",
            "--fail-on",
            "major",
            stdin=PATCH,
        )
    assert code == EXIT_FINDINGS  # a major finding, and --fail-on major
    report = json.loads(out)
    assert [(f["path"], f["line"], f["severity"]) for f in report["findings"]] == [
        ("src/app.py", 21, "critical"),
        ("src/util.py", 2, "major"),
    ]
    assert [(d["path"], d["line"], d["reason"]) for d in report["dropped"]] == [
        ("src/app.py", 35, "line 35 is not in the diff")
    ]
    assert report["model"] == "anthropic:claude-sonnet-4-6" and report["complete"] is True
    assert report["usage"]["input_tokens"] == fake.requests[0].input_tokens
    assert "### Findings: 2" in report["summary_markdown"]


# --- In-process, for the cases that need no separate process ------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_review_arguments(parser)
    return parser.parse_args(argv)


async def _review(fake: FakeLLMServer, *argv: str, **settings: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_review(
        settings_for(fake, **settings),
        _args(*argv),
        out=Console(file=out, width=300),
        err=Console(file=err, width=300),
    )
    return code, out.getvalue(), err.getvalue()


async def test_fail_on_below_the_worst_finding_passes(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    (tmp_path / "p.diff").write_text(PATCH)
    fake_openai.respond(findings_in_prompt([finding("src/app.py", 21, severity="minor")]))
    code, out, _ = await _review(fake_openai, "--patch", "p.diff", "--fail-on", "major")
    assert code == EXIT_OK and "line 21  minor" in out
    code, _, _ = await _review(fake_openai, "--patch", "p.diff", "--fail-on", "minor")
    assert code == EXIT_FINDINGS


async def test_a_malformed_answer_twice_is_reported(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    (tmp_path / "p.diff").write_text(PATCH)
    fake_openai.script(Malformed(), Malformed())
    code, out, _ = await _review(fake_openai, "--patch", "p.diff")
    assert code == EXIT_INCOMPLETE
    assert "Review failed: the model's answer did not match the expected format" in out
    # One reason for the three files of the one part, said once (in the review's risk order).
    reason = "  the model's answer was malformed twice (3):\n"
    assert out.count(reason) == 1
    listed = out.split(reason, 1)[1].split("\n\n", 1)[0].split("\n")
    assert sorted(line.strip() for line in listed) == ["docs/notes.md", "src/app.py", "src/util.py"]
    assert len(fake_openai.requests) == 2


async def test_a_timeout_is_reported(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    (tmp_path / "p.diff").write_text(PATCH)
    fake_openai.script(Slow(30))
    code, out, _ = await _review(fake_openai, "--patch", "p.diff", llm_timeout=0.3)
    assert code == EXIT_INCOMPLETE
    assert "Review failed: the model did not answer within 0.3 s" in out


async def test_usage_errors_exit_2(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    from bot.cli.review import review_command

    (tmp_path / "bad.diff").write_text("not a diff\n")
    settings = settings_for(fake_openai)
    code = await asyncio.to_thread(review_command, settings, _args("--patch", "bad.diff"))
    assert code == EXIT_USAGE
    code = await asyncio.to_thread(
        review_command, settings, _args("--patch", "bad.diff", "HEAD~1..HEAD")
    )
    assert code == EXIT_USAGE
    unpriced = settings_for(fake_openai, default_model="house-model")
    (tmp_path / "ok.diff").write_text(PATCH)
    code = await asyncio.to_thread(review_command, unpriced, _args("--patch", "ok.diff"))
    assert code == EXIT_USAGE
    assert fake_openai.requests == []


def _git(cwd: Path, *argv: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=T", *argv],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_the_working_tree_and_a_commit_range(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "app.py").write_text("a = 1\nb = 2\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "first")
    (repo / "app.py").write_text("a = 1\nb = 3\n")
    _git(repo, "commit", "-qam", "second")
    (repo / "app.py").write_text("a = 10\nb = 3\n")  # uncommitted
    (repo / "new.py").write_text("fresh = True\n")  # untracked
    os.chdir(repo)
    code, _, _ = await _review(fake_openai)
    assert code == EXIT_OK
    tree = fake_openai.requests[-1].user
    assert "+a = 10" in tree and "=== FILE new.py (added) ===" in tree and "+fresh = True" in tree
    code, _, _ = await _review(fake_openai, "HEAD~1..HEAD")
    assert code == EXIT_OK
    committed = fake_openai.requests[-1].user
    assert "+b = 3" in committed and "a = 10" not in committed and "new.py" not in committed
    with pytest.raises(GitError, match="unknown revision"):
        await _review(fake_openai, "no-such-ref..HEAD")
