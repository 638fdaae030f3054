"""An end-to-end world: a fake GitHub and a fake OpenAI in this process, `arbiter serve` as a
real process pointed at both, and helpers to deliver signed webhooks and wait for reviews."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bot.store.base import ReviewRecord
from bot.store.sql import SQLStore
from tests.conftest import fixture_json, github_headers
from tests.e2e.serve import ServeProcess
from tests.fakes.github import FakeGitHub
from tests.fakes.openai import FakeOpenAI

SECRET = "e2e-review-secret"
PAT = "ghp_" + "e" * 36
REPO = "Codertocat/Hello-World"  # the repository of the shared fixtures


class World:
    def __init__(self, tmp_path: Path, github: FakeGitHub, openai: FakeOpenAI) -> None:
        self.tmp_path = tmp_path
        self.github = github
        self.openai = openai
        self.db_url = f"sqlite+aiosqlite:///{tmp_path}/review.db"
        self.server: ServeProcess | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "ARBITER_DATABASE_URL": self.db_url,
            "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
            "ARBITER_GITHUB_TOKEN": PAT,
            "ARBITER_GITHUB_BASE_URL": self.github.url,
            "ARBITER_DEFAULT_MODEL": "gpt-4o",
            "ARBITER_WORKER_POLL_INTERVAL": "0.2",
            "ARBITER_LLM_MAX_RETRIES": "0",
            # Recovery passes list pull requests on their own schedule: only the tests of
            # recovery turn them on, so every other test sees the API calls of its deliveries.
            "ARBITER_REDELIVERY_INTERVAL_SECONDS": "0",
            "ARBITER_RECONCILE_INTERVAL_SECONDS": "0",
            **self.openai.env(),
            **extra,
        }

    async def start(self, **extra: str) -> ServeProcess:
        self.server = ServeProcess(self.tmp_path, self.env(**extra))
        await self.server.start()
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def kill(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server = None

    # --- Deliveries ------------------------------------------------------------------------

    def pull_request_payload(self, number: int, action: str, **extra: Any) -> dict[str, Any]:
        """A pull_request delivery (the shared fixture's shape) carrying the fake's pull request."""
        payload: dict[str, Any] = copy.deepcopy(
            fixture_json("github/webhooks/pull_request/opened.payload.json")
        )
        payload["action"] = action
        payload["number"] = number
        payload["pull_request"] = self.github.update_pull(REPO, number)
        payload.update(extra)
        return payload

    def issue_comment_payload(
        self, number: int, comment: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        """An issue_comment delivery for a comment on pull request `number` (see module-level
        `issue_comment_payload` for the options)."""
        return issue_comment_payload(number, comment, **options)

    def review_comment_payload(
        self, number: int, comment: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        """A pull_request_review_comment delivery for an inline comment on pull request
        `number`, carrying the fake's pull request."""
        return review_comment_payload(self.github, number, comment, **options)

    async def deliver(
        self, event: str, payload: dict[str, Any], *, delivery: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        assert self.server is not None, "start the server first"
        body = json.dumps(payload).encode()
        headers = github_headers(event, delivery or str(uuid.uuid4()), body, SECRET)
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.server.url}/webhooks/github", data=body, headers=headers) as r,
        ):
            return r.status, await r.json()

    async def metrics(self) -> str:
        assert self.server is not None
        async with aiohttp.ClientSession() as http, http.get(f"{self.server.url}/metrics") as r:
            return await r.text()

    # --- What happened ---------------------------------------------------------------------

    async def reviews(self) -> list[ReviewRecord]:
        store = SQLStore(self.db_url)
        await store.open()
        try:
            return await store.list_reviews()
        finally:
            await store.close()

    async def store(self) -> SQLStore:
        store = SQLStore(self.db_url)
        await store.open()
        return store

    def statuses(self, sha: str) -> list[tuple[str, str]]:
        return [(s["state"], s["description"]) for s in self.github.statuses(REPO, sha)]

    async def settled(self, sha: str, timeout: float = 30) -> list[tuple[str, str]]:
        """The commit statuses of `sha`, once the last one is no longer "pending", the review of
        `sha` is recorded as finished and its job has ended."""

        async def done() -> bool:
            found = self.statuses(sha)
            if not (found and found[-1][0] != "pending"):
                return False
            return await review_ended(self.db_url, sha)

        await wait_for(done, timeout, f"a final status on {sha[:7]} and its review recorded")
        return self.statuses(sha)


async def review_ended(db_url: str, sha: str) -> bool:
    """Is the review of `sha` recorded as finished and its job ended? The final status goes
    out first: the review's record, its pull request's state and the job's end follow it (the
    worker's slot is given back meanwhile)."""
    store = SQLStore(db_url)
    await store.open()
    try:
        for review in await store.list_reviews():
            if review.head_sha != sha:
                continue
            if review.state == "running":
                return False
            job = None if review.job_id is None else await store.get_job(review.job_id)
            if job is not None and job.state == "running":
                return False
        return True
    finally:
        await store.close()


def issue_comment_payload(
    number: int,
    comment: dict[str, Any],
    *,
    action: str = "created",
    previous_body: str | None = None,
    sender: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An issue_comment delivery (the shared fixture's shape) for `comment` (as the fake GitHub
    returns it) on pull request `number`: GitHub marks the issue as a pull request with
    `issue.pull_request`. An edit carries the text before it in `changes.body.from`."""
    payload: dict[str, Any] = copy.deepcopy(
        fixture_json("github/webhooks/issue_comment/created.payload.json")
    )
    payload["action"] = action
    issue = payload["issue"]
    issue["number"] = number
    issue["pull_request"] = {
        "url": f"https://api.github.com/repos/{REPO}/pulls/{number}",
        "html_url": f"https://github.com/{REPO}/pull/{number}",
    }
    payload["comment"] = comment
    payload["sender"] = sender or comment["user"]
    if previous_body is not None:
        payload["changes"] = {"body": {"from": previous_body}}
    return payload


def review_comment_payload(
    github: FakeGitHub,
    number: int,
    comment: dict[str, Any],
    *,
    action: str = "created",
    previous_body: str | None = None,
    sender: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pull_request_review_comment delivery for `comment` (as the fake GitHub returns it; a
    reply carries `in_reply_to_id`) on pull request `number`."""
    payload: dict[str, Any] = copy.deepcopy(
        fixture_json("github/webhooks/pull_request_review_comment/created.payload.json")
    )
    payload["action"] = action
    payload["pull_request"] = github.update_pull(REPO, number)
    payload["comment"] = comment
    payload["sender"] = sender or comment["user"]
    if previous_body is not None:
        payload["changes"] = {"body": {"from": previous_body}}
    return payload


async def wait_for(
    predicate: Callable[[], bool] | Callable[[], Awaitable[bool]],
    timeout: float = 30,
    what: str = "a condition",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
