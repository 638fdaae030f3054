"""Nothing is left to the first pull request to find out: a model without its key (or price) is
named at start, by `/health/ready` and by `arbiter config`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from bot.cli import main
from bot.llm.status import model_status
from bot.runtime import Runtime
from config.settings import load_settings


def test_no_key_names_the_variable_to_set() -> None:
    status = model_status(load_settings(), environ={})
    assert (status.provider, status.name, status.key_set) == ("openai", "gpt-4o", False)
    assert status.base_url == "https://api.openai.com/v1" and status.base_url_source == "default"
    assert not status.configured
    assert status.problem is not None and "set OPENAI_API_KEY" in status.problem
    assert "ARBITER_OPENAI_BASE_URL" in status.problem


@pytest.mark.parametrize(
    ("settings", "environ", "configured"),
    [
        ({"OPENAI_API_KEY": "sk-x"}, {}, True),
        ({"openai_base_url": "http://127.0.0.1:11434/v1"}, {}, True),  # Ollama needs no key
        ({}, {"OPENAI_BASE_URL": "http://vllm.internal/v1"}, True),  # the SDK's own variable
        ({"openai_base_url": "https://api.openai.com/v1"}, {}, False),
        ({"default_model": "claude-sonnet-4-6", "OPENAI_API_KEY": "sk-x"}, {}, False),
        ({"default_model": "claude-sonnet-4-6", "ANTHROPIC_API_KEY": "sk-ant-x"}, {}, True),
    ],
)
def test_what_counts_as_configured(
    settings: dict[str, Any], environ: dict[str, str], configured: bool
) -> None:
    status = model_status(load_settings(**settings), environ=environ)
    assert status.configured is configured, status.problem


def test_an_unpriced_model_under_a_cost_cap_is_not_usable() -> None:
    local = {"default_model": "llama3.1:8b", "openai_base_url": "http://127.0.0.1:11434/v1"}
    status = model_status(load_settings(**local), environ={})
    assert status.price is None
    assert status.problem is not None and "ARBITER_MODEL_PRICES" in status.problem
    assert model_status(load_settings(**local, max_cost_per_review_usd=0), environ={}).configured


def test_config_shows_the_model_provider_key_url_and_price(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-key-123456")
    monkeypatch.setenv("ARBITER_OPENAI_BASE_URL", "https://proxy:pw-9876@llm.internal/v1")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "sk-very-secret" not in out and "pw-9876" not in out
    line = next(x for x in out.splitlines() if x.startswith("model: "))
    assert "gpt-4o (openai gpt-4o)" in line
    assert "OPENAI_API_KEY=***" in line
    assert "https://proxy:***@llm.internal/v1 (from ARBITER_OPENAI_BASE_URL)" in line
    assert "$2.5 in / $10 out per million tokens" in line
    assert main(["config", "--json"]) == 0
    llm = json.loads(capsys.readouterr().out)["llm"]
    assert llm["provider"] == "openai" and llm["configured"] is True
    assert llm["price_per_million_tokens"] == {"input": 2.5, "output": 10.0}


def test_config_says_when_no_model_is_configured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARBITER_DEFAULT_MODEL", "claude-sonnet-4-6")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "ANTHROPIC_API_KEY not set" in out
    assert "NOT CONFIGURED: no key for anthropic (claude-sonnet-4-6): set ANTHROPIC_API_KEY" in out


@pytest.fixture
async def ready_client(tmp_path: Path) -> AsyncIterator[Any]:
    clients: list[tuple[TestClient[Any, Any], Runtime]] = []

    async def make(**settings: Any) -> TestClient[Any, Any]:
        runtime = Runtime(
            load_settings(database_url=f"sqlite:///{tmp_path}/ready{len(clients)}.db", **settings)
        )
        await runtime.start()
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(runtime)))
        await client.start_server()
        clients.append((client, runtime))
        return client

    yield make
    for client, runtime in clients:
        await client.close()
        await runtime.close()


async def test_readiness_reports_no_model_as_degraded_not_down(ready_client: Any) -> None:
    client = await ready_client()
    answer = await client.get("/health/ready")
    assert answer.status == 200  # orchestrators keep the pod: webhooks are still taken
    body = await answer.json()
    assert body["status"] == "degraded"
    assert body["llm"] == "not configured"
    assert any("OPENAI_API_KEY" in problem for problem in body["problems"])

    configured = await ready_client(OPENAI_API_KEY="sk-ready")
    body = await (await configured.get("/health/ready")).json()
    assert body["status"] == "ready" and body["llm"] == "configured"
    assert body["model"] == "openai:gpt-4o" and "problems" not in body
