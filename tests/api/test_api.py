"""The API's contract, over a seeded store: what each operation answers, and what it refuses.

The seed (tests/api/seed.py), on the FakeClock's days (2027-01-12 … 2027-01-15 UTC):
review 1 acme/api#12 success (day 1), review 2 acme/web#3 failure (day 2), review 3 GitLab
group/sub/project!7 error (day 3), review 4 acme/api#14 still running (today).
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from bot.api import add_dashboard_and_api
from bot.api.models import (
    ApiIndex,
    JobList,
    RepoList,
    Retried,
    ReviewDetail,
    ReviewPage,
    Stats,
)
from bot.api.openapi import openapi_document
from bot.api.views import OPERATIONS, percentile
from bot.runtime import Runtime
from bot.store.base import UsageRecord
from bot.store.sql import SQLStore
from config.settings import load_settings
from tests.api.conftest import DASHBOARD, READ, TOKENS, Api, MakeApi
from tests.api.seed import MARKUP

DAY = 86400


async def _json(
    api: Api,
    path: str,
    model: type[BaseModel] | None = None,
    *,
    token: str | None = READ,
    **params: Any,
) -> Any:
    answer = await api.get(path, token=token, params=params)
    assert answer.status == 200, await answer.text()
    body = await answer.json()
    if model is not None:
        model.model_validate(body)  # the answer is exactly what the model (and document) says
    return body


async def _ids(api: Api, **params: Any) -> list[int]:
    page = await _json(api, "/api/reviews", ReviewPage, **params)
    return [r["id"] for r in page["items"]]


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()


async def test_reviews_newest_first_with_every_filter(api: Api) -> None:
    assert await _ids(api) == [4, 3, 2, 1]
    assert await _ids(api, platform="gitlab") == [3]
    assert await _ids(api, repo="acme/api") == [4, 1]
    assert await _ids(api, outcome="failure") == [2]
    assert await _ids(api, since="2027-01-13T00:00:00Z") == [4, 3, 2]
    assert await _ids(api, since="2027-01-13T01:00:00+01:00") == [4, 3, 2]  # the same moment
    assert await _ids(api, platform="github", since="2027-01-13T00:00:00Z") == [4, 2]
    assert await _ids(api, repo="nobody/here") == []


async def test_the_cursor_walks_every_review_once(api: Api) -> None:
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = await _json(api, "/api/reviews", ReviewPage, **params)
        seen += [r["id"] for r in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [4, 3, 2, 1] and pages == 4

    first = await _json(api, "/api/reviews", limit=1, repo="acme/api")
    rest = await _json(api, "/api/reviews", limit=1, repo="acme/api", cursor=first["next_cursor"])
    assert [r["id"] for r in rest["items"]] == [1] and rest["next_cursor"] is None
    whole = await _json(api, "/api/reviews", limit=4)
    assert whole["next_cursor"] is None  # exactly a page: no empty page after it


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=ten",
        "platform=bitbucket",
        "outcome=great",
        "since=2027-01-13",  # a date is not a date-time
        "since=2027-01-13T00:00:00",  # nor one without its offset
        "since=yesterday",
        "cursor=not*a*cursor",
        "cursor=0",
        "cursor=1234567890123456789",  # past the stores' ids
        "repo=a%00b",
        "repo=acme/api&repo=acme/web",
        "colour=blue",
    ],
)
async def test_bad_review_queries_are_400_and_say_which_parameter(api: Api, query: str) -> None:
    answer = await api.get(f"/api/reviews?{query}")
    assert answer.status == 400
    body = await answer.json()
    assert body["error"] == "bad_request"
    name = query.split("=", 1)[0]
    assert name in body["message"] + " ".join(body["details"])


async def test_a_review_with_its_findings_and_what_it_did_not_review(api: Api) -> None:
    r = await _json(api, "/api/reviews/1", ReviewDetail)
    assert (r["platform"], r["repo"], r["number"], r["outcome"]) == (
        "github",
        "acme/api",
        12,
        "success",
    )
    assert r["pr_url"] == "https://github.com/acme/api/pull/12"
    assert r["summary_url"] == "https://github.com/acme/api/pull/12#issuecomment-1"
    assert (r["model"], r["input_tokens"], r["output_tokens"]) == ("gpt-4o", 1200, 300)
    assert (r["cost_usd"], r["duration_seconds"], r["calls"], r["cached_calls"]) == (
        0.0125,
        12.5,
        2,
        1,
    )
    assert r["created_at"] == "2027-01-12T08:00:00Z"
    assert [(f["severity"], f["title"], f["line"]) for f in r["findings"]] == [
        ("critical", "Shell injection", 5),  # most severe first
        ("minor", "Unused import", 30),
    ]
    assert r["not_reviewed"] == [{"path": "package-lock.json", "reason": "a lock file"}]
    assert r["severity_counts"] == {"critical": 1, "minor": 1}

    attacked = await _json(api, "/api/reviews/2", ReviewDetail)
    assert attacked["findings"][0]["title"] == MARKUP  # data, as written: the page escapes it
    assert attacked["summary_url"] is None  # a javascript: URL never leaves as a link

    gitlab = await _json(api, "/api/reviews/3", ReviewDetail)
    assert gitlab["pr_url"] == "https://gitlab.com/group/sub/project/-/merge_requests/7"
    running = await _json(api, "/api/reviews/4", ReviewDetail)
    assert (running["state"], running["outcome"], running["finished_at"]) == ("running", None, None)


async def test_pull_request_links_follow_the_platform_base_urls(make_api: MakeApi) -> None:
    api = await make_api(
        github_base_url="https://ghe.example.com/api/v3",
        gitlab_base_url="https://gitlab.example.com",
    )
    assert (await _json(api, "/api/reviews/1"))["pr_url"] == (
        "https://ghe.example.com/acme/api/pull/12"
    )
    assert (await _json(api, "/api/reviews/3"))["pr_url"] == (
        "https://gitlab.example.com/group/sub/project/-/merge_requests/7"
    )


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/reviews/999", 404),
        ("/api/reviews/0", 400),
        ("/api/reviews/abc", 400),
        (f"/api/reviews/{2**63}", 400),
        ("/api/nothing-here", 404),
    ],
)
async def test_missing_and_malformed_ids(api: Api, path: str, status: int) -> None:
    answer = await api.get(path)
    assert answer.status == status
    assert (await answer.json())["error"] == {400: "bad_request", 404: "not_found"}[status]


async def test_repositories_with_installations_counts_and_cost(api: Api) -> None:
    body = await _json(api, "/api/repos", RepoList)
    assert body["installations"] == [
        {
            "platform": "github",
            "installation_id": 101,
            "account": "acme",
            "account_type": "Organization",
            "state": "active",
            "repository_selection": "selected",
            "repositories": 3,
        }
    ]
    rows = [
        (r["repo"], r["reviews"], r["findings"], r["cost_usd"], r["installation_id"])
        for r in body["repos"]
    ]
    assert rows == [
        ("acme/api", 2, 2, 0.0125, 101),  # most recently reviewed first
        ("group/sub/project", 1, 0, 0.0, None),
        ("acme/web", 1, 1, 0.0075, 101),
        ("acme/quiet", 0, 0, 0.0, 101),  # installed, never reviewed
    ]
    assert body["repos"][0]["url"] == "https://github.com/acme/api"
    assert body["repos"][-1]["last_review_at"] is None


async def test_stats_per_day_and_over_the_period(api: Api) -> None:
    s = await _json(api, "/api/stats", Stats, days=7)
    assert (s["days"], s["since"]) == (7, "2027-01-09")
    assert [(d["date"], d["reviews"], d["cost_usd"], d["input_tokens"]) for d in s["per_day"]] == [
        ("2027-01-09", 0, 0.0, 0),
        ("2027-01-10", 0, 0.0, 0),
        ("2027-01-11", 0, 0.0, 0),
        ("2027-01-12", 1, 0.0125, 1200),
        ("2027-01-13", 1, 0.0075, 800),
        ("2027-01-14", 1, 0.001, 100),  # the follow-up's cost counts on its day
        ("2027-01-15", 1, 0.0, 0),
    ]
    assert s["totals"] == {
        "reviews": 4,
        "cost_usd": 0.021,
        "input_tokens": 2100,
        "output_tokens": 540,
    }
    assert s["outcomes"] == {"error": 1, "failure": 1, "success": 1, "unfinished": 1}
    assert s["cache"] == {"calls": 3, "cached_calls": 1, "hit_rate": 0.25}
    assert s["findings_by_severity"] == {"critical": 1, "major": 1, "minor": 1}
    assert list(s["findings_by_severity"]) == ["critical", "major", "minor"]
    assert s["duration"] == {"reviews": 2, "p50_seconds": 12.5, "p95_seconds": 30.0}
    assert s["budget"] == {
        "daily_budget_usd": None,
        "spent_today_usd": 0.0,
        "used_fraction": None,
        "resets_at": "2027-01-16T00:00:00Z",
    }

    recent = await _json(api, "/api/stats", Stats, days=2)
    assert [d["date"] for d in recent["per_day"]] == ["2027-01-14", "2027-01-15"]
    assert recent["totals"]["reviews"] == 2 and recent["totals"]["cost_usd"] == 0.001
    assert recent["cache"]["hit_rate"] is None  # no model calls: no rate, rather than 0
    assert recent["duration"] == {"reviews": 0, "p50_seconds": None, "p95_seconds": None}
    assert recent["findings_by_severity"] == {}


async def test_the_budget_used_today(make_api: MakeApi) -> None:
    api = await make_api(daily_budget_usd=0.01)
    await api.store.record_usage(UsageRecord("review", 10, 10, 0.004))
    budget = (await _json(api, "/api/stats", days=1))["budget"]
    assert budget["daily_budget_usd"] == 0.01
    assert budget["spent_today_usd"] == 0.004
    assert budget["used_fraction"] == pytest.approx(0.4)
    # Tomorrow, today's spend no longer counts.
    api.clock.advance(DAY)
    assert (await _json(api, "/api/stats", days=1))["budget"]["spent_today_usd"] == 0.0


@pytest.mark.parametrize("days", ["0", "367", "-1", "two", ""])
async def test_bad_periods_are_400(api: Api, days: str) -> None:
    assert (await api.get(f"/api/stats?days={days}")).status == 400


async def test_jobs_by_state_and_the_dead_with_their_errors(api: Api) -> None:
    assert api.seeded is not None
    body = await _json(api, "/api/jobs", JobList)
    assert body["counts"] == {"queued": 1, "running": 0, "done": 0, "dead": 1, "cancelled": 0}
    (dead,) = body["dead"]
    assert dead["id"] == api.seeded.dead_job
    assert (dead["kind"], dead["platform"], dead["repo"], dead["number"]) == (
        "review",
        "github",
        "acme/api",
        13,
    )
    assert (dead["attempts"], dead["max_attempts"], dead["state"]) == (1, 2, "dead")
    assert dead["last_error"].startswith("the model provider failed: 500")


async def test_retry_queues_a_dead_job_once(api: Api) -> None:
    assert api.seeded is not None
    retry = f"/api/jobs/{api.seeded.dead_job}/retry"
    first = await api.post(retry)
    assert first.status == 200
    Retried.model_validate(await first.json())
    again = await api.post(retry)
    assert again.status == 409 and "only a dead job" in (await again.json())["message"]
    queued = await api.post(f"/api/jobs/{api.seeded.queued_job}/retry")
    assert queued.status == 409
    assert (await api.post("/api/jobs/999/retry")).status == 404
    assert (await api.post("/api/jobs/x/retry")).status == 400
    counts = (await _json(api, "/api/jobs"))["counts"]
    assert (counts["dead"], counts["queued"]) == (0, 2)
    assert len(api.notified) == 1


async def test_methods_that_do_not_exist_are_405_with_allow(api: Api) -> None:
    answer = await api.client.delete("/api/reviews/1")
    assert answer.status == 405
    assert "GET" in answer.headers["Allow"]
    assert (await answer.json())["error"] == "method_not_allowed"


async def test_the_index_keeps_what_slash_used_to_say(api: Api) -> None:
    body = await _json(api, "/api/", ApiIndex, token=None)
    assert body["platforms"]["gitlab"] == {
        "enabled": False,
        "missing": ["ARBITER_GITLAB_WEBHOOK_TOKEN", "ARBITER_GITLAB_TOKEN"],
    }
    assert body["auth"]["configured"] is True


async def test_the_openapi_document_describes_every_operation(make_api: MakeApi) -> None:
    api = await make_api(seeded=False, api_title="Acme Arbiter", api_version="9.9.9")
    answer = await api.get("/api/openapi.json", token=None)
    assert answer.status == 200
    doc = await answer.json()
    assert doc["openapi"] == "3.1.0"
    assert (doc["info"]["title"], doc["info"]["version"]) == ("Acme Arbiter", "9.9.9")
    described = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    served = {(op.method, "/api" + op.path) for op in OPERATIONS} | {("GET", "/api/openapi.json")}
    assert described == served
    retry = doc["paths"]["/api/jobs/{id}/retry"]["post"]
    assert set(retry["responses"]) == {"200", "400", "401", "403", "404", "409", "429", "503"}
    assert retry["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    params = {p["name"]: p for p in doc["paths"]["/api/reviews"]["get"]["parameters"]}
    assert set(params) == {"platform", "repo", "outcome", "since", "cursor", "limit"}
    assert params["since"]["schema"] == {"type": "string", "format": "date-time"}
    assert params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 200,
        "default": 50,
    }
    assert params["platform"]["schema"]["enum"] == ["github", "gitlab"]
    assert doc["paths"]["/api/"]["get"]["security"] == []
    assert doc["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    assert "ReviewDetail" in doc["components"]["schemas"]
    # Built from the same list the server routes: the document and the server agree.
    assert doc == openapi_document(OPERATIONS, title="Acme Arbiter", version="9.9.9", prefix="/api")


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.5, None),
        ([3.0], 0.95, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([1.0] * 19 + [9.0], 0.95, 1.0),
        ([1.0] * 19 + [9.0], 0.96, 9.0),
    ],
)
def test_nearest_rank_percentiles(
    values: list[float], fraction: float, expected: float | None
) -> None:
    assert percentile(values, fraction) == expected


async def test_a_store_that_cannot_be_reached_is_503_not_500(clock: Any) -> None:
    settings = load_settings(
        database_url="postgresql+asyncpg://arbiter:secret@127.0.0.1:1/arbiter", api_tokens=TOKENS
    )
    store = SQLStore(settings.database_url)  # nothing listens on port 1
    await store.open()
    app = web.Application()
    add_dashboard_and_api(app, Runtime(settings, store=store), clock=clock)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        answer = await client.get(
            "/api/reviews", headers={"Authorization": f"Bearer {READ}", "Origin": DASHBOARD}
        )
        assert answer.status == 503
        assert (await answer.json())["error"] == "store_unavailable"
        assert answer.headers["Access-Control-Allow-Origin"] == DASHBOARD
        assert "X-RateLimit-Remaining" in answer.headers
    finally:
        await client.close()
        await store.close()
