"""An end-to-end world for GitLab: a fake GitLab and a fake OpenAI in this process, `arbiter
serve` as a real process pointed at both, and helpers to deliver GitLab webhooks (the shared
fixtures, carrying what the fake holds) and wait for reviews."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bot.store.base import ReviewRecord
from bot.store.sql import SQLStore
from tests.conftest import fixture_json
from tests.e2e.serve import ServeProcess
from tests.e2e.world import review_ended, wait_for
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.openai import FakeOpenAI

HOOK_TOKEN = "e2e-gitlab-hook-token"
API_TOKEN = "glpat-" + "e" * 20
BOT = "arbiter-bot"  # the token's user, and ARBITER_BOT_NAME
PROJECT = "gitlabhq/gitlab-test"  # the project of the shared merge request fixture

MERGE_REQUEST_HOOK = "Merge Request Hook"
NOTE_HOOK = "Note Hook"


class GitLabWorld:
    def __init__(self, tmp_path: Path, gitlab: FakeGitLab, openai: FakeOpenAI) -> None:
        self.tmp_path = tmp_path
        self.gitlab = gitlab
        self.openai = openai
        self.db_url = f"sqlite+aiosqlite:///{tmp_path}/gitlab-review.db"
        self.server: ServeProcess | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "ARBITER_DATABASE_URL": self.db_url,
            "ARBITER_GITLAB_WEBHOOK_TOKEN": HOOK_TOKEN,
            "ARBITER_GITLAB_TOKEN": API_TOKEN,
            "ARBITER_GITLAB_BASE_URL": self.gitlab.url,
            "ARBITER_BOT_NAME": BOT,
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

    def merge_request_hook(
        self,
        iid: int,
        action: str,
        *,
        oldrev: str | None = None,
        changes: dict[str, Any] | None = None,
        user: str | None = None,
    ) -> dict[str, Any]:
        """A Merge Request Hook (the shared fixture's shape, or the "update with oldrev" one)
        carrying the fake's merge request as it is now."""
        fixture = "service_merge_request.json" if oldrev else "merge_request.json"
        payload: dict[str, Any] = copy.deepcopy(fixture_json(f"gitlab/webhooks/{fixture}"))
        mr = self.gitlab.merge_request(PROJECT, iid)
        payload["project"] = self._project()
        attrs = payload["object_attributes"]
        attrs.update(
            id=mr["id"],
            iid=iid,
            title=mr["title"],
            description=mr["description"] or "",
            source_branch=mr["source_branch"],
            target_branch=mr["target_branch"],
            source_project_id=mr["source_project_id"],
            target_project_id=mr["target_project_id"],
            state=mr["state"],
            draft=mr["draft"],
            work_in_progress=mr["draft"],
            url=mr["web_url"],
            action=action,
        )
        attrs["last_commit"] = {**attrs["last_commit"], "id": mr["sha"]}
        if oldrev:
            attrs["oldrev"] = oldrev
        else:
            attrs.pop("oldrev", None)
        payload["changes"] = changes or {}
        payload["user"] = self._hook_user(user or mr["author"]["username"])
        return payload

    def note_hook(self, iid: int, note: dict[str, Any]) -> dict[str, Any]:
        """A Note Hook for a note the fake holds (`add_note`'s answer)."""
        payload: dict[str, Any] = copy.deepcopy(
            fixture_json("gitlab/webhooks/note_merge_request.json")
        )
        mr = self.gitlab.merge_request(PROJECT, iid)
        project = self._project()
        payload["project"] = project
        payload["project_id"] = project["id"]
        payload["object_attributes"].update(
            id=note["id"],
            note=note["body"],
            noteable_type="MergeRequest",
            noteable_id=mr["id"],
            project_id=project["id"],
            author_id=note["author"]["id"],
            discussion_id=note["discussion_id"],
            type=note["type"],
            position=note.get("position"),
            system=False,
            action="create",
            url=f"{mr['web_url']}#note_{note['id']}",
        )
        merge_request = payload["merge_request"]
        merge_request.update(
            id=mr["id"],
            iid=iid,
            title=mr["title"],
            source_branch=mr["source_branch"],
            target_branch=mr["target_branch"],
            state=mr["state"],
        )
        merge_request["last_commit"] = {**merge_request["last_commit"], "id": mr["sha"]}
        payload["user"] = self._hook_user(note["author"]["username"])
        return payload

    def _project(self) -> dict[str, Any]:
        project = self.gitlab.project(PROJECT)
        fixture = fixture_json("gitlab/webhooks/merge_request.json")["project"]
        return {
            **fixture,
            "id": project["id"],
            "name": project["name"],
            "path_with_namespace": project["path_with_namespace"],
            "web_url": project["web_url"],
            "default_branch": project["default_branch"],
        }

    def _hook_user(self, username: str) -> dict[str, Any]:
        user = self.gitlab.user(username)
        return {
            "id": user["id"],
            "name": user["name"],
            "username": user["username"],
            "avatar_url": user["avatar_url"],
            "email": "[REDACTED]",
        }

    async def deliver(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        key: str | None = None,
        token: str = HOOK_TOKEN,
    ) -> tuple[int, dict[str, Any]]:
        """POST the hook as GitLab does: the secret token, the event name, the idempotency key
        (the same for GitLab's retries of one delivery) and a webhook UUID."""
        assert self.server is not None, "start the server first"
        key = key or str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "X-Gitlab-Event": event,
            "X-Gitlab-Token": token,
            "X-Gitlab-Instance": self.gitlab.url,
            "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
            "Idempotency-Key": key,
            "User-Agent": "GitLab/17.0.0",
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.server.url}/webhooks/gitlab", data=json.dumps(payload), headers=headers
            ) as response,
        ):
            return response.status, await response.json()

    async def metrics(self) -> str:
        assert self.server is not None
        async with aiohttp.ClientSession() as http, http.get(f"{self.server.url}/metrics") as r:
            return await r.text()

    # --- What happened ---------------------------------------------------------------------

    async def store(self) -> SQLStore:
        store = SQLStore(self.db_url)
        await store.open()
        return store

    async def reviews(self) -> list[ReviewRecord]:
        store = await self.store()
        try:
            return await store.list_reviews()
        finally:
            await store.close()

    def statuses(self, sha: str) -> list[tuple[str, str]]:
        """Every status GitLab accepted for `sha`, in order: (state, description)."""
        return [(s["status"], s["description"]) for s in self.gitlab.status_changes(PROJECT, sha)]

    async def settled(self, sha: str, timeout: float = 30) -> list[tuple[str, str]]:
        """The statuses of `sha`, once the last one is final (not running or pending), the
        review of `sha` is recorded as finished and its job has ended."""

        async def done() -> bool:
            found = self.statuses(sha)
            if not (found and found[-1][0] not in ("running", "pending")):
                return False
            return await review_ended(self.db_url, sha)

        await wait_for(done, timeout, f"a final status on {sha[:7]} and its review recorded")
        return self.statuses(sha)

    def ours(self, iid: int) -> list[dict[str, Any]]:
        """The notes Arbiter posted on the merge request, oldest first."""
        return [n for n in self.gitlab.notes(PROJECT, iid) if n["author"]["username"] == BOT]
