"""The set-up flow through a real `arbiter serve`: created, saved, used at once, and after a
restart read back from .env alone."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import fixture_bytes, github_headers
from tests.e2e.serve import ServeProcess
from tests.fakes.github import AppKey, FakeGitHub
from tests.setup.conftest import SavedApp, setup_form

pytestmark = pytest.mark.e2e

IGNORED = "github/webhooks/check_run/rerequested.payload.json"  # no handler wants it
INSTALLED = "github/webhooks/installation/created.payload.json"


async def _deliver(
    http: aiohttp.ClientSession, server: ServeProcess, fixture: str, event: str, secret: str
) -> tuple[int, dict[str, object]]:
    body = fixture_bytes(fixture)
    headers = github_headers(event, f"{event}-{uuid.uuid4()}", body, secret)
    async with http.post(f"{server.url}/webhooks/github", data=body, headers=headers) as r:
        return r.status, await r.json()


async def test_setup_through_a_real_server_then_a_restart(
    tmp_path: Path, fake_github: FakeGitHub, app_key: AppKey
) -> None:
    env = {
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/serve.db",
        "ARBITER_GITHUB_BASE_URL": fake_github.url,
        "ARBITER_WORKER_POLL_INTERVAL": "0.2",
    }
    server = ServeProcess(tmp_path, env)
    server.env["ARBITER_PUBLIC_URL"] = server.url  # known before start: the port is chosen
    async with server, aiohttp.ClientSession() as http:
        status, _ = await _deliver(http, server, IGNORED, "check_run", "anything")
        assert status == 403  # not configured yet: verification fails closed

        async with http.get(f"{server.url}/setup") as response:
            assert response.status == 403  # the page wants the token from the log
        # The operator opens the link Arbiter printed at start.
        (link,) = [
            json.loads(line)["url"]
            for line in server.log().splitlines()
            if "no GitHub App configured" in line
        ]
        assert link.startswith(f"{server.url}/setup?token=")
        async with http.get(link) as response:
            assert response.status == 200
            form = setup_form(await response.text())
        assert form is not None
        assert form.action.startswith(f"{fake_github.url}/settings/apps/new?state=")
        assert form.manifest["hook_attributes"]["url"] == f"{server.url}/webhooks/github"

        code = fake_github.add_manifest_code(form.manifest, key=app_key)
        forged = {"code": code, "state": "forged"}
        async with http.get(f"{server.url}/setup/callback", params=forged) as response:
            assert response.status == 403
        callback = {"code": code, "state": form.state}
        async with http.get(f"{server.url}/setup/callback", params=callback) as response:
            assert response.status == 200, await response.text()
        created = fake_github.created_apps[0]
        secret = str(created["webhook_secret"])

        # Saved: the three settings in .env, the key in a file only this user can read.
        saved = SavedApp.read(tmp_path)
        assert saved.env["ARBITER_GITHUB_APP_ID"] == str(created["id"])
        assert saved.env["ARBITER_GITHUB_WEBHOOK_SECRET"] == secret
        assert saved.key_mode == 0o600 and saved.key_text == created["pem"]

        # Used at once, by the same process: signed with the new secret is accepted.
        status, answer = await _deliver(http, server, IGNORED, "check_run", secret)
        assert (status, answer.get("ignored")) == (202, True)
        status, answer = await _deliver(http, server, INSTALLED, "installation", secret)
        assert status == 202 and "job_id" in answer
        status, _ = await _deliver(http, server, INSTALLED, "installation", "wrong-secret")
        assert status == 401
        async with http.get(f"{server.url}/health/ready") as response:
            assert (await response.json())["platforms"]["github"] is True
        async with http.get(f"{server.url}/setup") as response:
            assert response.status == 404

    log = server.log()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(r.get("msg") == "github app created" for r in records)
    assert any(
        r.get("msg") == "set-up callback refused: unknown, used or expired state" for r in records
    )
    pem_body = str(created["pem"]).splitlines()[1]
    for leaked in (secret, str(created["client_secret"]), pem_body, code):
        assert leaked not in log

    # A restart reads the App from .env alone: the environment still has no credentials.
    restarted = ServeProcess(tmp_path, {**env, "ARBITER_PUBLIC_URL": server.url})
    async with restarted, aiohttp.ClientSession() as http:
        status, answer = await _deliver(http, restarted, IGNORED, "check_run", secret)
        assert (status, answer.get("ignored")) == (202, True)
        async with http.get(f"{restarted.url}/setup") as response:
            assert response.status == 404
