"""A URL setting's credentials never leave in an answer: the API's links to pull requests and
repositories carry none, and neither does a model error that names the base URL (it becomes a
stored reason and a commit status)."""

from __future__ import annotations

import json

from bot.core.findings import ReviewAnswer
from bot.llm import LLM, Prompt, ProviderDown
from bot.metrics import Metrics
from config.settings import load_settings
from tests.api.conftest import MakeApi
from tests.conftest import free_port


async def test_api_links_carry_no_credentials(make_api: MakeApi) -> None:
    api = await make_api(
        github_base_url="https://bot:gh-secret-123@ghe.example.com/api/v3?token=gh-token-456",
        gitlab_base_url="https://gl-user:gl-secret-789@gitlab.example.com",
    )
    for path in ("/api/reviews", "/api/repos"):
        answer = await api.get(path)
        assert answer.status == 200
        text = json.dumps(await answer.json())
        assert "ghe.example.com/acme/api" in text
        for secret in ("gh-secret-123", "gh-token-456", "gl-secret-789", "bot:", "@ghe"):
            assert secret not in text, (path, secret)


async def test_an_unreachable_model_is_named_without_its_password() -> None:
    port = free_port()  # nothing listens there
    settings = load_settings(
        openai_base_url=f"http://proxy:llm-secret-321@127.0.0.1:{port}/v1?api_key=llm-key-654",
        llm_max_retries=0,
    )
    llm = LLM(settings, None, Metrics())
    try:
        try:
            await llm.complete(Prompt(system="s", user="u"), ReviewAnswer)
        except ProviderDown as exc:
            message = str(exc)
        else:
            raise AssertionError("the call should have failed")
    finally:
        await llm.close()
    assert f"127.0.0.1:{port}" in message
    assert "llm-secret-321" not in message and "llm-key-654" not in message
