"""A fake OpenAI: a real HTTP server on 127.0.0.1 that speaks Chat Completions.

Production code reaches it unmodified, through its base URL (`ARBITER_OPENAI_BASE_URL`, or
`fake.settings()` / `fake.env()`), and it answers from a script the test sets::

    async with FakeOpenAI() as fake:
        fake.script(RateLimit(retry_after=0.01), review_answer(finding("app.py", 3)))
        llm = make_llm(load_settings(**fake.settings()), store, Metrics())
        ...
        assert fake.requests[1].user.count("=== FILE app.py") == 1

What a request gets: the next scripted reply (`script()`), else the responder (`respond()`;
by default an empty review: no findings). Replies:

- `Answer(data)`: a structured answer (the JSON object), with usage counted;
- `Malformed(text)`: an answer that does not match the schema (free text, broken JSON);
- `RateLimit(retry_after)`: 429 with `retry-after` (and `retry-after-ms`);
- `ServerError(status)`: 500, 503… with the provider's error body;
- `Slow(seconds, then)`: answers only after `seconds` (or never, if the test ends first).

Every request is recorded on arrival in `fake.requests` (`LLMRequest`: model, system, user,
schema, max_tokens, headers, and the status and usage the fake answered with).
`FakeOpenAI(record=False)` is the instant mode for benchmarks: nothing is kept but the count
in `fake.served`. Usage is counted as OpenAI bills it, with the real `o200k_base` encoding: each
message's content plus 3 tokens, 3 more for the reply's priming, and the `response_format` as
its JSON text as sent; an answer longer than the request's max tokens is cut off, as a real
API does.
Prompt caching is OpenAI's: a prompt of 1,024 tokens or more whose system message and schema
were sent before reports that prefix as `cached_tokens`, in steps of 128 from 1,024 on.

The reply vocabulary and the server machinery live here; `tests/fakes/anthropic.py` reuses
them for the Messages API.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web

from bot.core.findings import FindingAnswer, ReviewAnswer

# --- The script vocabulary ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A structured answer: `data` is the JSON object the model returns."""

    data: Mapping[str, Any]


@dataclass(frozen=True)
class Malformed:
    """An answer that is not the requested structure (OpenAI: this text as the content;
    Anthropic: a text block and no tool call)."""

    text: str = "Sure! Here is my review: the code looks fine."


@dataclass(frozen=True)
class RateLimit:
    """429 Too Many Requests, asking to retry after `retry_after` seconds (None: no header)."""

    retry_after: float | None = 0.01


@dataclass(frozen=True)
class ServerError:
    status: int = 500
    message: str = "The server had an error while processing your request."


@dataclass(frozen=True)
class Slow:
    """Answer `then` only after `seconds`; the server closing cuts the wait short."""

    seconds: float
    then: Reply | None = None


Reply = Answer | Malformed | RateLimit | ServerError | Slow
Outcome = Answer | Malformed | RateLimit | ServerError  # a reply once any wait is over
Responder = Callable[["LLMRequest"], Reply]


def finding(path: str, line: int, **fields: Any) -> dict[str, Any]:
    """A finding as the model would return it, with plausible defaults for what is not given."""
    data: dict[str, Any] = {
        "path": path,
        "line": line,
        "start_line": None,
        "severity": "major",
        "category": "bug",
        "title": f"Problem at {path}:{line}",
        "body": "This line does the wrong thing; do the right thing instead.",
        "suggestion": None,
        "confidence": 0.9,
    }
    data.update(fields)
    FindingAnswer.model_validate(data)  # a test's typo fails here, not deep in a review
    return data


def review_answer(*findings: Mapping[str, Any], summary: str = "Changes reviewed.") -> Answer:
    """An Answer in Arbiter's review schema (bot.core.findings.ReviewAnswer)."""
    data = {"summary": summary, "findings": [dict(f) for f in findings]}
    ReviewAnswer.model_validate(data)
    return Answer(data)


def findings_in_prompt(findings: Iterable[Mapping[str, Any]]) -> Responder:
    """A responder that answers each request with the findings whose file it was shown
    (`=== FILE path (status) ===`, or `=== FILE path ===` for a modified file), so a review
    split into chunks gets each finding exactly once."""
    pending = [dict(f) for f in findings]

    def respond(request: LLMRequest) -> Reply:
        shown = [f for f in pending if shown_in(request.user, str(f["path"]))]
        return review_answer(*shown, summary=f"{len(shown)} finding(s) here.")

    return respond


def noting(asked: asyncio.Event, respond: Responder) -> Responder:
    """`respond`, setting `asked` when a request comes (a test's "the model was asked")."""

    def noted(request: LLMRequest) -> Reply:
        asked.set()
        return respond(request)

    return noted


def shown_in(prompt: str, path: str) -> bool:
    """Whether a review prompt shows this file's diff."""
    return f"=== FILE {path} (" in prompt or f"=== FILE {path} ===" in prompt


def count_tokens(text: str) -> int:
    """Tokens in `text` by OpenAI's o200k_base encoding (gpt-4o, gpt-4.1, gpt-5, o-series)."""
    return len(_o200k().encode_ordinary(text)) if text else 0


@functools.cache
def _o200k() -> Any:
    with warnings.catch_warnings():  # its loader uses a deprecated importlib.resources call
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai  # type: ignore[import-untyped]

        enc = bpe_openai.get_encoding("o200k_base")
        enc.encode_ordinary("warm up")  # the ranks load on first use
        return enc


def wire_json(value: Any) -> str:
    """A JSON value as the SDKs send it (compact): what a schema is counted as."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


OPENAI_MESSAGE_TOKENS = 3  # OpenAI's published framing: per message, and the reply's priming
OPENAI_CACHE_MIN, OPENAI_CACHE_STEP = 1024, 128


def cached_prefix_tokens(prefix: int, total: int, seen: bool) -> int:
    """What OpenAI reports as cached: the repeated prefix, in steps of 128 from 1,024 on."""
    if not seen or total < OPENAI_CACHE_MIN or prefix < OPENAI_CACHE_MIN:
        return 0
    return OPENAI_CACHE_MIN + (prefix - OPENAI_CACHE_MIN) // OPENAI_CACHE_STEP * OPENAI_CACHE_STEP


# --- What the fake records ---------------------------------------------------------------------


@dataclass
class LLMRequest:
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]
    model: str
    system: str
    user: str
    max_tokens: int | None
    schema: dict[str, Any] | None
    input_tokens: int = 0  # what the fake reported, when it answered 200
    output_tokens: int = 0
    status: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def prompt(self) -> str:
        return f"{self.system}\n{self.user}"


# --- The server machinery ----------------------------------------------------------------------


class FakeLLMServer:
    """An aiohttp server on 127.0.0.1 (a free port) that answers from a script."""

    api_prefix = ""

    def __init__(self, *, record: bool = True) -> None:
        self.record = record
        self.requests: list[LLMRequest] = []
        self._script: deque[Reply] = deque()
        self._responder: Responder = lambda _request: review_answer()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._ids = itertools.count(1)
        self.port = 0
        self.served = 0
        self.prefixes: set[str] = set()  # prompt prefixes sent before (for prompt caching)

    # --- The test's controls -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL the SDK is given."""
        return f"http://127.0.0.1:{self.port}{self.api_prefix}"

    def script(self, *replies: Reply) -> None:
        """Queue replies, used one per request, before the responder."""
        self._script.extend(replies)

    def respond(self, responder: Responder) -> None:
        """What every request gets once the script is used up."""
        self._responder = responder

    def always(self, reply: Reply) -> None:
        self._responder = lambda _request: reply

    def settings(self) -> dict[str, Any]:
        """Keyword arguments for `load_settings()` pointing Arbiter at this fake."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Environment variables pointing an `arbiter` process at this fake."""
        raise NotImplementedError

    # --- Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- For subclasses ----------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _next(self, request: LLMRequest) -> Reply:
        return self._script.popleft() if self._script else self._responder(request)

    async def _settle(self, reply: Reply, *, since: float | None = None) -> Outcome | None:
        """Wait out Slow replies; None when the server closed while waiting. The first wait
        counts from `since` (the event loop's time the request arrived), as a model's time
        counts from the request, not from when this fake is done reading it."""
        while isinstance(reply, Slow):
            wait = reply.seconds
            if since is not None:
                wait = max(wait - (asyncio.get_running_loop().time() - since), 0.0)
                since = None
            try:
                await asyncio.wait_for(self._closing.wait(), wait)
            except TimeoutError:
                pass
            else:
                return None
            reply = reply.then if reply.then is not None else review_answer()
        return reply

    def _record(self, request: LLMRequest) -> None:
        self.served += 1
        if self.record:
            self.requests.append(request)

    def _new_id(self) -> int:
        return next(self._ids)


# --- OpenAI ------------------------------------------------------------------------------------


class FakeOpenAI(FakeLLMServer):
    """`POST /v1/chat/completions`, answering with JSON content in the requested schema."""

    api_prefix = "/v1"

    def settings(self) -> dict[str, Any]:
        return {"openai_base_url": self.url, "OPENAI_API_KEY": "sk-fake-openai"}

    def env(self) -> dict[str, str]:
        return {"ARBITER_OPENAI_BASE_URL": self.url, "OPENAI_API_KEY": "sk-fake-openai"}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _chat(self, http: web.Request) -> web.StreamResponse:
        arrived = asyncio.get_running_loop().time()
        if not http.headers.get("Authorization", "").startswith("Bearer "):
            return _openai_error(401, "You didn't provide an API key.", "invalid_request_error")
        body = await http.json()
        messages = body.get("messages") or []
        system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
        user = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "user")
        response_format = body.get("response_format") or {}
        schema = (response_format.get("json_schema") or {}).get("schema")
        request = LLMRequest(
            path=http.path,
            headers={k.lower(): v for k, v in http.headers.items()},
            body=body if self.record else {},
            model=str(body.get("model", "")),
            system=system if self.record else "",
            user=user,
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            schema=schema,
        )
        self._record(request)  # on arrival: a request that times out is recorded too
        # The reply is chosen, and a `Slow` one's time starts, on arrival; the prompt is counted
        # then too, not after the wait: answers due together are sent together, not one after
        # another behind this process's tokenizer, and each is due its time after the request
        # arrived, however long the counting took.
        chosen = self._next(request)
        schema_text = wire_json(response_format) if response_format else ""
        input_tokens = (
            sum(count_tokens(_text(m.get("content"))) + OPENAI_MESSAGE_TOKENS for m in messages)
            + OPENAI_MESSAGE_TOKENS
            + count_tokens(schema_text)
        )
        prefix_tokens = count_tokens(schema_text) + count_tokens(system) + OPENAI_MESSAGE_TOKENS
        reply = await self._settle(chosen, since=arrived)
        if not self.record:
            request.user = ""
        if reply is None:
            request.status = 503
            return _openai_error(503, "The fake is shutting down.", "server_error")
        if isinstance(reply, RateLimit):
            request.status = 429
            headers = {}
            if reply.retry_after is not None:
                headers = {
                    "retry-after": f"{reply.retry_after:g}",
                    "retry-after-ms": str(int(reply.retry_after * 1000)),
                }
            return _openai_error(
                429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded", headers
            )
        if isinstance(reply, ServerError):
            request.status = reply.status
            return _openai_error(reply.status, reply.message, "server_error")
        content = json.dumps(reply.data) if isinstance(reply, Answer) else reply.text
        request.input_tokens = input_tokens
        prefix_key = f"{request.model}\x00{schema_text}\x00{system}"
        request.cache_read_tokens = cached_prefix_tokens(
            prefix_tokens, request.input_tokens, prefix_key in self.prefixes
        )
        self.prefixes.add(prefix_key)
        finish = "stop"
        output_tokens = count_tokens(content)
        if request.max_tokens is not None and output_tokens > request.max_tokens:
            content = content[: request.max_tokens * 4]
            output_tokens = request.max_tokens
            finish = "length"
        request.output_tokens = output_tokens
        request.status = 200
        return web.json_response(
            {
                "id": f"chatcmpl-fake{self._new_id()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "finish_reason": finish,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": request.input_tokens,
                    "completion_tokens": output_tokens,
                    "total_tokens": request.input_tokens + output_tokens,
                    "prompt_tokens_details": {"cached_tokens": request.cache_read_tokens},
                },
            }
        )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _openai_error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status=status,
        headers=headers,
    )
