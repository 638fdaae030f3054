"""handlers/installation.py: the store follows the App's installations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.events import from_github
from bot.runtime import Runtime
from config.settings import load_settings
from tests.conftest import fixture_json


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/i.db"))
    await rt.start()
    yield rt
    await rt.close()


async def _deliver(runtime: Runtime, event: str, fixture: str, **changes: object) -> None:
    payload = fixture_json(f"github/webhooks/{fixture}")
    payload.update(changes)
    result = await runtime.router.dispatch(runtime.context(from_github(event, "d", payload)))
    assert result.ok and result.succeeded


async def test_install_change_repositories_suspend_and_delete(runtime: Runtime) -> None:
    await _deliver(runtime, "installation", "installation/created.payload.json")
    found = await runtime.store.get_installation("github", 957387)
    assert found is not None
    assert (found.account, found.account_type, found.state) == ("Codertocat", "User", "active")
    assert found.repositories == ("Codertocat/Hello-World",)

    await _deliver(
        runtime, "installation_repositories", "installation_repositories/added.payload.json"
    )
    found = await runtime.store.get_installation("github", 957387)
    assert found is not None and found.repositories == (
        "Codertocat/Hello-World",
        "Codertocat/Space",
    )

    payload = fixture_json("github/webhooks/installation_repositories/added.payload.json")
    removed = payload["repositories_added"]
    await _deliver(
        runtime,
        "installation_repositories",
        "installation_repositories/added.payload.json",
        action="removed",
        repositories_added=[],
        repositories_removed=removed,
    )
    found = await runtime.store.get_installation("github", 957387)
    assert found is not None and found.repositories == ("Codertocat/Hello-World",)

    await _deliver(runtime, "installation", "installation/created.payload.json", action="suspend")
    found = await runtime.store.get_installation("github", 957387)
    assert found is not None and found.state == "suspended"
    await _deliver(runtime, "installation", "installation/created.payload.json", action="unsuspend")
    found = await runtime.store.get_installation("github", 957387)
    assert found is not None and found.state == "active"


async def test_events_for_an_unknown_installation_still_record_it(runtime: Runtime) -> None:
    await _deliver(runtime, "installation", "installation/deleted.payload.json")
    deleted = await runtime.store.get_installation("github", 2)
    assert deleted is not None and (deleted.account, deleted.state) == ("octocat", "deleted")
    await _deliver(runtime, "installation", "installation/suspend.payload.json")
    suspended = await runtime.store.get_installation("github", 16598467)
    assert suspended is not None and suspended.state == "suspended"
