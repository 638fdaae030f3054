"""The LLM client's tests run against both fake providers; `via` is the one under test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.llm import LLM
from bot.metrics import Metrics
from config.settings import Settings, load_settings
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.openai import FakeLLMServer, FakeOpenAI

MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-6"}


@dataclass
class Via:
    """A provider under test: its fake, a model it serves, and what the client asked to sleep."""

    provider: str
    fake: FakeLLMServer
    model: str
    sleeps: list[float] = field(default_factory=list)
    clients: list[LLM] = field(default_factory=list)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            **self.fake.settings(),
            "default_model": self.model,
            "llm_timeout": 10,
            "llm_max_retries": 2,
        }
        values.update(overrides)
        return load_settings(**values)

    def llm(self, store: Any = None, metrics: Metrics | None = None, **overrides: Any) -> LLM:
        async def sleep(seconds: float) -> None:  # records the waits; the test need not wait
            self.sleeps.append(seconds)

        client = LLM(self.settings(**overrides), store, metrics or Metrics(), sleep=sleep)
        self.clients.append(client)
        return client


@pytest.fixture(params=["openai", "anthropic"])
async def via(request: pytest.FixtureRequest) -> AsyncIterator[Via]:
    fake: FakeLLMServer = FakeOpenAI() if request.param == "openai" else FakeAnthropic()
    async with fake:
        subject = Via(request.param, fake, MODELS[request.param])
        yield subject
        for client in subject.clients:
            await client.close()


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0
