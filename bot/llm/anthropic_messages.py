"""Anthropic, through the Messages API, with structured output as a forced tool call.

The answer's schema is the input schema of one tool, and `tool_choice` forces the model to call
it: the tool call's input is the structured answer. The SDK is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from bot.llm.errors import LLMNotConfigured
from bot.llm.types import Prompt, Provider
from bot.llm.wire import (
    RawAnswer,
    describe_status,
    http_client,
    status_failure,
    timed_out,
    unreachable,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import TextBlockParam, ToolParam

OFFICIAL_HOST = "api.anthropic.com"
PLACEHOLDER_KEY = "unused"


def tool_for(schema: type[BaseModel]) -> ToolParam:
    """The tool whose input is an answer in `schema`."""
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
        tool = tool_for(schema)
        system: list[TextBlockParam] = [{"type": "text", "text": prompt.system}]
        if prompt.cache_prefix:
            # Tools come before the system prompt: this breakpoint caches both.
            system[0]["cache_control"] = {"type": "ephemeral"}
        if prompt.instructions:
            system.append({"type": "text", "text": prompt.instructions})
        try:
            response = await client.messages.create(
                model=model,
                max_tokens=max_output_tokens,
                system=system,
                messages=[{"role": "user", "content": prompt.user}],
                tools=[tool],
                tool_choice={"type": "tool", "name": tool["name"]},
            )
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

        usage = response.usage
        written = usage.cache_creation_input_tokens or 0
        read = usage.cache_read_input_tokens or 0
        input_tokens = usage.input_tokens + written + read
        payload: dict[str, Any] | None = None
        texts: list[str] = []
        for block in response.content:
            if block.type == "tool_use" and block.name == tool["name"]:
                payload = block.input if isinstance(block.input, dict) else None
                break
            if block.type == "text":
                texts.append(block.text)
        note = ""
        if payload is None:
            said = " ".join(texts).strip()
            note = f"no {tool['name']} tool call in the answer" + (
                f"; it said: {said[:200]}" if said else ""
            )
        return RawAnswer(
            payload=payload,
            input_tokens=input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=read,
            cache_write_tokens=written,
            truncated=response.stop_reason == "max_tokens",
            refusal=" ".join(texts) if response.stop_reason == "refusal" else None,
            note=note,
        )

    def schema_payload(self, schema: type[BaseModel]) -> dict[str, Any]:
        return dict(tool_for(schema))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
