"""The repositories the sweep looks at are those Arbiter has seen: an installation's, those a
review was queued for, on either platform; a repository removed from an installation is
forgotten."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.events import from_github, from_gitlab
from bot.runtime import Runtime
from config.settings import load_settings
from tests.conftest import fixture_json


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    started = Runtime(load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/known.db"))
    await started.start()
    yield started
    await started.close()


async def _dispatch(runtime: Runtime, name: str, fixture: str) -> None:
    payload = copy.deepcopy(fixture_json(fixture))
    if name == "gitlab":
        event = from_gitlab(str(uuid.uuid4()), payload)
    else:
        event = from_github(name, str(uuid.uuid4()), payload)
    result = await runtime.router.dispatch(runtime.context(event))
    assert result.ok, result.failed


async def test_installations_and_reviews_make_repositories_known(runtime: Runtime) -> None:
    store = runtime.store
    await _dispatch(runtime, "installation", "github/webhooks/installation/created.payload.json")
    (installed,) = await store.known_repositories("github")
    assert (installed.repo, installed.installation_id) == ("Codertocat/Hello-World", 957387)

    await _dispatch(runtime, "gitlab", "gitlab/webhooks/merge_request.json")
    (project,) = await store.known_repositories("gitlab")
    assert project.repo == "gitlabhq/gitlab-test" and project.installation_id is None

    added = fixture_json("github/webhooks/installation_repositories/added.payload.json")
    await _dispatch(
        runtime,
        "installation_repositories",
        "github/webhooks/installation_repositories/added.payload.json",
    )
    names = {r["full_name"] for r in added["repositories_added"]}
    known = {r.repo for r in await store.known_repositories("github")}
    assert names <= known


async def test_a_repository_removed_from_the_installation_is_forgotten(
    runtime: Runtime,
) -> None:
    store = runtime.store
    await _dispatch(runtime, "installation", "github/webhooks/installation/created.payload.json")
    payload = copy.deepcopy(
        fixture_json("github/webhooks/installation_repositories/added.payload.json")
    )
    payload["action"] = "removed"
    payload["repositories_removed"] = [{"full_name": "Codertocat/Hello-World"}]
    payload["repositories_added"] = []
    event = from_github("installation_repositories", str(uuid.uuid4()), payload)
    assert (await runtime.router.dispatch(runtime.context(event))).ok
    assert await store.known_repositories("github") == []
