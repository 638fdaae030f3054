"""A conversation in one process: the production runtime and handlers, the fake GitHub and the
fake OpenAI over real HTTP on 127.0.0.1, and a clock the test moves (the rate limit's hour).

`talk` builds the world with the settings a test gives; `Talk.comment()`, `.reply()` and
`.edit()` put a comment on the fake GitHub and dispatch its webhook to the handlers as a
worker would, and the rest reads back what happened.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.events import from_github
from bot.router import DispatchResult
from bot.runtime import Runtime
from bot.store.base import ExchangeRecord, FindingRecord, ReviewStart
from bot.store.sql import SQLStore
from config.settings import load_settings
from tests.conftest import FakeClock
from tests.conversation.model import answering
from tests.e2e.world import REPO, issue_comment_payload, review_comment_payload
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI

PAT = "ghp_" + "t" * 36
ARBITER_LOGIN = "arbiter-bot"  # the fake's login for the token: a user, not an App
NUMBER = 2
HEAD, BASE = "a1" * 20, "c3" * 20
APP = "\n".join(
    [
        "import subprocess",
        *[f"# filler {i}" for i in range(2, 40)],
        "def run(command):",
        "    return subprocess.run(command, shell=True)",
        *[f"# tail {i}" for i in range(42, 90)],
    ]
)
FINDING_LINE = 41
FINGERPRINT = "f00dfeedf00dfeed"
FINDING = FindingRecord(
    fingerprint=FINGERPRINT,
    path="app.py",
    line=FINDING_LINE,
    severity="critical",
    category="security",
    title="Shell injection",
    body="`shell=True` runs the command through a shell; pass a list instead.",
    confidence=0.9,
    posted=True,
)


class Talk:
    def __init__(
        self, github: FakeGitHub, openai: FakeOpenAI, runtime: Runtime, clock: FakeClock
    ) -> None:
        self.github = github
        self.openai = openai
        self.runtime = runtime
        self.clock = clock
        self._deliveries = itertools.count(1)

    @property
    def store(self) -> SQLStore:
        assert isinstance(self.runtime.store, SQLStore)
        return self.runtime.store

    # --- Comments, delivered -------------------------------------------------------------------

    async def deliver(
        self, event: str, payload: dict[str, Any], delivery: str | None = None
    ) -> DispatchResult:
        delivery = delivery or f"d-{next(self._deliveries)}"
        ctx = self.runtime.context(from_github(event, delivery, payload), job_id=None)
        return await self.runtime.router.dispatch(ctx)

    async def comment(
        self, body: str, *, author: str = "alice", author_type: str = "User"
    ) -> dict[str, Any]:
        """A comment on the pull request's conversation, delivered; the comment."""
        made = self.github.add_issue_comment(
            REPO, NUMBER, body, author=author, author_type=author_type
        )
        result = await self.deliver("issue_comment", issue_comment_payload(NUMBER, made))
        assert result.ok, result.failed
        return made

    async def reply(
        self,
        root: dict[str, Any] | None,
        body: str,
        *,
        author: str = "alice",
        author_type: str = "User",
        line: int = FINDING_LINE,
    ) -> dict[str, Any]:
        """An inline comment, delivered: a reply in `root`'s thread, or (None) a thread's start."""
        made = self.github.add_review_comment(
            REPO,
            NUMBER,
            path="app.py",
            line=line if root is None else root["line"],
            body=body,
            author=author,
            author_type=author_type,
            in_reply_to=None if root is None else root["id"],
        )
        result = await self.deliver(
            "pull_request_review_comment", review_comment_payload(self.github, NUMBER, made)
        )
        assert result.ok, result.failed
        return made

    async def edit(self, comment: dict[str, Any], body: str) -> DispatchResult:
        before = comment["body"]
        edited = {**comment, "body": body}
        payload = issue_comment_payload(NUMBER, edited, action="edited", previous_body=before)
        return await self.deliver("issue_comment", payload)

    # --- Arbiter's review, as if it had run ---------------------------------------------------

    async def reviewed(self) -> dict[str, Any]:
        """Arbiter's finding on app.py, recorded and posted as an inline comment; the comment."""
        review = await self.store.start_review(ReviewStart("github", REPO, NUMBER, HEAD, "full"))
        await self.store.record_findings(review.id, "github", REPO, NUMBER, [FINDING])
        body = (
            f"🔴 **Critical** · security · **{FINDING.title}**\n\n{FINDING.body}\n\n"
            f"<!-- arbiter:finding {FINGERPRINT} -->"
        )
        return self.github.add_review_comment(
            REPO, NUMBER, path="app.py", line=FINDING_LINE, body=body, author=ARBITER_LOGIN
        )

    # --- What happened -------------------------------------------------------------------------

    def arbiter_comments(self) -> list[dict[str, Any]]:
        """What Arbiter wrote: conversation comments and inline ones (its finding excluded)."""
        found = self.github.issue_comments(REPO, NUMBER) + self.github.review_comments(REPO, NUMBER)
        return [
            c
            for c in found
            if c["user"]["login"] == ARBITER_LOGIN and "arbiter:finding" not in c["body"]
        ]

    def reactions(self, comment: dict[str, Any]) -> list[str]:
        return self.github.reactions(comment["id"], inline="path" in comment)

    async def exchanges(self) -> list[ExchangeRecord]:
        return list(reversed(await self.store.list_exchanges()))  # oldest first

    async def paused(self) -> bool:
        return (await self.store.pr_state("github", REPO, NUMBER)).paused


MakeTalk = Callable[..., Awaitable[Talk]]


@pytest.fixture
async def talk(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MakeTalk]:
    """`await talk(**settings)`: the world, with these settings (ARBITER_* names, lower case)."""
    key = AppKey.generate()
    runtimes: list[Runtime] = []
    async with (
        FakeGitHub(
            app_id="1", public_key=key.public_pem, token=PAT, token_login=ARBITER_LOGIN
        ) as github,
        FakeOpenAI() as openai,
    ):
        github.add_repo(REPO, installation_id=1)
        github.add_pull(
            REPO,
            NUMBER,
            files=[PullFile.added("app.py", APP)],
            head_sha=HEAD,
            base_sha=BASE,
            title="Run commands",
            body="Adds `run()`, which runs a command line.",
            author="alice",
        )
        github.set_permission(REPO, "alice", "write")
        github.set_permission(REPO, "bob", "read")
        openai.respond(answering())

        async def make(**settings: Any) -> Talk:
            values: dict[str, Any] = {
                "database_url": f"sqlite+aiosqlite:///{tmp_path}/talk.db",
                "github_token": PAT,
                "github_base_url": github.url,
                "llm_max_retries": 0,
                "llm_timeout": 10,
                "integration_max_retries": 0,
                **openai.settings(),
                **settings,
            }
            runtime = Runtime(load_settings(**values), clock=clock)
            await runtime.start()
            runtimes.append(runtime)
            return Talk(github, openai, runtime, clock)

        try:
            yield make
        finally:
            for runtime in runtimes:
                await runtime.close()
