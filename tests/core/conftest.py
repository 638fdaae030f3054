"""Helpers for the reviewer's tests: diffs built from before/after texts, and fake models."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from bot.llm import LLM, make_llm
from bot.metrics import Metrics
from config.settings import Settings, load_settings
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.openai import FakeLLMServer, FakeOpenAI


def file_diff(path: str, before: str | None, after: str | None, *, context: int = 3) -> str:
    """A git-style diff of one file; None before (after) means added (deleted)."""
    old = [] if before is None else before.splitlines(keepends=True)
    new = [] if after is None else after.splitlines(keepends=True)
    head = f"diff --git a/{path} b/{path}\n"
    if before is None:
        head += "new file mode 100644\n"
    if after is None:
        head += "deleted file mode 100644\n"
    lines = list(
        difflib.unified_diff(
            old,
            new,
            "/dev/null" if before is None else f"a/{path}",
            "/dev/null" if after is None else f"b/{path}",
            n=context,
        )
    )
    return head + "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def patch_of(files: Mapping[str, tuple[str | None, str | None]]) -> str:
    return "".join(file_diff(path, before, after) for path, (before, after) in files.items())


def numbered(n: int, prefix: str = "line") -> str:
    return "".join(f"{prefix} {i}\n" for i in range(1, n + 1))


def settings_for(*fakes: FakeLLMServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"llm_timeout": 10, "llm_max_retries": 2}
    for fake in fakes:
        values.update(fake.settings())
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
async def llm_for() -> AsyncIterator[Any]:
    """`llm_for(settings, store=None)`: an LLM client closed after the test."""
    made: list[LLM] = []

    def build(settings: Settings, store: Any = None, metrics: Metrics | None = None) -> LLM:
        llm = make_llm(settings, store, metrics or Metrics())
        made.append(llm)
        return llm

    yield build
    for llm in made:
        await llm.close()
