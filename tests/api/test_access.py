"""Who may call the API: read and admin tokens, no token, a wrong one, and none configured."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.api.access import Tokens, bearer_token
from bot.app import create_app
from bot.runtime import Runtime
from config.settings import load_settings
from tests.api.conftest import ADMIN, READ, MakeApi

READS = ["/api/me", "/api/reviews", "/api/reviews/1", "/api/repos", "/api/stats", "/api/jobs"]


async def test_no_token_is_401_a_read_token_reads_and_only_admin_retries(
    make_api: MakeApi,
) -> None:
    api = await make_api()
    assert api.seeded is not None
    for path in READS:
        anonymous = await api.get(path, token=None)
        assert anonymous.status == 401, path
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await anonymous.json())["error"] == "unauthorized"
        assert (await api.get(path, token=READ)).status == 200, path
        assert (await api.get(path, token=ADMIN)).status == 200, path

    retry = f"/api/jobs/{api.seeded.dead_job}/retry"
    assert (await api.post(retry, token=None)).status == 401
    refused = await api.post(retry, token=READ)
    assert refused.status == 403
    assert await refused.json() == {
        "error": "forbidden",
        "message": "this needs an admin token; this one is read",
        "details": [],
    }
    job = await api.store.get_job(api.seeded.dead_job)
    assert job is not None and job.state == "dead"  # the read token changed nothing

    done = await api.post(retry, token=ADMIN)
    assert done.status == 200
    body = await done.json()
    assert body["job"]["id"] == api.seeded.dead_job and body["job"]["state"] == "queued"
    job = await api.store.get_job(api.seeded.dead_job)
    assert job is not None and (job.state, job.attempts) == ("queued", 0)
    assert len(api.notified) == 1  # the worker was woken for it


async def test_the_me_endpoint_names_the_role(make_api: MakeApi) -> None:
    api = await make_api(seeded=False)
    assert await (await api.get("/api/me", token=READ)).json() == {
        "role": "read",
        "can_retry": False,
    }
    assert await (await api.get("/api/me", token=ADMIN)).json() == {
        "role": "admin",
        "can_retry": True,
    }


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {READ}x",  # a token that only starts like a real one
        f"Bearer {READ[:-1]}",
        f"Basic {READ}",
        READ,
        "Bearer",
        "Bearer ",
        f"Bearer {READ}:read",  # the setting's entry is not the token
    ],
)
async def test_anything_but_a_configured_token_is_401(
    make_api: MakeApi, authorization: str
) -> None:
    api = await make_api(seeded=False)
    answer = await api.get("/api/reviews", token=None, headers={"Authorization": authorization})
    assert answer.status == 401


async def test_the_bearer_scheme_is_case_insensitive(make_api: MakeApi) -> None:
    api = await make_api(seeded=False)
    answer = await api.get("/api/me", token=None, headers={"Authorization": f"bearer  {ADMIN} "})
    assert answer.status == 200 and (await answer.json())["role"] == "admin"


async def test_no_token_configured_refuses_everything_and_names_the_setting(
    make_api: MakeApi,
) -> None:
    api = await make_api(api_tokens="")
    assert api.seeded is not None
    for path in READS:
        answer = await api.get(path, token=READ)
        assert answer.status == 403, path
        body = await answer.json()
        assert body["error"] == "api_not_configured"
        assert "ARBITER_API_TOKENS" in body["message"]
    answer = await api.post(f"/api/jobs/{api.seeded.dead_job}/retry", token=ADMIN)
    assert answer.status == 403 and (await answer.json())["error"] == "api_not_configured"
    job = await api.store.get_job(api.seeded.dead_job)
    assert job is not None and job.state == "dead"

    # What stays open says why: the index (for the dashboard's sign-in page) and the document.
    index = await (await api.get("/api/", token=None)).json()
    assert index["auth"] == {"configured": False, "setting": "ARBITER_API_TOKENS"}
    assert (await api.get("/api/openapi.json", token=None)).status == 200


async def test_the_app_mounts_the_api_and_the_dashboard(tmp_path: Any) -> None:
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/app.db", api_tokens=f"{READ}:read"
    )
    runtime = Runtime(settings)
    await runtime.start()
    client = TestClient(TestServer(create_app(runtime)))
    await client.start_server()
    try:
        assert (await client.get("/api/reviews")).status == 401
        ok = await client.get("/api/reviews", headers={"Authorization": f"Bearer {READ}"})
        assert ok.status == 200 and await ok.json() == {"items": [], "next_cursor": None}
        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        assert "Content-Security-Policy" in page.headers
        # What the JSON index at / used to say is at /api/.
        index = await (await client.get("/api/")).json()
        assert index["name"] == "arbiter" and set(index["platforms"]) == {"github", "gitlab"}
        assert "/webhooks/github" in index["endpoints"]
    finally:
        await client.close()
        await runtime.close()


def test_tokens_are_matched_whole_and_keep_their_role() -> None:
    tokens = Tokens([(READ, "read"), (ADMIN, "admin")])
    assert tokens.configured
    read, admin = tokens.caller(f"Bearer {READ}"), tokens.caller(f"Bearer {ADMIN}")
    assert read is not None and (read.role, read.key) == ("read", "token-1")
    assert admin is not None and (admin.role, admin.key) == ("admin", "token-2")
    assert tokens.caller(f"Bearer {READ}{ADMIN}") is None
    assert tokens.caller(None) is None
    assert not Tokens([]).configured and Tokens([]).caller(f"Bearer {READ}") is None


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("BEARER  abc ", "abc"), ("Token abc", None), ("", None)],
)
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token(header) == token
