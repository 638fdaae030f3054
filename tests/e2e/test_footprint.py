"""What an idle `arbiter serve` holds: only what taking webhooks needs (issue 20).

The model SDKs, python-gitlab, PyJWT and cryptography, Alembic, the review core and the
conversation are imported by the job or the call that uses them, never at start: an idle
process with every feature configured must not hold them. A worker then imports them with its
first job, and the review it runs is the same. (How many MiB this is worth is measured by
bench/footprint.py, not asserted here.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.serve import ProbedServeProcess
from tests.e2e.world import PAT, REPO, World
from tests.fakes.github import FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt

pytestmark = pytest.mark.e2e

# Packages (and Arbiter's modules) that taking webhooks does not use.
NOT_AT_IDLE = (
    "openai",
    "anthropic",
    "httpx",
    "gitlab",  # python-gitlab
    "requests",
    "jwt",
    "cryptography",
    "alembic",
    "mako",
    "rich",
    "pygments",
    "markdown_it",
    "unidiff",
    "re2",
    "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
    "bot.core.review",
    "bot.review.pull_request",
    "bot.conversation.answer",
    "config.repo",
)
H1, BASE = "a1" * 20, "c3" * 20
APP = "import subprocess\n\n\ndef run(command):\n    return subprocess.run(command, shell=True)\n"


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def everything_on(tmp_path: Path) -> dict[str, str]:
    """Every feature configured, as an operator runs it; nothing listens at these URLs."""
    closed = "http://127.0.0.1:9"
    return {
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/idle.db",
        "ARBITER_GITHUB_WEBHOOK_SECRET": "idle-secret",
        "ARBITER_GITHUB_TOKEN": PAT,
        "ARBITER_GITHUB_BASE_URL": closed,
        "ARBITER_GITLAB_WEBHOOK_TOKEN": "idle-secret",
        "ARBITER_GITLAB_TOKEN": "glpat-idle-not-used",
        "ARBITER_GITLAB_BASE_URL": closed,
        "OPENAI_API_KEY": "sk-idle-not-used",
        "ARBITER_OPENAI_BASE_URL": f"{closed}/v1",
        "ANTHROPIC_API_KEY": "sk-ant-idle-not-used",
        "ARBITER_ANTHROPIC_BASE_URL": closed,
        "ARBITER_API_TOKENS": "idle-api-token-0123:admin",
    }


@pytest.mark.parametrize("args", [("--no-workers",), ()], ids=["no-workers", "workers"])
async def test_an_idle_server_holds_only_what_webhooks_need(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    server = ProbedServeProcess(tmp_path, everything_on(tmp_path), args=args)
    server.migrate()  # a restart: the schema is current, so Alembic is not needed either
    async with server:
        modules = await server.modules()
    assert "bot.app" in modules and "sqlalchemy" in modules  # the list is the server's
    assert loaded(modules, NOT_AT_IDLE) == []


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeGitHub(token=PAT) as github:
        github.add_repo(REPO, installation_id=1)
        github.add_pull(
            REPO,
            2,
            files=[PullFile.added("app.py", APP)],
            head_sha=H1,
            base_sha=BASE,
            title="Run commands",
            author="Codertocat",
        )
        async with FakeOpenAI() as openai:
            openai.respond(findings_in_prompt([finding("app.py", 5, title="Shell injection")]))
            w = World(tmp_path, github, openai)
            try:
                yield w
            finally:
                w.stop()


async def test_the_first_review_imports_what_it_needs_and_is_posted(world: World) -> None:
    server = world.server = ProbedServeProcess(world.tmp_path, world.env())
    await server.start()
    assert loaded(await server.modules(), ("openai", "bot.core.review", "markdown_it")) == []

    status, answer = await world.deliver("pull_request", world.pull_request_payload(2, "opened"))
    assert status == 202, answer
    statuses = await world.settled(H1)

    assert [s for s, _ in statuses] == ["pending", "success"]
    comments = world.github.review_comments(REPO, 2)
    assert [(c["path"], c["line"]) for c in comments] == [("app.py", 5)]
    used = ("openai", "bot.core.review", "bot.review.pull_request", "markdown_it", "config.repo")
    assert loaded(await server.modules(), used) == list(used)
