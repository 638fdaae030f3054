"""`arbiter review --pr URL`: a pull request reviewed from the command line as the bot reviews it,
against the fake GitHub (token and App mode) and the fake GitLab, printed or `--post`ed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli.review import UsageError
from bot.cli.review_pr import PullRequestAddress, parse_pr_url
from bot.store.sql import SQLStore
from config.settings import load_settings
from platforms.base import MARKER_PREFIX
from tests.conftest import ROOT
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.gitlab import FakeGitLab, MRFile
from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt

PAT = "ghp_" + "p" * 36
REPO = "octo/demo"
APP = "import subprocess\n\n\ndef run(command):\n    return subprocess.run(command, shell=True)\n"
SHELL = finding("app.py", 5, severity="critical", title="Shell injection", category="security")
MINOR = finding("app.py", 1, severity="minor", title="Import inside")
CONFIG = "instructions: Look hard at every subprocess call.\n"
GITLAB_TOKEN = "glpat-cli-review-token-123"
PROJECT = "group/sub/project"


# --- The address ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "settings", "expected"),
    [
        ("https://github.com/octo/demo/pull/12", {}, ("github", "octo/demo", 12)),
        ("https://github.com/octo/demo/pull/12/files#diff-1", {}, ("github", "octo/demo", 12)),
        (
            "https://ghe.example.com/team/app/pull/3",
            {"github_base_url": "https://ghe.example.com/api/v3"},
            ("github", "team/app", 3),
        ),
        (
            "https://gitlab.com/group/sub/project/-/merge_requests/7",
            {},
            ("gitlab", "group/sub/project", 7),
        ),
        (
            "https://code.example.com/gitlab/team/app/-/merge_requests/9/diffs",
            {"gitlab_base_url": "https://code.example.com/gitlab"},
            ("gitlab", "team/app", 9),
        ),
    ],
)
def test_the_address_names_platform_repository_and_number(
    url: str, settings: dict[str, str], expected: tuple[str, str, int]
) -> None:
    assert parse_pr_url(url, load_settings(**settings)) == PullRequestAddress(*expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (
            "https://git.example.com/team/app/pull/3",
            [
                "git.example.com is neither this server's GitHub (github.com, from "
                "ARBITER_GITHUB_BASE_URL) nor its GitLab (gitlab.com, from "
                "ARBITER_GITLAB_BASE_URL)",
                "ARBITER_GITHUB_BASE_URL=https://git.example.com/api/v3",
                "ARBITER_GITLAB_BASE_URL=https://git.example.com",
            ],
        ),
        (
            "https://github.com/octo/demo/issues/3",
            ["expected https://github.com/OWNER/REPO/pull/N"],
        ),
        ("octo/demo#3", ["--pr takes a pull request's web address"]),
    ],
)
def test_an_address_that_cannot_be_used_says_why(url: str, words: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse_pr_url(url, load_settings())
    for text in words:
        assert text in str(caught.value)


# --- As a process, against the fakes -----------------------------------------------------------


async def _arbiter(cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
    script = Path(sys.executable).with_name("arbiter")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    proc = await asyncio.create_subprocess_exec(
        *command,
        *args,
        cwd=cwd,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
            "PYTHONPATH": str(ROOT),
            "ARBITER_LOG_FORMAT": "json",
            "ARBITER_LLM_MAX_RETRIES": "0",
            **env,
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
def key() -> AppKey:
    return AppKey.generate()


@pytest.fixture
async def github(key: AppKey) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(app_id="77", public_key=key.public_pem, token=PAT) as fake:
        fake.add_repo(REPO, installation_id=5)
        fake.add_file(REPO, ".arbiter.yml", CONFIG)
        fake.add_pull(REPO, 1, files=[PullFile.added("app.py", APP)], title="Run commands")
        yield fake


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        fake.respond(findings_in_prompt([SHELL, MINOR]))
        yield fake


def _writes(github: FakeGitHub) -> list[str]:
    return [f"{r.method} {r.path}" for r in github.requests if r.method != "GET"]


async def test_print_a_github_pull_request_with_a_token(
    tmp_path: Path, github: FakeGitHub, openai: FakeOpenAI
) -> None:
    env = {"ARBITER_GITHUB_BASE_URL": github.url, "ARBITER_GITHUB_TOKEN": PAT, **openai.env()}
    code, out, err = await _arbiter(
        tmp_path, "review", "--pr", f"{github.url}/{REPO}/pull/1", "--fail-on", "critical", **env
    )
    assert code == 1, err  # a critical finding, and --fail-on critical
    assert "  line 5  critical  security  Shell injection" in out
    assert "config: .arbiter.yml on main@" in err and f"of {REPO}" in err
    (request,) = openai.requests
    assert "Look hard at every subprocess call." in request.system + request.user
    assert "Run commands" in request.user  # the pull request's title, as the bot sends it
    assert _writes(github) == []  # printed, never posted
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - and nothing recorded here

    code, out, _ = await _arbiter(
        tmp_path, "review", "--pr", f"{github.url}/{REPO}/pull/1", "--json", **env
    )
    assert code == 0
    report = json.loads(out)
    assert report["pull_request"]["repo"] == REPO and report["pull_request"]["number"] == 1
    (comment,) = [c for c in report["comments"] if c["line"] == 5]
    assert "Shell injection" in comment["body"] and MARKER_PREFIX in comment["body"]
    assert "### Findings: 2" in report["summary_markdown"]


async def _migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/server.db"
    store = SQLStore(url)
    await store.open()
    await store.migrate()
    await store.close()
    return url


async def test_post_as_the_github_app_exactly_once(
    tmp_path: Path, github: FakeGitHub, openai: FakeOpenAI, key: AppKey
) -> None:
    db = await _migrated(tmp_path)
    env = {
        "ARBITER_GITHUB_BASE_URL": github.url,
        "ARBITER_GITHUB_APP_ID": "77",
        "ARBITER_GITHUB_PRIVATE_KEY": key.private_pem,
        "ARBITER_DATABASE_URL": db,
        **openai.env(),
    }
    argv = ("review", "--pr", f"{github.url}/{REPO}/pull/1", "--post")
    code, out, err = await _arbiter(tmp_path, *argv, **env)
    assert code == 0, err
    assert github.requests_to("GET", f"/repos/{REPO}/installation")  # found from the repo
    assert len(github.minted) == 1
    (review,) = github.reviews(REPO, 1)
    assert review["user"]["login"] == "arbiter[bot]"
    lines = sorted(c["line"] for c in github.review_comments(REPO, 1))
    assert lines == [1, 5]
    (summary,) = github.issue_comments(REPO, 1)
    assert "<!-- arbiter:summary -->" in summary["body"]
    head = github.update_pull(REPO, 1)["head"]["sha"]
    assert [s["state"] for s in github.statuses(REPO, head)] == ["pending", "success"]
    assert f"posted: review 1 of {REPO}#1" in out and "app.py:5  critical  Shell injection" in out
    assert f"summary: {summary['html_url']}" in out

    # Again: the findings already posted are not posted twice, the summary is edited in place.
    code, out, err = await _arbiter(tmp_path, *argv, **env)
    assert code == 0, err
    assert len(github.reviews(REPO, 1)) == 1 and len(github.review_comments(REPO, 1)) == 2
    assert len(github.issue_comments(REPO, 1)) == 1

    store = SQLStore(db)
    await store.open()
    try:
        reviews = await store.list_reviews()
        findings = await store.findings_for("github", REPO, 1)
    finally:
        await store.close()
    assert [r.outcome for r in reviews] == ["success", "success"]
    assert sorted((f.line, f.posted) for f in findings) == [(1, True), (5, True)]


async def test_post_refuses_a_store_that_is_not_the_servers(
    tmp_path: Path, github: FakeGitHub, openai: FakeOpenAI
) -> None:
    env = {"ARBITER_GITHUB_BASE_URL": github.url, "ARBITER_GITHUB_TOKEN": PAT, **openai.env()}
    code, _, err = await _arbiter(
        tmp_path, "review", "--pr", f"{github.url}/{REPO}/pull/1", "--post", **env
    )
    assert code == 2
    assert "arbiter.db does not exist" in err and "arbiter migrate" in err
    assert _writes(github) == [] and openai.requests == []
    code, _, err = await _arbiter(
        tmp_path,
        "review",
        "--pr",
        f"{github.url}/{REPO}/pull/1",
        "--post",
        "--model",
        "gpt-4o-mini",
        **env,
    )
    assert code == 2 and "--model do not apply" in err


async def test_usage_errors_before_anything_is_asked(
    tmp_path: Path, github: FakeGitHub, openai: FakeOpenAI
) -> None:
    env = {"ARBITER_GITHUB_BASE_URL": github.url, **openai.env()}
    code, _, err = await _arbiter(tmp_path, "review", "--pr", f"{github.url}/{REPO}/pull/1", **env)
    assert code == 2 and "needs ARBITER_GITHUB_TOKEN" in err
    env["ARBITER_GITHUB_TOKEN"] = PAT
    code, _, err = await _arbiter(tmp_path, "review", "--pr", f"{github.url}/{REPO}/pull/9", **env)
    assert code == 2 and "404" in err
    code, _, err = await _arbiter(
        tmp_path, "review", "--pr", "https://elsewhere.example/o/r/pull/1", **env
    )
    assert code == 2 and "is neither this server's GitHub" in err
    assert openai.requests == []


@pytest.fixture
async def gitlab() -> AsyncIterator[FakeGitLab]:
    async with FakeGitLab(token=GITLAB_TOKEN) as fake:
        fake.add_project(PROJECT, default_branch="main")
        fake.add_file(PROJECT, ".arbiter.yml", CONFIG)
        fake.add_merge_request(
            PROJECT, 3, files=[MRFile.added("app.py", APP)], title="Run commands"
        )
        yield fake


async def test_a_gitlab_merge_request_printed_then_posted(
    tmp_path: Path, gitlab: FakeGitLab, openai: FakeOpenAI
) -> None:
    url = f"{gitlab.url}/{PROJECT}/-/merge_requests/3"
    env = {"ARBITER_GITLAB_BASE_URL": gitlab.url, "ARBITER_GITLAB_TOKEN": GITLAB_TOKEN}
    code, out, err = await _arbiter(tmp_path, "review", "--pr", url, **env, **openai.env())
    assert code == 0, err
    assert "line 5  critical  security  Shell injection" in out
    assert "config: .arbiter.yml on main@" in err
    assert (
        "Look hard at every subprocess call." in openai.requests[0].system + openai.requests[0].user
    )
    assert gitlab.discussions(PROJECT, 3) == []  # printed only

    db = await _migrated(tmp_path)
    code, out, err = await _arbiter(
        tmp_path, "review", "--pr", url, "--post", ARBITER_DATABASE_URL=db, **env, **openai.env()
    )
    assert code == 0, err
    notes = [n for d in gitlab.discussions(PROJECT, 3) for n in d["notes"]]
    diff_notes = [n for n in notes if n["type"] == "DiffNote"]
    assert sorted(n["position"]["new_line"] for n in diff_notes) == [1, 5]
    assert any("<!-- arbiter:summary -->" in n["body"] for n in gitlab.notes(PROJECT, 3))
    assert gitlab.statuses(PROJECT)  # the commit status, as the bot sets it
    assert f"posted: review 1 of {PROJECT}#3" in out
