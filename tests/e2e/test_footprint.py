"""What an idle `arbiter serve` holds: only what taking webhooks needs (issue 20).

The model SDKs, python-gitlab, PyJWT and cryptography, Alembic, the review core and the
conversation are imported by the job or the call that uses them, never at start: an idle
process with every feature configured must not hold them. A worker then imports them with its
first job, and the review it runs is the same. (How many MiB this is worth is measured by
bench/footprint.py, not asserted here.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import fixture_json, github_headers
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
    assert "bot.app" in modules and "sqlite3" in modules  # the list is the server's
    assert loaded(modules, NOT_AT_IDLE) == []
    # A web-only process on SQLite takes webhooks without SQLAlchemy (bot/store/sqlite_web.py);
    # one that runs workers needs it.
    assert ("sqlalchemy" in modules) is (args == ())
    # The recovery passes run where the workers run; a web-only process leaves them to those.
    assert ('"reconcile sweep on"' in server.log()) is (args == ())


async def test_a_web_process_takes_deliveries_and_serves_health_and_metrics_without_sqlalchemy(
    tmp_path: Path,
) -> None:
    env = everything_on(tmp_path)
    server = ProbedServeProcess(tmp_path, env, args=("--no-workers",))
    server.migrate()
    body = json.dumps(fixture_json("github/webhooks/pull_request/opened.payload.json")).encode()
    delivery = str(uuid.uuid4())
    headers = github_headers("pull_request", delivery, body, env["ARBITER_GITHUB_WEBHOOK_SECRET"])
    token = {"Authorization": f"Bearer {env['ARBITER_API_TOKENS'].split(':')[0]}"}
    async with server, aiohttp.ClientSession() as http:
        answers = []
        for _ in range(2):  # the second is the same delivery again
            async with http.post(f"{server.url}/webhooks/github", data=body, headers=headers) as r:
                answers.append((r.status, await r.json()))
        async with http.get(f"{server.url}/health/ready") as r:
            ready = r.status
        async with http.get(f"{server.url}/metrics") as r:
            metrics = await r.text()
        idle = await server.modules()
        # The operator API needs the rest of the store: loaded then, on the same database.
        async with http.get(f"{server.url}/api/jobs", headers=token) as r:
            listed = (r.status, await r.json())
        used = await server.modules()

    assert answers[0][0] == 202 and "job_id" in answers[0][1], answers
    assert answers[1] == (200, {"duplicate": True, "delivery_id": delivery})
    assert ready == 200
    assert 'arbiter_jobs{state="queued"} 1.0' in metrics
    assert "arbiter_store_up 1.0" in metrics
    assert loaded(idle, ("sqlalchemy", "bot.store.sql")) == []
    status, jobs = listed
    assert status == 200, jobs
    assert jobs["counts"]["queued"] == 1 and jobs["dead"] == []
    assert loaded(used, ("sqlalchemy", "bot.store.sql")) == ["sqlalchemy", "bot.store.sql"]


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
