"""App and token authentication: the private key, JWTs and installation tokens."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from config.settings import SettingsError, load_settings
from platforms.base import PlatformError, PlatformNotConfigured
from platforms.github import GitHub, load_private_key
from tests.fakes.github import AppKey, FakeGitHub, ManualClock
from tests.platforms.conftest import APP_ID, INSTALLATION, PAT, REPO, MakeGitHub, github_settings

PULL = f"/repos/{REPO}/pulls/1"
MINT = f"/app/installations/{INSTALLATION}/access_tokens"


@pytest.fixture(autouse=True)
def seeded(fake: FakeGitHub) -> None:
    fake.add_pull(REPO, 1)


def authorization(fake: FakeGitHub, path: str) -> list[str]:
    return [r.headers["authorization"] for r in fake.requests_to("GET", path)]


# --- The private key ----------------------------------------------------------------------------


def test_load_private_key_reads_inline_pem_and_one_line_escapes(app_key: AppKey) -> None:
    inline = load_settings(github_private_key=SecretStr(app_key.private_pem))
    escaped = load_settings(github_private_key=SecretStr(app_key.private_pem.replace("\n", "\\n")))

    assert load_private_key(inline) == app_key.private_pem
    assert load_private_key(escaped) == app_key.private_pem
    assert load_private_key(load_settings()) is None


def test_load_private_key_reads_the_key_file(app_key: AppKey, tmp_path: Path) -> None:
    path = tmp_path / "app.pem"
    path.write_text(app_key.private_pem)

    assert load_private_key(load_settings(github_private_key_path=path)) == app_key.private_pem


def test_an_unreadable_key_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ARBITER_GITHUB_PRIVATE_KEY_PATH") as caught:
        load_private_key(load_settings(github_private_key_path=tmp_path / "missing.pem"))

    assert "missing.pem" in str(caught.value)


def test_a_key_that_is_not_pem_names_the_setting_without_quoting_it() -> None:
    secret = "not-a-key-but-maybe-a-secret-1234"

    with pytest.raises(SettingsError, match="ARBITER_GITHUB_PRIVATE_KEY:") as caught:
        load_private_key(load_settings(github_private_key=SecretStr(secret)))

    assert secret not in str(caught.value)
    assert "PEM RSA private key" in str(caught.value)


def test_a_key_that_is_not_rsa_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "ec.pem"
    path.write_bytes(key)

    with pytest.raises(SettingsError, match="ARBITER_GITHUB_PRIVATE_KEY_PATH: not a PEM RSA"):
        load_private_key(load_settings(github_private_key_path=path))


async def test_a_bad_key_fails_at_start_up(session: aiohttp.ClientSession) -> None:
    settings = load_settings(github_app_id=APP_ID, github_private_key=SecretStr("garbage"))

    with pytest.raises(SettingsError, match="ARBITER_GITHUB_PRIVATE_KEY"):
        GitHub(settings, session)


# --- Modes --------------------------------------------------------------------------------------


async def test_without_credentials_there_is_no_platform(session: aiohttp.ClientSession) -> None:
    github = GitHub(load_settings(), session)

    assert github.mode is None
    with pytest.raises(PlatformNotConfigured, match="ARBITER_GITHUB_TOKEN"):
        github.for_repo(REPO, None)


async def test_the_app_wins_when_both_credentials_are_set(
    fake: FakeGitHub, make_github: MakeGitHub
) -> None:
    github = make_github("app", github_token=SecretStr(PAT))

    await github.for_repo(REPO, INSTALLATION).pull_request(1)

    assert github.mode == "app"
    assert authorization(fake, PULL) == [f"token {fake.minted[0].token}"]


async def test_token_mode_sends_the_token_and_mints_nothing(
    fake: FakeGitHub, make_github: MakeGitHub
) -> None:
    github = make_github("token")

    await github.for_repo(REPO, None).pull_request(1)

    assert github.mode == "token"
    assert authorization(fake, PULL) == [f"token {PAT}"]
    assert fake.minted == [] and fake.requests_to("*", "/app*") == []


# --- Installation tokens ------------------------------------------------------------------------


async def test_fifty_concurrent_calls_mint_one_token(
    fake: FakeGitHub, make_github: MakeGitHub
) -> None:
    fake.delay("POST", MINT, 0.05)  # the first mint is slow: everyone else is waiting on it
    github = make_github("app")

    await asyncio.gather(*(github.for_repo(REPO, INSTALLATION).pull_request(1) for _ in range(50)))

    assert len(fake.minted) == 1
    assert len(fake.requests_to("POST", MINT)) == 1
    assert authorization(fake, PULL) == [f"token {fake.minted[0].token}"] * 50


async def test_a_token_is_reused_until_a_minute_before_it_expires(
    fake: FakeGitHub, make_github: MakeGitHub, manual_clock: ManualClock
) -> None:
    client_clock = ManualClock(start=manual_clock.now)  # the fake's clock stays put: JWTs hold
    platform = make_github("app", clock=client_clock).for_repo(REPO, INSTALLATION)

    await platform.pull_request(1)
    client_clock.advance(3000)  # 10 minutes left of GitHub's hour
    await platform.pull_request(1)
    assert len(fake.minted) == 1

    client_clock.advance(545)  # 55 seconds left: too close to use
    fake.token_lifetime += 3545  # the fake's clock stood still; its next token is good for an hour
    await platform.pull_request(1)
    await platform.pull_request(1)

    first, second = fake.minted
    assert (
        authorization(fake, PULL)
        == [f"token {t}" for t in (first.token,) * 2] + [f"token {second.token}"] * 2
    )


async def test_a_refused_installation_token_is_replaced_once(
    fake: FakeGitHub, make_github: MakeGitHub
) -> None:
    platform = make_github("app").for_repo(REPO, INSTALLATION)
    await platform.pull_request(1)
    fake.revoke_tokens()

    await platform.pull_request(1)

    assert len(fake.minted) == 2
    # Refused, then asked again with the new token (and the ETag of the first answer).
    assert [r.status for r in fake.requests_to("GET", PULL)] == [200, 401, 304]
    assert authorization(fake, PULL)[2] == f"token {fake.minted[1].token}"


async def test_an_unknown_installation_is_looked_up_once_per_repository(
    fake: FakeGitHub, make_github: MakeGitHub
) -> None:
    github = make_github("app")

    await github.for_repo(REPO, None).pull_request(1)
    await github.for_repo(REPO, None).pull_request(1)

    assert len(fake.requests_to("GET", f"/repos/{REPO}/installation")) == 1
    assert [m.installation_id for m in fake.minted] == [INSTALLATION]


async def test_a_repository_without_the_app_says_so(
    fake: FakeGitHub, make_github: MakeGitHub
) -> None:
    fake.add_repo("octo/private", installation_id=None)

    with pytest.raises(PlatformError, match="installation on octo/private") as caught:
        await make_github("app").for_repo("octo/private", None).pull_request(1)

    assert caught.value.status == 404


async def test_a_wrong_app_id_is_reported_with_the_setting_to_check(
    fake: FakeGitHub, make_github: MakeGitHub
) -> None:
    platform = make_github("app", github_app_id="999").for_repo(REPO, INSTALLATION)

    with pytest.raises(PlatformError, match="ARBITER_GITHUB_APP_ID") as caught:
        await platform.pull_request(1)

    assert caught.value.status == 401


# --- JWTs and clock skew -------------------------------------------------------------------------


async def test_the_jwt_is_issued_a_minute_in_the_past_and_lives_under_ten_minutes(
    fake: FakeGitHub, make_github: MakeGitHub, app_key: AppKey
) -> None:
    before = time.time()
    await make_github("app").for_repo(REPO, INSTALLATION).pull_request(1)

    [mint] = fake.requests_to("POST", MINT)
    token = mint.headers["authorization"].split(" ", 1)[1]
    claims = jwt.decode(token, app_key.public_pem, algorithms=["RS256"])
    assert claims["iss"] == APP_ID
    assert claims["iat"] <= before - 59
    assert claims["exp"] - claims["iat"] <= 600


@pytest.mark.parametrize(("behind", "accepted"), [(30, True), (120, False)])
async def test_a_github_clock_behind_ours_is_tolerated_up_to_the_backdating(
    app_key: AppKey, session: aiohttp.ClientSession, behind: float, accepted: bool
) -> None:
    github_clock = ManualClock(start=time.time() - behind)
    fake = FakeGitHub(app_id=APP_ID, public_key=app_key.public_pem, clock=github_clock)
    async with fake:
        fake.add_repo(REPO, installation_id=INSTALLATION)
        fake.add_pull(REPO, 1)
        platform = GitHub(github_settings(fake, "app", app_key), session).for_repo(
            REPO, INSTALLATION
        )

        if accepted:
            assert (await platform.pull_request(1)).number == 1
        else:
            with pytest.raises(PlatformError, match="'Issued at' claim"):
                await platform.pull_request(1)
