"""The LLM client against the fake OpenAI and Anthropic servers (each test runs on both)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.core.findings import ReviewAnswer
from bot.llm import (
    LLMNotConfigured,
    LLMRefused,
    LLMTimeout,
    MalformedAnswer,
    ModelPriceUnknown,
    Prompt,
    ProviderDown,
    RateLimited,
)
from bot.metrics import Metrics
from bot.store import StoreUnavailable
from bot.store.sql import SQLStore
from config.prices import load_prices
from tests.fakes.openai import (
    Malformed,
    RateLimit,
    ServerError,
    Slow,
    finding,
    review_answer,
)
from tests.llm.conftest import Via, counter

PROMPT = Prompt(system="You review code.", user="=== FILE a.py (added) ===\n    1 +x = 1\n")
REQUESTS = "arbiter_llm_requests_total"


async def test_answer_is_parsed_with_usage_and_cost(via: Via) -> None:
    metrics = Metrics()
    llm = via.llm(metrics=metrics)
    via.fake.script(review_answer(finding("a.py", 1, title="Unused x"), summary="Adds x."))
    done = await llm.complete(PROMPT, ReviewAnswer)
    assert done.value.summary == "Adds x."
    assert [(f.path, f.line, f.title) for f in done.value.findings] == [("a.py", 1, "Unused x")]
    (request,) = via.fake.requests
    assert (done.provider, done.model) == (via.provider, via.model)
    assert (done.input_tokens, done.output_tokens) == (request.input_tokens, request.output_tokens)
    price = load_prices().lookup(via.provider, via.model)
    assert price is not None
    assert done.cost_usd == pytest.approx(price.cost(request.input_tokens, request.output_tokens))
    assert not done.cached and done.attempts == 1
    labels = {"provider": via.provider, "model": via.model}
    assert counter(metrics, REQUESTS, **labels, outcome="ok") == 1
    assert counter(metrics, "arbiter_cost_usd_total") == pytest.approx(done.cost_usd)
    assert request.system == PROMPT.system and request.user == PROMPT.user


async def test_structured_output_is_requested_the_providers_way(via: Via) -> None:
    await via.llm().complete(PROMPT, ReviewAnswer, max_output_tokens=777)
    (request,) = via.fake.requests
    assert request.max_tokens == 777
    if via.provider == "openai":
        fmt = request.body["response_format"]
        assert fmt["type"] == "json_schema"
        assert fmt["json_schema"]["name"] == "ReviewAnswer" and fmt["json_schema"]["strict"]
        assert fmt["json_schema"]["schema"]["additionalProperties"] is False
        # A compatible server (not api.openai.com) gets the max_tokens every server knows.
        assert "max_tokens" in request.body and "max_completion_tokens" not in request.body
    else:
        assert request.body["tool_choice"] == {"type": "tool", "name": "ReviewAnswer"}
        (tool,) = request.body["tools"]
        assert tool["name"] == "ReviewAnswer"
        assert set(tool["input_schema"]["required"]) == {"summary", "findings"}
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "")
        assert key.removeprefix("Bearer ") == "sk-ant-fake"
        assert request.headers.get("anthropic-version")
    assert request.schema is not None and "findings" in request.schema["properties"]


async def test_429_then_200_succeeds_after_the_wait_asked_for(via: Via) -> None:
    metrics = Metrics()
    via.fake.script(RateLimit(retry_after=1.5), review_answer())
    done = await via.llm(metrics=metrics).complete(PROMPT, ReviewAnswer)
    assert done.value.findings == []
    assert [r.status for r in via.fake.requests] == [429, 200]
    assert via.sleeps == [1.5]  # retry-after honoured
    labels = {"provider": via.provider, "model": via.model}
    assert counter(metrics, REQUESTS, **labels, outcome="rate_limited") == 1
    assert counter(metrics, REQUESTS, **labels, outcome="ok") == 1


async def test_rate_limited_every_time_is_reported(via: Via) -> None:
    via.fake.always(RateLimit(retry_after=None))
    with pytest.raises(RateLimited, match=r"the model provider is rate-limiting us: .*429"):
        await via.llm(llm_max_retries=2).complete(PROMPT, ReviewAnswer)
    assert len(via.fake.requests) == 3
    assert len(via.sleeps) == 2 and all(0 < s <= 8 for s in via.sleeps)  # backoff


async def test_a_wait_longer_than_a_minute_is_reported_not_slept(via: Via) -> None:
    via.fake.script(RateLimit(retry_after=3600))
    with pytest.raises(RateLimited, match="asks to wait 3600 s"):
        await via.llm().complete(PROMPT, ReviewAnswer)
    assert len(via.fake.requests) == 1 and via.sleeps == []


async def test_5xx_is_retried_then_the_provider_is_reported_down(via: Via) -> None:
    metrics = Metrics()
    status = 500 if via.provider == "openai" else 529
    via.fake.always(ServerError(status, "overloaded right now"))
    with pytest.raises(ProviderDown) as caught:
        await via.llm(metrics=metrics, llm_max_retries=1).complete(PROMPT, ReviewAnswer)
    assert str(caught.value).startswith("the model provider is down:")
    assert f"{status} overloaded right now" in str(caught.value)
    assert len(via.fake.requests) == 2
    labels = {"provider": via.provider, "model": via.model}
    assert counter(metrics, REQUESTS, **labels, outcome="server_error") == 2


async def test_a_5xx_then_an_answer_succeeds(via: Via) -> None:
    via.fake.script(ServerError(503), review_answer())
    done = await via.llm().complete(PROMPT, ReviewAnswer)
    assert done.attempts == 1 and len(via.fake.requests) == 2


async def test_an_unreachable_provider_is_reported_down(via: Via) -> None:
    url = via.fake.url
    await via.fake.close()
    with pytest.raises(ProviderDown, match="the model provider is down: cannot reach"):
        await via.llm(llm_max_retries=1).complete(PROMPT, ReviewAnswer)
    assert url.startswith("http://127.0.0.1:")


async def test_a_connection_dropped_under_the_request_is_reported_down_not_slow(
    via: Via,
) -> None:
    """A server that takes the request and closes the connection without an answer: the
    provider is down (retried, then reported), not "did not answer in time" (the SDKs'
    aiohttp transport reports some such failures as connect timeouts)."""
    dropped = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal dropped
        await reader.read(1024)
        dropped += 1
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    (setting,) = [name for name in via.fake.settings() if name.endswith("_base_url")]
    url = f"http://127.0.0.1:{port}{via.fake.api_prefix}"
    llm = via.llm(None, None, llm_max_retries=1, **{setting: url})
    try:
        with pytest.raises(ProviderDown, match="the model provider is down: cannot reach"):
            await llm.complete(PROMPT, ReviewAnswer)
    finally:
        server.close()
        await server.wait_closed()
    assert dropped == 2  # asked, and asked once more


async def test_a_malformed_answer_is_retried_once_then_reported(via: Via) -> None:
    metrics = Metrics()
    via.fake.script(Malformed("not JSON at all"), Malformed('{"summary": 3}'))
    with pytest.raises(MalformedAnswer) as caught:
        await via.llm(metrics=metrics).complete(PROMPT, ReviewAnswer)
    message = str(caught.value)
    assert "did not match the expected format, on the first try and on the retry" in message
    assert len(via.fake.requests) == 2  # asked once more, then reported: never guessed
    assert caught.value.input_tokens == sum(r.input_tokens for r in via.fake.requests)
    assert caught.value.cost_usd > 0  # malformed answers are billed, and the error says so
    labels = {"provider": via.provider, "model": via.model}
    assert counter(metrics, REQUESTS, **labels, outcome="malformed") == 2


async def test_a_malformed_answer_then_a_good_one_succeeds(via: Via) -> None:
    via.fake.script(Malformed(), review_answer(finding("a.py", 1)))
    done = await via.llm().complete(PROMPT, ReviewAnswer)
    assert done.attempts == 2 and len(done.value.findings) == 1
    assert done.input_tokens == sum(r.input_tokens for r in via.fake.requests)


async def test_a_wrong_shape_is_malformed_too(via: Via) -> None:
    bad = {**review_answer(finding("a.py", 1)).data, "findings": [{"path": "a.py"}]}
    from tests.fakes.openai import Answer

    via.fake.script(Answer(bad), Answer(bad))
    with pytest.raises(MalformedAnswer, match=r"findings\.0\.line: Field required"):
        await via.llm().complete(PROMPT, ReviewAnswer)


async def test_an_answer_cut_off_at_the_output_limit_is_reported(via: Via) -> None:
    via.fake.always(review_answer(*[finding("a.py", 1, body="long " * 50)] * 5))
    with pytest.raises(MalformedAnswer, match="cut off at 20 output tokens"):
        await via.llm().complete(PROMPT, ReviewAnswer, max_output_tokens=20)


async def test_a_timeout_is_reported_as_such(via: Via) -> None:
    metrics = Metrics()
    via.fake.script(Slow(30))
    # Long enough for the request to reach the fake on a loaded machine (0.3 s once did not,
    # in a full CI run), so that "not retried" below is a count of one, not of none.
    with pytest.raises(LLMTimeout) as caught:
        await via.llm(metrics=metrics, llm_timeout=1.5).complete(PROMPT, ReviewAnswer)
    assert str(caught.value).startswith("the model did not answer within 1.5 s")
    assert "ARBITER_LLM_TIMEOUT" in str(caught.value)
    assert len(via.fake.requests) == 1  # a timeout is not retried
    labels = {"provider": via.provider, "model": via.model}
    assert counter(metrics, REQUESTS, **labels, outcome="timeout") == 1


async def test_a_refusal_of_the_request_is_reported(via: Via) -> None:
    via.fake.script(ServerError(400, "max_tokens is too large"))
    with pytest.raises(LLMRefused, match="refused the request: 400 max_tokens is too large"):
        await via.llm().complete(PROMPT, ReviewAnswer)
    assert len(via.fake.requests) == 1


async def test_the_same_prompt_twice_costs_one_call(via: Via, sqlite_store: SQLStore) -> None:
    metrics = Metrics()
    llm = via.llm(sqlite_store, metrics)
    via.fake.always(review_answer(finding("a.py", 1)))
    first = await llm.complete(PROMPT, ReviewAnswer)
    second = await llm.complete(PROMPT, ReviewAnswer)
    assert len(via.fake.requests) == 1
    assert second.cached and not first.cached
    assert second.value == first.value
    assert (second.cost_usd, second.input_tokens, second.output_tokens) == (0.0, 0, 0)
    assert counter(metrics, "arbiter_llm_cache_hits_total") == 1
    # A new process (an empty memory cache) still finds it in the store, once the write there,
    # which the answer does not wait for, has landed (a process waits for it before it stops).
    await llm.close()
    other = Metrics()
    third = await via.llm(sqlite_store, other).complete(PROMPT, ReviewAnswer)
    assert third.cached and len(via.fake.requests) == 1
    assert counter(other, "arbiter_llm_cache_hits_total") == 1
    # A different prompt, or another model, is another question.
    await via.llm(sqlite_store).complete(Prompt(PROMPT.system, PROMPT.user + "\n"), ReviewAnswer)
    assert len(via.fake.requests) == 2


class HeldCacheStore(SQLStore):
    """A store whose cache writes wait for `let_go`, then fail."""

    let_go: asyncio.Event
    started: asyncio.Event

    async def cache_put(self, key: str, value: str, *, ttl_seconds: float) -> None:
        self.started.set()
        await self.let_go.wait()
        raise StoreUnavailable("the store went away")


async def test_an_answer_does_not_wait_for_the_store_cache_and_its_failure_is_only_logged(
    via: Via, tmp_path: Path
) -> None:
    store = HeldCacheStore(f"sqlite+aiosqlite:///{tmp_path}/held.db")
    store.let_go, store.started = asyncio.Event(), asyncio.Event()
    await store.open()
    await store.migrate()
    try:
        via.fake.always(review_answer(finding("a.py", 1)))
        llm = via.llm(store)
        first = await asyncio.wait_for(llm.complete(PROMPT, ReviewAnswer), 5)
        assert not first.cached
        await asyncio.wait_for(store.started.wait(), 5)  # the write, held, after the answer
        second = await llm.complete(PROMPT, ReviewAnswer)  # this process remembers it already
        assert second.cached and len(via.fake.requests) == 1
        closing = asyncio.ensure_future(llm.close())
        await asyncio.sleep(0.05)
        assert not closing.done()  # closing waits for the write under way
        with capture_logs() as logs:
            store.let_go.set()
            await closing  # the write failed: logged, not raised
        assert any("memory only" in entry["event"] for entry in logs)
    finally:
        store.let_go.set()
        await store.close()


async def test_the_same_prompt_at_once_is_asked_once(via: Via) -> None:
    via.fake.always(Slow(0.2, review_answer()))
    llm = via.llm()
    answers = await asyncio.gather(*(llm.complete(PROMPT, ReviewAnswer) for _ in range(3)))
    assert len(via.fake.requests) == 1
    assert sorted(a.cached for a in answers) == [False, True, True]


async def test_the_cache_can_be_off(via: Via) -> None:
    llm = via.llm(cache_ttl_hours=0)
    await llm.complete(PROMPT, ReviewAnswer)
    await llm.complete(PROMPT, ReviewAnswer)
    assert len(via.fake.requests) == 2


async def test_a_broken_store_does_not_stop_a_call(via: Via, sqlite_store: SQLStore) -> None:
    await sqlite_store.close()  # every cache read and write now fails
    llm = via.llm(sqlite_store)
    await llm.complete(PROMPT, ReviewAnswer)
    second = await llm.complete(PROMPT, ReviewAnswer)
    assert second.cached and len(via.fake.requests) == 1  # the memory cache still served


async def test_a_model_without_a_price_refuses_under_a_cost_cap(via: Via) -> None:
    model = f"{via.provider}:house-model-7"
    with pytest.raises(ModelPriceUnknown) as caught:
        await via.llm(max_cost_per_review_usd=0.5).complete(PROMPT, ReviewAnswer, model=model)
    message = str(caught.value)
    assert "no price is known for the model 'house-model-7'" in message
    assert "ARBITER_MODEL_PRICES" in message and "ARBITER_MAX_COST_PER_REVIEW_USD=0" in message
    assert via.fake.requests == []
    # Without a cap it runs, and says its cost is unknown.
    done = await via.llm(max_cost_per_review_usd=0).complete(PROMPT, ReviewAnswer, model=model)
    assert (done.model, done.cost_usd, done.priced) == ("house-model-7", 0.0, False)
    # With an operator's price it runs under the cap, at that price.
    prices = json.dumps({f"{via.provider}:house-model-7": {"input": 1000, "output": 0}})
    priced = await via.llm(model_prices=prices, cache_ttl_hours=0).complete(
        PROMPT, ReviewAnswer, model=model
    )
    assert priced.priced
    assert priced.cost_usd == pytest.approx(via.fake.requests[-1].input_tokens / 1000)


async def test_missing_credentials_name_the_setting(via: Via) -> None:
    from bot.llm import LLM
    from config.settings import load_settings

    settings = load_settings(default_model=via.model)  # no key, no base URL: the real API
    llm = LLM(settings, None, Metrics())
    via.clients.append(llm)
    key = "OPENAI_API_KEY" if via.provider == "openai" else "ANTHROPIC_API_KEY"
    with pytest.raises(LLMNotConfigured, match=key):
        await llm.complete(PROMPT, ReviewAnswer)


async def _compatible_server(
    body: bytes, asked: list[tuple[str, Any]] | None = None
) -> tuple[Any, str]:
    """An OpenAI-compatible server on 127.0.0.1 answering every request 200 with `body` (JSON
    content type), noting in `asked` each request's content type and JSON; its runner and base
    URL."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        if asked is not None:
            asked.append((request.content_type, await request.json()))
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{path:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1"


async def test_a_bare_answer_is_read_and_its_tokens_counted(via: Via) -> None:
    """An answer with nothing but the structured output (no id, usage or stop reason: a
    compatible server's, a gateway's) is the review's answer; its tokens are counted, not
    taken as free. The request is the provider's JSON, as its SDK would send it."""
    data = review_answer(finding("a.py", 1)).data
    if via.provider == "openai":
        bare: dict[str, Any] = {"choices": [{"message": {"content": json.dumps(data)}}]}
    else:
        bare = {"content": [{"type": "tool_use", "name": "ReviewAnswer", "input": data}]}
    asked: list[tuple[str, Any]] = []
    runner, url = await _compatible_server(json.dumps(bare).encode(), asked)
    (setting,) = [name for name in via.fake.settings() if name.endswith("_base_url")]
    try:
        llm = via.llm(None, None, **{setting: url.removesuffix("/v1") + via.fake.api_prefix})
        done = await llm.complete(PROMPT, ReviewAnswer)
    finally:
        await runner.cleanup()
    assert [f.path for f in done.value.findings] == ["a.py"]
    assert done.input_tokens > 0 and done.output_tokens > 0
    ((content_type, request),) = asked
    assert content_type == "application/json"
    assert request["model"] == via.model and request["messages"][-1]["content"] == PROMPT.user
    if via.provider == "openai":
        assert request["max_tokens"] > 0  # a compatible server's name for the limit
        assert request["response_format"]["json_schema"]["strict"] is True
    else:
        assert request["max_tokens"] > 0
        assert request["tool_choice"] == {"type": "tool", "name": "ReviewAnswer"}
        assert request["tools"][0]["input_schema"] == ReviewAnswer.model_json_schema()


async def test_an_answer_that_is_not_json_is_malformed_not_a_crash(via: Via) -> None:
    """A 200 whose body is not JSON (a proxy's page) is a malformed answer: asked once more,
    then reported with what came instead."""
    runner, url = await _compatible_server(b"<html>502 Bad Gateway</html>")
    (setting,) = [name for name in via.fake.settings() if name.endswith("_base_url")]
    url = url.removesuffix("/v1") + via.fake.api_prefix
    try:
        with pytest.raises(MalformedAnswer, match="not a JSON object: '<html>502 Bad Gateway"):
            await via.llm(None, None, **{setting: url}).complete(PROMPT, ReviewAnswer)
    finally:
        await runner.cleanup()
