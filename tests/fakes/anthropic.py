"""A fake Anthropic: a real HTTP server on 127.0.0.1 that speaks the Messages API.

The same script vocabulary and controls as `tests/fakes/openai.py` (re-exported here)::

    async with FakeAnthropic() as fake:
        fake.script(ServerError(529), review_answer(finding("app.py", 3)))
        llm = make_llm(load_settings(**fake.settings(), default_model="claude-sonnet-4-6"), ...)

Structured output is a forced tool call: when the request names a tool in `tool_choice`,
an `Answer` comes back as that tool's `tool_use` block (its input is the answer) with
`stop_reason: "tool_use"`; `Malformed` comes back as a text block and no tool call. Usage is
`input_tokens` / `output_tokens`, counted as the OpenAI fake counts them.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from aiohttp import web

from tests.fakes.openai import (
    Answer,
    FakeLLMServer,
    LLMRequest,
    Malformed,
    RateLimit,
    Reply,
    Responder,
    ServerError,
    Slow,
    count_tokens,
    finding,
    findings_in_prompt,
    review_answer,
    wire_json,
)

__all__ = [
    "Answer",
    "FakeAnthropic",
    "LLMRequest",
    "Malformed",
    "RateLimit",
    "Reply",
    "Responder",
    "ServerError",
    "Slow",
    "finding",
    "findings_in_prompt",
    "review_answer",
]

CLAUDE_RATIO = 1.2  # the stand-in's Claude tokens per o200k token
TOOL_PROMPT_TOKENS = 313
MESSAGE_TOKENS = 7
CACHE_MIN = 1024


def claude_tokens(text: str) -> int:
    """The stand-in's count of `text` in Claude tokens."""
    return math.ceil(count_tokens(text) * CLAUDE_RATIO) if text else 0


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeLLMServer):
    """`POST /v1/messages`, answering through the tool the request forces."""

    def settings(self) -> dict[str, Any]:
        return {"anthropic_base_url": self.url, "ANTHROPIC_API_KEY": "sk-ant-fake"}

    def env(self) -> dict[str, str]:
        return {"ARBITER_ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": "sk-ant-fake"}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    async def _messages(self, http: web.Request) -> web.StreamResponse:
        arrived = asyncio.get_running_loop().time()
        if not (http.headers.get("x-api-key") or http.headers.get("Authorization")):
            return _error(401, "x-api-key header is required")
        if not http.headers.get("anthropic-version"):
            return _error(400, "anthropic-version header is required")
        body = await http.json()
        system = _text(body.get("system"))
        messages = body.get("messages") or []
        user = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "user")
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        forced = choice.get("name") if choice.get("type") == "tool" else None
        schema = next((t.get("input_schema") for t in tools if t.get("name") == forced), None)
        request = LLMRequest(
            path=http.path,
            headers={k.lower(): v for k, v in http.headers.items()},
            body=body if self.record else {},
            model=str(body.get("model", "")),
            system=system if self.record else "",
            user=user,
            max_tokens=body.get("max_tokens"),
            schema=schema,
        )
        self._record(request)  # on arrival: a request that times out is recorded too
        reply = await self._settle(self._next(request), since=arrived)
        if not self.record:
            request.user = ""
        if reply is None:
            request.status = 529
            return _error(529, "The fake is shutting down.")
        if isinstance(reply, RateLimit):
            request.status = 429
            headers = {} if reply.retry_after is None else {"retry-after": f"{reply.retry_after:g}"}
            return _error(429, "Number of requests has exceeded your rate limit.", headers)
        if isinstance(reply, ServerError):
            request.status = reply.status
            return _error(reply.status, reply.message)
        prefix = claude_tokens(wire_json(tools)) + (TOOL_PROMPT_TOKENS if forced else 0)
        blocks = body.get("system")
        cached_upto = 0
        for block in blocks if isinstance(blocks, list) else [{"text": system}]:
            prefix += claude_tokens(str(block.get("text", "")))
            if block.get("cache_control"):
                cached_upto = prefix
        total = prefix + sum(
            claude_tokens(_text(m.get("content"))) + MESSAGE_TOKENS for m in messages
        )
        if cached_upto >= CACHE_MIN:
            key = f"{request.model}\x00{json.dumps(tools)}\x00{system}"
            if key in self.prefixes:
                request.cache_read_tokens = cached_upto
            else:
                request.cache_write_tokens = cached_upto
                self.prefixes.add(key)
        request.input_tokens = total
        content: list[dict[str, Any]]
        if isinstance(reply, Answer) and forced:
            answer_text = json.dumps(reply.data)
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_fake{self._new_id()}",
                    "name": forced,
                    "input": dict(reply.data),
                }
            ]
            stop = "tool_use"
        else:
            answer_text = json.dumps(reply.data) if isinstance(reply, Answer) else reply.text
            content = [{"type": "text", "text": answer_text}]
            stop = "end_turn"
        output_tokens = count_tokens(answer_text)
        if request.max_tokens is not None and output_tokens > request.max_tokens:
            # A real API stops mid-answer: what was written so far comes back as text.
            content = [{"type": "text", "text": answer_text[: request.max_tokens * 4]}]
            output_tokens = request.max_tokens
            stop = "max_tokens"
        request.output_tokens = output_tokens
        request.status = 200
        return web.json_response(
            {
                "id": f"msg_fake{self._new_id()}",
                "type": "message",
                "role": "assistant",
                "model": request.model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": request.input_tokens
                    - request.cache_read_tokens
                    - request.cache_write_tokens,
                    "output_tokens": output_tokens,
                    "cache_creation_input_tokens": request.cache_write_tokens,
                    "cache_read_input_tokens": request.cache_read_tokens,
                },
            }
        )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}]
        return "".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return ""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = _ERROR_TYPES.get(status, "api_error")
    return web.json_response(
        {"type": "error", "error": {"type": kind, "message": message}},
        status=status,
        headers=headers,
    )
