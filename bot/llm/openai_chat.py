"""OpenAI, and any OpenAI-compatible server, through Chat Completions with a JSON schema.

Chat Completions rather than the Responses API, because vLLM, Ollama and LM Studio speak it.
The answer format is `response_format={"type": "json_schema", ...}` (strict). The SDK is
imported on first use: it is slow to import, and a process may never call OpenAI.
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from bot.llm.errors import LLMNotConfigured
from bot.llm.types import Prompt, Provider
from bot.llm.wire import (
    RawAnswer,
    answer_object,
    describe_status,
    field_object,
    http_client,
    not_an_object,
    status_failure,
    timed_out,
    token_count,
    unreachable,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

OFFICIAL_HOST = "api.openai.com"
# Compatible servers ignore the key, but the SDK insists on having one.
PLACEHOLDER_KEY = "unused"


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """The `response_format` asking for an answer in `schema` (strict JSON schema): built once
    per schema (pydantic's schema generation is a good part of a call's CPU), a copy each time."""
    return copy.deepcopy(_response_format(schema))


@functools.cache
def _response_format(schema: type[BaseModel]) -> dict[str, Any]:
    from openai.lib import type_to_response_format_param

    param: Any = type_to_response_format_param(schema)
    return dict(param)


class OpenAIChat:
    provider: Provider = "openai"

    def __init__(self, *, api_key: str | None, base_url: str | None, timeout: float) -> None:
        self._api_key = api_key
        self._base_url = base_url  # None: the SDK's own OPENAI_BASE_URL, else api.openai.com
        self._timeout = timeout
        self._client: AsyncOpenAI | None = None
        self._official = True

    def _sdk(self) -> AsyncOpenAI:
        if self._client is None:
            import openai
            from openai import AsyncOpenAI

            client = AsyncOpenAI(
                api_key=self._api_key or PLACEHOLDER_KEY,
                base_url=self._base_url,
                timeout=self._timeout,
                max_retries=0,  # the LLM client retries, the same way for every provider
                http_client=http_client(openai, self._base_url, "OPENAI_BASE_URL"),
            )
            self._official = client.base_url.host == OFFICIAL_HOST
            if self._official and not self._api_key:
                raise LLMNotConfigured(
                    "no OpenAI API key: set OPENAI_API_KEY, or ARBITER_OPENAI_BASE_URL to use "
                    "an OpenAI-compatible server (vLLM, Ollama, LM Studio)",
                    provider=self.provider,
                )
            self._client = client
        return self._client

    async def call(
        self,
        model: str,
        prompt: Prompt,
        schema: type[BaseModel],
        *,
        max_output_tokens: int,
    ) -> RawAnswer:
        import openai

        client = self._sdk()
        limit: dict[str, Any] = (
            # OpenAI's reasoning models refuse max_tokens; compatible servers all know it.
            {"max_completion_tokens": max_output_tokens}
            if self._official
            else {"max_tokens": max_output_tokens}
        )
        body = {
            "model": model,
            # The system prompt first and the same on every call: OpenAI caches a prompt's
            # repeated prefix by itself (from 1,024 tokens on) and bills it at less.
            "messages": [
                {"role": "system", "content": prompt.system_text},
                {"role": "user", "content": prompt.user},
            ],
            # Serialized at once below, never changed: the cached format needs no copy.
            "response_format": _response_format(schema),
            **limit,
        }
        try:
            # The SDK's own request, as `chat.completions.create` makes it (same path, bearer
            # key, timeout and errors), minus create's walk of the parameters
            # against their typed definitions: that walk renames nothing in this plain JSON
            # body and cost 0.5-0.9 ms of the event loop's CPU per call, about what the rest of
            # the request costs (`python -m bench.llm_request`, issue 20). The answer comes back
            # as its bytes, read by `answer` (the SDK's typed ChatCompletion is built field by
            # field from the JSON, for the six values read here). The body goes as JSON bytes
            # written by orjson (the SDK sends `content` as it is, as application/json; its own
            # encoder is the json module's, in Python for a prompt's long strings).
            content = await client.post(
                "/chat/completions",
                cast_to=bytes,
                content=orjson.dumps(body),
                options={"security": {"bearer_auth": True}},
            )
        except openai.APITimeoutError as exc:
            raise timed_out(client.base_url, exc) from None
        except openai.APIStatusError as exc:
            text = describe_status(exc.status_code, exc.body, exc.message)
            raise status_failure(
                exc.status_code,
                text,
                exc.response.headers,
                provider=self.provider,
                model=model,
                key_setting="OPENAI_API_KEY",
            ) from None
        except openai.APIConnectionError as exc:
            raise unreachable(client.base_url, exc) from None

        return answer(content)

    def schema_payload(self, schema: type[BaseModel]) -> dict[str, Any]:
        return response_format(schema)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def answer(content: bytes) -> RawAnswer:
    """A Chat Completions answer's payload, usage and finish reason, from its JSON body. Read
    as leniently as the SDK reads one (compatible servers leave fields out): a missing or
    ill-typed value counts as absent; a body that is not a JSON object has no payload."""
    data = answer_object(content)
    if data is None:
        return not_an_object(content)
    usage = field_object(data.get("usage"))
    details = field_object(usage.get("prompt_tokens_details"))
    choices = data.get("choices")
    choice = field_object(choices[0]) if isinstance(choices, list) and choices else None
    message = field_object(choice.get("message")) if choice is not None else {}
    payload = message.get("content")
    refusal = message.get("refusal")
    return RawAnswer(
        payload=payload if isinstance(payload, str | dict) else None,
        input_tokens=token_count(usage.get("prompt_tokens")),
        output_tokens=token_count(usage.get("completion_tokens")),
        cache_read_tokens=token_count(details.get("cached_tokens")),
        usage_reported=bool(usage),
        truncated=choice is not None and choice.get("finish_reason") == "length",
        refusal=refusal if isinstance(refusal, str) else None,
        note="" if choice is not None else "no choices in the answer",
    )
