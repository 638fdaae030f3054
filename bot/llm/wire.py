"""What a provider adapter hands back to the client, and the failures it may raise.

An adapter (`openai_chat.py`, `anthropic_messages.py`) makes one HTTP call with its SDK's own
retries off, and turns the outcome into a `RawAnswer` or one of these exceptions; the client
owns retries, parsing, the cache, metrics and cost, identically for every provider.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel

from bot.llm.errors import LLMRefused
from bot.llm.types import Prompt, Provider
from config.settings import mask_url

DESCRIBE_CHARS = 300


@dataclass(frozen=True)
class RawAnswer:
    """One answered request: the structured payload (a JSON text or an already-decoded
    object), or why there is none, and the usage the provider reported."""

    payload: str | dict[str, Any] | None
    input_tokens: int  # all of them, cache reads and writes included
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    usage_reported: bool = True
    truncated: bool = False
    refusal: str | None = None
    note: str = ""  # what came back instead of a payload, for the error message


def answer_object(content: bytes) -> dict[str, Any] | None:
    """An answer's JSON body as an object; None when it is not one (a proxy's error page)."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def not_an_object(content: bytes) -> RawAnswer:
    """The answer whose body is not a JSON object: no payload, nothing reported, and what came
    instead in the note (the client reports a malformed answer)."""
    shown = content[:80].decode("utf-8", "replace")
    return RawAnswer(
        payload=None,
        input_tokens=0,
        output_tokens=0,
        usage_reported=False,
        note=f"the answer was not a JSON object: {shown!r}",
    )


def field_object(value: Any) -> dict[str, Any]:
    """A field that should hold an object: an empty one if it holds anything else."""
    return value if isinstance(value, dict) else {}


def token_count(value: Any) -> int:
    """A field that should hold a count: 0 if it holds anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Transient(Exception):
    """Worth retrying: 429, 5xx, 408/409, or a connection that failed."""

    def __init__(
        self, message: str, *, outcome: str, status: int | None, retry_after: float | None
    ) -> None:
        super().__init__(message)
        self.outcome = outcome  # rate_limited | server_error | unreachable
        self.status = status
        self.retry_after = retry_after


class TimedOut(Exception):
    """The request did not finish within the timeout."""


class ProviderAdapter(Protocol):
    provider: Provider

    async def call(
        self,
        model: str,
        prompt: Prompt,
        schema: type[BaseModel],
        *,
        max_output_tokens: int,
    ) -> RawAnswer:
        """One request, without retries; the SDK client carries the timeout."""

    def schema_payload(self, schema: type[BaseModel]) -> dict[str, Any]:
        """The answer's schema as this provider is sent it (for counting its tokens)."""

    async def close(self) -> None: ...


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a 429/503 asks for: `retry-after-ms`, or `retry-after` in seconds or as a date."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def describe_status(status: int, body: object, fallback: str) -> str:
    """`429 Rate limit reached` from an error body in OpenAI's or Anthropic's shape."""
    message = fallback
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
        elif isinstance(body.get("message"), str):
            message = body["message"]
    text = f"{status} {message}".strip()
    return text if len(text) <= DESCRIBE_CHARS else text[: DESCRIBE_CHARS - 1] + "…"


def status_failure(
    status: int,
    text: str,
    headers: Mapping[str, str] | None,
    *,
    provider: Provider,
    model: str,
    key_setting: str,
) -> Exception:
    """What an HTTP error from a provider means: Transient (429, 5xx, 408, 409: the client
    retries) or LLMRefused (asking again cannot help), the same for every provider."""
    retry_after = retry_after_seconds(headers)
    if status == 429:
        return Transient(text, outcome="rate_limited", status=status, retry_after=retry_after)
    if status >= 500 or status in (408, 409):  # Anthropic's 529: overloaded
        return Transient(text, outcome="server_error", status=status, retry_after=retry_after)
    if status in (401, 403):
        reason = f"the model provider rejected our credentials (check {key_setting}): {text}"
    elif status == 404:
        reason = f"the model provider does not know the model {model!r}: {text}"
    else:
        reason = f"the model provider refused the request: {text}"
    return LLMRefused(reason, provider=provider, model=model)


def timed_out(base_url: object, exc: BaseException) -> Exception:
    """What an SDK's timeout error means: TimedOut, unless the connection failed under it.
    The SDKs' aiohttp transport (`http_client()`) reports some refused or dropped
    connections as connect timeouts; the aiohttp error beneath says which it was."""
    import aiohttp

    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, TimeoutError):
            return unreachable(base_url, cause)
        cause = cause.__cause__ or cause.__context__
    return TimedOut()


def http_client(sdk: Any, base_url: str | None, url_setting: str) -> Any:
    """The HTTP client an SDK (`openai` or `anthropic`) is given: its own aiohttp transport
    (`DefaultAioHttpClient`, the SDKs' documented choice for concurrency), which the rest of
    Arbiter speaks already, in place of the default httpx2 stack; a model call then costs
    the event loop less CPU (`python -m bench.llm_request`, issue 20).

    None (the SDK's default client) for a base URL with credentials in it (`base_url`, else
    the SDK's own `url_setting` variable): aiohttp refuses the request (it will not send
    them beside the key's Authorization header), where httpx2 sends them as Basic
    authentication, for a gateway that wants it, as Arbiter always has."""
    url = base_url or os.environ.get(url_setting) or ""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return None
    return sdk.DefaultAioHttpClient()


def unreachable(base_url: object, exc: BaseException) -> Transient:
    return Transient(
        f"cannot reach {mask_url(str(base_url))}: {exc}",  # it ends up on the pull request
        outcome="unreachable",
        status=None,
        retry_after=None,
    )
