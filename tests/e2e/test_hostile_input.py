"""Issue 16 through `arbiter serve`, the fake GitHub and the fake OpenAI: a repository whose
`.arbiter.yml` holds patterns a backtracking engine never finishes does not freeze the server
(items 3), and a pull request whose file names, title and model findings are hostile pings no
one and plants no marker (items 4 and 5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import fixture_json
from tests.e2e.world import PAT, REPO, World, wait_for
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt
from tests.mention_corpus import TRICKS, problems, without_markers

pytestmark = pytest.mark.e2e

H1, H2, H3, BASE = "a1" * 20, "b2" * 20, "d4" * 20, "c3" * 20
CODE = "def run(command):\n    return command\n"
DEEP = "/".join(f"d{n}" for n in range(40)) + "/y.py"  # 41 levels, matched by no filter
PING = fixture_json("github/webhooks/ping/with-app_id.payload.json")
HOSTILE_CONFIG = (
    "path_filters:\n"
    f"  - '{'/'.join(['**'] * 20)}/z'\n"  # froze the loop for 12 s with 10 `**` and 25 levels
    "  - '*.py'\n"
    "auto_review:\n"
    "  base_branches: ['(a+)+$', '(a|a)*b']\n"  # froze it for 6 s against `aaa…!`
)


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    key = AppKey.generate()
    async with FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as fake:
        fake.add_repo(REPO, installation_id=1)
        yield fake


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


async def test_a_hostile_config_does_not_freeze_the_server(
    tmp_path: Path, github: FakeGitHub, openai: FakeOpenAI
) -> None:
    github.add_file(REPO, ".arbiter.yml", HOSTILE_CONFIG)
    deep = [PullFile.added(DEEP.replace("y.py", f"f{n}.txt"), CODE) for n in range(30)]
    github.add_pull(REPO, 2, files=[*deep, PullFile.added("app.py", CODE)], head_sha=H1)
    github.add_pull(
        REPO, 3, files=[PullFile.added("app.py", CODE)], head_sha=H2, base_ref="a" * 60 + "!"
    )
    openai.respond(findings_in_prompt([]))
    world = World(tmp_path, github, openai)
    await world.start()
    try:
        for number in (2, 3):
            status, answer = await world.deliver(
                "pull_request", world.pull_request_payload(number, "opened")
            )
            assert status == 202, answer
        # The server answers throughout: each request gets a generous deadline that a frozen
        # event loop (hours, under a backtracking engine) could not meet.
        answered = 0
        deadline = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=deadline) as http:
            while not _final(world, H1) or answered < 3:
                async with http.get(f"{world.server.url}/health") as health:  # type: ignore[union-attr]
                    assert health.status == 200
                status, _ = await world.deliver("ping", PING)
                assert status in (200, 202)
                answered += 1
                await asyncio.sleep(0.1)
                assert answered < 600, "the review did not finish"

        statuses = await world.settled(H1)
        assert statuses[-1][0] == "success"
        (summary,) = [c for c in github.issue_comments(REPO, 2) if "arbiter:summary" in c["body"]]
        assert "outside the path filters" in summary["body"]  # the deep files were matched
        prompts = "\n".join(r.user for r in openai.requests)
        assert "=== FILE app.py (" in prompts and "d39/" not in prompts
        await wait_for(lambda: _idle(world), 30, "every job done")
        assert not github.reviews(REPO, 3)  # into `aaa…!`: matched by no base_branches regex
    finally:
        world.stop()


def _final(world: World, sha: str) -> bool:
    found = world.statuses(sha)
    return bool(found) and found[-1][0] != "pending"


async def _idle(world: World) -> bool:
    store = await world.store()
    try:
        counts = await store.job_counts()
    finally:
        await store.close()
    return not (counts.get("queued") or counts.get("running"))


HOSTILE_FILES = (
    "src/@octocat `x`.py",
    "src/a|@octocat|b.py",
    "src/<b>@octocat</b>.py",
    "src/&#64;octocat.py",
)
MINIFIED = ("<!-- arbiter:repo-config -->.min.js", "x\n\n@octocat\n\ny.min.js")
HOSTILE_FINDINGS = [
    finding(
        path,
        1,
        title=" ".join(text.split()),
        body=f"{text}\n\nAlso ask @octocat and @github/security-team.",
        severity="major",
    )
    for path, text in zip(HOSTILE_FILES, list(TRICKS.values())[4:8], strict=True)
]
BAD_CONFIG = "path_filters: ['[@octocat <!-- arbiter:summary -->']\n"


async def test_hostile_names_titles_and_findings_ping_no_one(
    tmp_path: Path, github: FakeGitHub, openai: FakeOpenAI
) -> None:
    github.add_file(REPO, ".arbiter.yml", "profile: thorough\n")
    files = [PullFile.added(p, CODE) for p in (*HOSTILE_FILES, *MINIFIED)]
    github.add_pull(
        REPO,
        2,
        files=files,
        head_sha=H1,
        base_sha=BASE,
        title="Fix it @octocat &#64;octocat <!-- arbiter:summary -->",
        author="mallory",
    )
    openai.respond(findings_in_prompt(HOSTILE_FINDINGS))
    world = World(tmp_path, github, openai)
    await world.start()
    try:
        status, _ = await world.deliver("pull_request", world.pull_request_payload(2, "opened"))
        assert status == 202
        assert (await world.settled(H1))[-1][0] in ("success", "failure")
        (first,) = [c["id"] for c in github.issue_comments(REPO, 2)]  # the summary
        # The file on the default branch goes bad, then a push: the configuration comment must
        # not take the place of the summary, whose list of files names the marker (item 5).
        github.add_file(REPO, ".arbiter.yml", BAD_CONFIG)
        github.update_pull(REPO, 2, head_sha=H3, files=files)
        github.add_compare(REPO, H1, H3, files=[])
        status, _ = await world.deliver(
            "pull_request", world.pull_request_payload(2, "synchronize", before=H1, after=H3)
        )
        assert status == 202
        await world.settled(H3)

        comments = github.issue_comments(REPO, 2)
        summaries = [c for c in comments if c["body"].startswith("<!-- arbiter:summary -->")]
        configs = [c for c in comments if c["body"].startswith("<!-- arbiter:repo-config -->")]
        assert len(summaries) == 1 and len(configs) == 1, [c["body"][:60] for c in comments]
        assert summaries[0]["id"] == first  # edited in place, never turned into the other
        assert "## Arbiter review" in summaries[0]["body"]
        posted = [c["body"] for c in comments]
        posted += [r["body"] for r in github.reviews(REPO, 2)]
        posted += [c["body"] for c in github.review_comments(REPO, 2)]
        assert len(github.review_comments(REPO, 2)) == len(HOSTILE_FILES)
        for body in posted:
            found = problems(without_markers(body))
            assert found == [], f"{found}\n---\n{body}"
    finally:
        world.stop()
