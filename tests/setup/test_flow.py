"""The set-up flow in process: the page, the callback, the state, and the switch to the App."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.setup import build_manifest, load_app_definition
from config.settings import SettingsError, load_settings
from tests.conftest import fixture_bytes, github_headers
from tests.fakes.github import AppKey, FakeGitHub
from tests.setup.conftest import SETUP_TOKEN, Arbiter, MakeArbiter, SavedApp, setup_form

OPENED = "github/webhooks/pull_request/opened.payload.json"


async def _post_webhook(arbiter: Arbiter, secret: str, delivery: str) -> int:
    body = fixture_bytes(OPENED)
    headers = github_headers("pull_request", delivery, body, secret)
    response = await arbiter.client.post("/webhooks/github", data=body, headers=headers)
    return response.status


async def test_the_page_posts_the_manifest_of_app_yml_to_github(
    make_arbiter: MakeArbiter, fake_github: FakeGitHub
) -> None:
    arbiter = await make_arbiter()
    response = await arbiter.client.get("/setup", params={"token": SETUP_TOKEN})
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "form-action 'self' " + fake_github.url in response.headers["Content-Security-Policy"]
    form = setup_form(await response.text())
    assert form is not None
    assert form.action.startswith(f"{fake_github.url}/settings/apps/new?state=")
    assert len(form.state) >= 40
    assert form.manifest == build_manifest(load_app_definition(), public_url=arbiter.url)
    assert form.manifest["hook_attributes"] == {
        "url": f"{arbiter.url}/webhooks/github",
        "active": True,
    }
    assert form.manifest["redirect_url"] == f"{arbiter.url}/setup/callback"
    again = await arbiter.form()
    assert again.state != form.state  # one state per page view


async def test_an_organization_owner_changes_where_the_form_goes(
    make_arbiter: MakeArbiter, fake_github: FakeGitHub
) -> None:
    arbiter = await make_arbiter()
    form = await arbiter.form("?organization=acme-labs")
    assert form.path == "/organizations/acme-labs/settings/apps/new"

    hostile = "<script>alert(1)</script>"
    response = await arbiter.client.get(
        "/setup", params={"organization": hostile, "token": SETUP_TOKEN}
    )
    page = await response.text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "is not an organization name on GitHub" in page
    refused = setup_form(page)
    assert refused is not None and refused.path == "/settings/apps/new"


async def test_without_a_public_url_the_page_says_so(make_arbiter: MakeArbiter) -> None:
    arbiter = await make_arbiter(public_url=None)
    response = await arbiter.client.get("/setup", params={"token": SETUP_TOKEN})
    page = await response.text()
    assert response.status == 200
    assert "ARBITER_PUBLIC_URL is not set" in page
    assert setup_form(page) is None


async def test_the_callback_saves_the_app_and_the_server_uses_it_at_once(
    make_arbiter: MakeArbiter, fake_github: FakeGitHub, app_key: AppKey, tmp_path: Path
) -> None:
    arbiter = await make_arbiter()
    assert await _post_webhook(arbiter, "any", "before") == 403  # GitHub not configured yet

    form = await arbiter.form()
    code = fake_github.add_manifest_code(form.manifest, owner="octo-org", key=app_key)
    response = await arbiter.client.get(
        "/setup/callback", params={"code": code, "state": form.state}
    )
    page = await response.text()
    assert response.status == 200, page
    assert response.headers["Referrer-Policy"] == "no-referrer"
    created = fake_github.created_apps[0]
    assert len(fake_github.requests_to("POST", f"/app-manifests/{code}/conversions")) == 1
    assert f'href="{created["html_url"]}/installations/new"' in page
    assert "no restart needed" in page
    for secret in (created["webhook_secret"], created["client_secret"], "PRIVATE KEY"):
        assert secret not in page

    # .env holds the three settings, and the key file is the App's pem, readable by us only.
    saved = SavedApp.read(tmp_path)
    assert saved.env["ARBITER_GITHUB_APP_ID"] == str(created["id"])
    assert saved.env["ARBITER_GITHUB_WEBHOOK_SECRET"] == created["webhook_secret"]
    assert saved.key_path.parent == tmp_path
    assert (saved.key_mode, saved.env_mode) == (0o600, 0o600)
    assert saved.key_text == created["pem"]
    assert not any("CLIENT" in name for name in saved.env)

    # The running server verifies webhooks with the new secret, and only with it.
    assert await _post_webhook(arbiter, created["webhook_secret"], "after") == 202
    assert await _post_webhook(arbiter, "not-the-secret", "forged") == 401
    # Its GitHub client is the App now: GitHub (the fake) accepts a JWT signed with the pem.
    assert arbiter.runtime.github is not None and arbiter.runtime.github.mode == "app"
    assert await arbiter.runtime.github.login() == f"{created['slug']}[bot]"
    assert fake_github.requests_to("GET", "/app")[-1].actor == "app"

    # Set-up is over: both routes are gone, and the state cannot be replayed.
    assert (await arbiter.client.get("/setup", params={"token": SETUP_TOKEN})).status == 404
    replay = await arbiter.client.get("/setup/callback", params={"code": code, "state": form.state})
    assert replay.status == 404
    assert len(fake_github.created_apps) == 1

    # What a restart reads back from .env is the same App.
    reloaded = load_settings()
    assert reloaded.github_app_id == str(created["id"])
    assert reloaded.github_private_key_path == saved.key_path
    assert reloaded.github_webhook_secret == SecretStr(created["webhook_secret"])


@pytest.mark.parametrize(
    "state", [None, "", "forged-state", "x" * 43], ids=["missing", "empty", "forged", "shaped"]
)
async def test_a_callback_with_a_state_this_server_did_not_issue_is_refused(
    make_arbiter: MakeArbiter, fake_github: FakeGitHub, tmp_path: Path, state: str | None
) -> None:
    arbiter = await make_arbiter()
    form = await arbiter.form()
    code = fake_github.add_manifest_code(form.manifest)
    params = {"code": code} if state is None else {"code": code, "state": state}
    response = await arbiter.client.get("/setup/callback", params=params)
    assert response.status == 403
    assert "not valid" in await response.text()
    assert fake_github.requests_to("POST", "/app-manifests/*") == []  # the code was not spent
    assert not (tmp_path / ".env").exists()
    assert (await arbiter.client.get("/setup", params={"token": SETUP_TOKEN})).status == 200


async def test_a_state_works_once_even_when_the_exchange_fails(
    make_arbiter: MakeArbiter, fake_github: FakeGitHub, tmp_path: Path
) -> None:
    arbiter = await make_arbiter()
    form = await arbiter.form()
    failed = await arbiter.client.get(
        "/setup/callback", params={"code": "no-such-code", "state": form.state}
    )
    assert failed.status == 502
    assert "GitHub refused the manifest code: 404" in await failed.text()
    code = fake_github.add_manifest_code(form.manifest)
    replay = await arbiter.client.get("/setup/callback", params={"code": code, "state": form.state})
    assert replay.status == 403
    assert not (tmp_path / ".env").exists()


async def test_a_callback_without_a_code_saves_nothing(
    make_arbiter: MakeArbiter, tmp_path: Path
) -> None:
    arbiter = await make_arbiter()
    form = await arbiter.form()
    response = await arbiter.client.get("/setup/callback", params={"state": form.state})
    assert response.status == 400
    assert not (tmp_path / ".env").exists()


async def test_existing_values_are_replaced_and_reported(
    make_arbiter: MakeArbiter,
    fake_github: FakeGitHub,
    app_key: AppKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = (
        "# deployment settings\n"
        "ARBITER_GITHUB_WEBHOOK_SECRET=an-old-secret\n"
        "ARBITER_LOG_LEVEL=DEBUG\n"
    )
    (tmp_path / ".env").write_text(before)
    (tmp_path / ".env").chmod(0o644)  # readable by everyone on the machine
    monkeypatch.setenv("ARBITER_GITHUB_APP_ID", "999")  # an App id without its key
    arbiter = await make_arbiter()
    form = await arbiter.form()
    code = fake_github.add_manifest_code(form.manifest, key=app_key)
    response = await arbiter.client.get(
        "/setup/callback", params={"code": code, "state": form.state}
    )
    page = await response.text()
    assert response.status == 200, page
    assert "ARBITER_GITHUB_WEBHOOK_SECRET already had a different value" in page
    assert "it was replaced" in page
    assert "ARBITER_GITHUB_APP_ID is also set in this process&#x27;s environment" in page
    assert "was readable by other users (mode 0644); it is now 0600" in page
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    after = (tmp_path / ".env").read_text()
    created = fake_github.created_apps[0]
    assert after.startswith(
        "# deployment settings\n"
        f"ARBITER_GITHUB_WEBHOOK_SECRET={created['webhook_secret']}\n"
        "ARBITER_LOG_LEVEL=DEBUG\n"
    )
    assert "an-old-secret" not in after


async def test_setup_is_closed_on_a_server_that_serves_github_with_a_token(
    make_arbiter: MakeArbiter,
) -> None:
    # Otherwise whoever reaches the page could swap the webhook secret of a working server.
    arbiter = await make_arbiter(github_token="ghp_" + "t" * 36, github_webhook_secret="s")
    assert (await arbiter.client.get("/setup", params={"token": SETUP_TOKEN})).status == 404
    assert (await arbiter.client.get("/setup/callback?code=x&state=y")).status == 404


async def test_setup_is_closed_for_a_configured_app(
    make_arbiter: MakeArbiter, app_key: AppKey
) -> None:
    arbiter = await make_arbiter(github_app_id="4242", github_private_key=app_key.private_pem)
    assert (await arbiter.client.get("/setup", params={"token": SETUP_TOKEN})).status == 404


def test_the_page_shows_no_secret_of_the_manifest_flow() -> None:
    # The manifest carries URLs and names only; nothing in it may be a credential.
    manifest = build_manifest(load_app_definition(), public_url="https://arbiter.example.com")
    text = json.dumps(manifest).lower()
    assert not any(word in text for word in ("secret", "token", "pem", "password"))


async def test_credentials_that_cannot_be_saved_leave_the_page_open(
    make_arbiter: MakeArbiter, fake_github: FakeGitHub, app_key: AppKey, tmp_path: Path
) -> None:
    (tmp_path / ".env").mkdir()  # not a file: the write fails
    arbiter = await make_arbiter()
    form = await arbiter.form()
    code = fake_github.add_manifest_code(form.manifest, key=app_key)
    response = await arbiter.client.get(
        "/setup/callback", params={"code": code, "state": form.state}
    )
    page = await response.text()
    assert response.status == 500
    assert "could not be saved" in page and "ARBITER_GITHUB_APP_ID" in page
    created = fake_github.created_apps[0]
    assert created["webhook_secret"] not in page and created["pem"] not in page
    assert not arbiter.runtime.platforms["github"].enabled
    assert (await arbiter.client.get("/setup", params={"token": SETUP_TOKEN})).status == 200


async def test_a_key_the_runtime_cannot_use_keeps_the_old_credentials(
    make_arbiter: MakeArbiter, tmp_path: Path
) -> None:
    arbiter = await make_arbiter()
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("not a key\n")
    before = arbiter.runtime.settings
    with pytest.raises(SettingsError, match="ARBITER_GITHUB_PRIVATE_KEY_PATH"):
        arbiter.runtime.use_github_app("1", bad_key, "secret")
    assert arbiter.runtime.settings is before
    assert arbiter.runtime.github is None
    assert await _post_webhook(arbiter, "secret", "still-closed") == 403


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
async def test_the_page_wants_the_token_from_the_log(
    make_arbiter: MakeArbiter, token: str | None
) -> None:
    arbiter = await make_arbiter()
    params = {} if token is None else {"token": token}
    response = await arbiter.client.get("/setup", params=params)
    assert response.status == 403
    text = await response.text()
    assert "token" in text and "create-app" not in text  # no form, no state issued
