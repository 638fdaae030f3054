"""Anthropic, through the Messages API, with structured output as a forced tool call.

The answer's schema is the input schema of one tool, and `tool_choice` forces the model to call
it: the tool call's input is the structured answer. The SDK is imported on first use.
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
    from anthropic import AsyncAnthropic
    from anthropic.types import TextBlockParam, ToolParam

OFFICIAL_HOST = "api.anthropic.com"
PLACEHOLDER_KEY = "unused"


def tool_for(schema: type[BaseModel]) -> ToolParam:
    """The tool whose input is an answer in `schema` (a copy of the one built once)."""
    return copy.deepcopy(_tool(schema))


@functools.cache
def _tool(schema: type[BaseModel]) -> ToolParam:
    # Built once per schema: pydantic's schema generation is a good part of a call's CPU.
    doc = (schema.__doc__ or "").strip().splitlines()
    return {
        "name": schema.__name__,
        "description": doc[0] if doc else f"Report the answer as {schema.__name__}.",
        "input_schema": schema.model_json_schema(),
    }


class AnthropicMessages:
    provider: Provider = "anthropic"

    def __init__(self, *, api_key: str | None, base_url: str | None, timeout: float) -> None:
        self._api_key = api_key
        self._base_url = base_url  # None: the SDK's own ANTHROPIC_BASE_URL, else the API
        self._timeout = timeout
        self._client: AsyncAnthropic | None = None

    def _sdk(self) -> AsyncAnthropic:
        if self._client is None:
            import anthropic
            from anthropic import AsyncAnthropic

            client = AsyncAnthropic(
                api_key=self._api_key or PLACEHOLDER_KEY,
                base_url=self._base_url,
                timeout=self._timeout,
                max_retries=0,  # the LLM client retries, the same way for every provider
                http_client=http_client(anthropic, self._base_url, "ANTHROPIC_BASE_URL"),
            )
            if client.base_url.host == OFFICIAL_HOST and not self._api_key:
                raise LLMNotConfigured(
                    "no Anthropic API key: set ANTHROPIC_API_KEY (or ARBITER_ANTHROPIC_BASE_URL "
                    "for a gateway that needs none)",
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
        import anthropic

        client = self._sdk()
        tool = _tool(schema)  # serialized at once below, never changed: no copy
        system: list[TextBlockParam] = [{"type": "text", "text": prompt.system}]
        if prompt.cache_prefix:
            # Tools come before the system prompt: this breakpoint caches both.
            system[0]["cache_control"] = {"type": "ephemeral"}
        if prompt.instructions:
            system.append({"type": "text", "text": prompt.instructions})
        body = {
            "model": model,
            "max_tokens": max_output_tokens,
            "system": system,
            "messages": [{"role": "user", "content": prompt.user}],
            "tools": [tool],
            "tool_choice": {"type": "tool", "name": tool["name"]},
        }
        try:
            # The SDK's own request, as `messages.create` makes it with these parameters (same
            # path, key and version headers, timeout and errors), its body written by orjson
            # (the SDK's encoder is the json module's) and its answer read from the bytes by
            # `answer` (the SDK's typed Message is built field by field, for the few values
            # read here), as the OpenAI adapter does (issue 20).
            content = await client.post("/v1/messages", cast_to=bytes, content=orjson.dumps(body))
        except anthropic.APITimeoutError as exc:
            raise timed_out(client.base_url, exc) from None
        except anthropic.APIStatusError as exc:
            text = describe_status(exc.status_code, exc.body, exc.message)
            raise status_failure(
                exc.status_code,
                text,
                exc.response.headers,
                provider=self.provider,
                model=model,
                key_setting="ANTHROPIC_API_KEY",
            ) from None
        except anthropic.APIConnectionError as exc:
            raise unreachable(client.base_url, exc) from None

        return answer(content, str(tool["name"]))

    def schema_payload(self, schema: type[BaseModel]) -> dict[str, Any]:
        return dict(tool_for(schema))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def answer(content: bytes, tool: str) -> RawAnswer:
    """A Messages answer's structured payload (the input of its call of `tool`), usage and
    stop reason, from its JSON body. A missing or ill-typed value counts as absent (a gateway
    may leave usage out: the client then counts the tokens itself); a body that is not a JSON
    object has no payload."""
    data = answer_object(content)
    if data is None:
        return not_an_object(content)
    usage = field_object(data.get("usage"))
    written = token_count(usage.get("cache_creation_input_tokens"))
    read = token_count(usage.get("cache_read_input_tokens"))
    payload: dict[str, Any] | None = None
    texts: list[str] = []
    blocks = data.get("content")
    for block in map(field_object, blocks if isinstance(blocks, list) else []):
        if block.get("type") == "tool_use" and block.get("name") == tool:
            inputs = block.get("input")
            payload = inputs if isinstance(inputs, dict) else None
            break
        if block.get("type") == "text" and isinstance(text := block.get("text"), str):
            texts.append(text)
    note = ""
    if payload is None:
        said = " ".join(texts).strip()
        note = f"no {tool} tool call in the answer" + (f"; it said: {said[:200]}" if said else "")
    stop = data.get("stop_reason")
    return RawAnswer(
        payload=payload,
        input_tokens=token_count(usage.get("input_tokens")) + written + read,
        output_tokens=token_count(usage.get("output_tokens")),
        cache_read_tokens=read,
        cache_write_tokens=written,
        usage_reported=bool(usage),
        truncated=stop == "max_tokens",
        refusal=" ".join(texts) if stop == "refusal" else None,
        note=note,
    )
