"""The fake GitHub refuses what GitHub refuses: otherwise the contract tests would prove little."""

from __future__ import annotations

import time

import aiohttp
import jwt
import pytest

from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.platforms.conftest import APP_ID, INSTALLATION, PAT, REPO


async def mint(
    fake: FakeGitHub, session: aiohttp.ClientSession, token: str
) -> aiohttp.ClientResponse:
    url = f"{fake.url}/app/installations/{INSTALLATION}/access_tokens"
    async with session.post(url, headers={"Authorization": f"Bearer {token}"}) as response:
        await response.read()
        return response


def app_jwt(key: str, *, iat: float, exp: float, iss: str = APP_ID) -> str:
    return jwt.encode({"iat": int(iat), "exp": int(exp), "iss": iss}, key, algorithm="RS256")


async def test_jwts_are_checked(
    fake: FakeGitHub, session: aiohttp.ClientSession, app_key: AppKey
) -> None:
    now = fake.clock()
    other = AppKey.generate()

    good = await mint(fake, session, app_jwt(app_key.private_pem, iat=now - 60, exp=now + 500))
    future = await mint(fake, session, app_jwt(app_key.private_pem, iat=now + 30, exp=now + 500))
    long = await mint(fake, session, app_jwt(app_key.private_pem, iat=now - 60, exp=now + 900))
    stale = await mint(fake, session, app_jwt(app_key.private_pem, iat=now - 700, exp=now - 1))
    stranger = await mint(fake, session, app_jwt(other.private_pem, iat=now - 60, exp=now + 500))
    wrong_app = await mint(
        fake, session, app_jwt(app_key.private_pem, iat=now - 60, exp=now + 500, iss="1")
    )

    assert good.status == 201
    assert [r.status for r in (future, long, stale, stranger, wrong_app)] == [401] * 5
    assert len(fake.minted) == 1


async def test_installation_tokens_reach_only_their_installation_and_expire(
    fake: FakeGitHub, session: aiohttp.ClientSession, app_key: AppKey
) -> None:
    fake.add_repo("elsewhere/repo", installation_id=99)
    now = fake.clock()
    response = await mint(fake, session, app_jwt(app_key.private_pem, iat=now - 60, exp=now + 500))
    assert response.status == 201
    [minted] = fake.minted
    headers = {"Authorization": f"token {minted.token}"}

    async def status(path: str) -> int:
        async with session.get(f"{fake.url}{path}", headers=headers) as answer:
            return answer.status

    assert await status(f"/repos/{REPO}") == 200
    assert await status("/repos/elsewhere/repo") == 404
    fake.clock.advance(3600)  # type: ignore[attr-defined]
    assert await status(f"/repos/{REPO}") == 401


async def test_pages_carry_githubs_link_header(
    fake: FakeGitHub, session: aiohttp.ClientSession
) -> None:
    fake.add_pull(REPO, 1, files=[PullFile.added(f"f{n}.py", "x\n") for n in range(5)])
    url = f"{fake.url}/repos/{REPO}/pulls/1/files?per_page=2&page=2"

    async with session.get(url, headers={"Authorization": f"token {PAT}"}) as response:
        links = response.headers["Link"]
        files = await response.json()

    assert [f["filename"] for f in files] == ["f2.py", "f3.py"]
    assert f'<{fake.url}/repos/{REPO}/pulls/1/files?per_page=2&page=3>; rel="next"' in links
    assert 'page=3>; rel="last"' in links and 'page=1>; rel="prev"' in links


@pytest.mark.parametrize("header", ["", "token ghp_wrong", "Bearer not-a-jwt"])
async def test_calls_without_valid_credentials_are_refused(
    fake: FakeGitHub, session: aiohttp.ClientSession, header: str
) -> None:
    headers = {"Authorization": header} if header else {}

    async with session.get(f"{fake.url}/repos/{REPO}", headers=headers) as response:
        body = await response.json()

    assert response.status == 401
    assert body["documentation_url"].startswith("https://docs.github.com/")
    assert fake.requests[-1].actor == "refused" if header else "anonymous"


async def test_requests_are_recorded_with_what_was_sent(
    fake: FakeGitHub, session: aiohttp.ClientSession
) -> None:
    before = time.time()
    fake.add_pull(REPO, 1)
    url = f"{fake.url}/repos/{REPO}/issues/1/comments"

    async with session.post(url, json={"body": "hi"}, headers={"Authorization": f"token {PAT}"}):
        pass

    [request] = fake.requests_to("POST", "/repos/*/issues/1/comments")
    assert (request.status, request.actor, request.json()) == (201, "token", {"body": "hi"})
    assert request.at >= before - 1


# --- Lost answers: the write is done, the answer never arrives ----------------------------------


async def post_comment(fake: FakeGitHub, session: aiohttp.ClientSession) -> int | None:
    """POST a comment on #1: its status, or None when no answer came."""
    url = f"{fake.url}/repos/{REPO}/issues/1/comments"
    headers = {"Authorization": f"token {PAT}"}
    try:
        async with session.post(
            url, json={"body": "hi"}, headers=headers, timeout=aiohttp.ClientTimeout(total=0.5)
        ) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


@pytest.mark.parametrize("landed", [False, True])
async def test_a_scripted_failure_is_carried_out_first_only_when_landed(
    fake: FakeGitHub, session: aiohttp.ClientSession, landed: bool
) -> None:
    fake.add_pull(REPO, 1)
    fake.fail("POST", f"/repos/{REPO}/issues/1/comments", 502, landed=landed)
    fake.disconnect("POST", f"/repos/{REPO}/issues/1/comments", landed=landed)
    fake.delay("POST", f"/repos/{REPO}/issues/1/comments", 5, landed=landed)

    answers = [await post_comment(fake, session) for _ in range(3)]

    assert answers == [502, None, None]  # a 502, a dropped connection, an answer too late
    assert len(fake.issue_comments(REPO, 1)) == (3 if landed else 0)
    [first, *_] = fake.requests_to("POST", f"/repos/{REPO}/issues/1/comments")
    assert first.status == 502
