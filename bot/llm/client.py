"""The LLM client: one `complete()` over OpenAI and Anthropic, with cost, cache and retries.

`complete(prompt, schema)` routes the model (`claude-*` to Anthropic, others to OpenAI,
`provider:model` explicit), answers from the cache when the very same question was asked,
and otherwise calls the provider with a structured-output schema and parses the answer into
the pydantic model. It retries 429, 5xx and failed connections up to LLM_MAX_RETRIES times,
waiting what `retry-after` asks (up to a minute); a timeout is reported at once, not retried.
A malformed answer is asked again once, then reported: never guessed at.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from bot.llm.anthropic_messages import AnthropicMessages, tool_for
from bot.llm.cache import ResponseCache, cache_key
from bot.llm.errors import (
    LLMError,
    LLMRefused,
    LLMTimeout,
    MalformedAnswer,
    ModelPriceUnknown,
    ProviderDown,
    RateLimited,
)
from bot.llm.openai_chat import OpenAIChat, response_format
from bot.llm.routing import resolve_model
from bot.llm.tokens import TokenCounter, counter_for
from bot.llm.types import Completion, ModelRef, Prompt, Provider
from bot.llm.wire import ProviderAdapter, RawAnswer, TimedOut, Transient
from bot.logs import get_logger
from bot.metrics import Metrics
from config.prices import (
    DEFAULT_CONTEXT_TOKENS,
    ModelPrice,
    PriceTable,
    load_prices,
    missing_price_message,
)
from config.settings import Settings

if TYPE_CHECKING:
    from bot.store import Store

T = TypeVar("T", bound=BaseModel)

DEFAULT_MAX_OUTPUT_TOKENS = 4096
ANSWER_ATTEMPTS = 2  # a malformed answer is asked again once
MAX_RETRY_WAIT = 60.0  # a longer retry-after is reported rather than waited for
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ModelInfo:
    """A routed model and its price (None when nobody priced it)."""

    ref: ModelRef
    price: ModelPrice | None

    @property
    def context_tokens(self) -> int:
        return self.price.context_tokens if self.price else DEFAULT_CONTEXT_TOKENS

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        if self.price is None:
            return 0.0
        return self.price.cost(
            input_tokens,
            output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
        )


@functools.cache
def schema_text(schema: type[BaseModel]) -> str:
    """The schema as a stable text: for cache keys."""
    return schema.__name__ + json.dumps(schema.model_json_schema(), sort_keys=True)


@functools.cache
def schema_payload(provider: Provider, schema: type[BaseModel]) -> dict[str, Any]:
    """The answer's schema exactly as `provider` is sent it: what its tokens are counted on."""
    return dict(tool_for(schema)) if provider == "anthropic" else response_format(schema)


class LLM:
    def __init__(
        self,
        settings: Settings,
        store: Store | None,
        metrics: Metrics,
        *,
        prices: PriceTable | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.prices = prices if prices is not None else load_prices(settings.model_prices)
        self.cache = ResponseCache(store, ttl_seconds=settings.cache_ttl_hours * 3600)
        self.timeout = settings.llm_timeout
        self.max_retries = settings.llm_max_retries
        self._sleep = sleep
        self._adapters: dict[Provider, ProviderAdapter] = {}
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._ratios: dict[ModelRef, float] = {}  # provider tokens per encoding token, seen
        self._log = get_logger(component="llm")

    # --- What the reviewer plans with ---------------------------------------------------------

    def model_info(self, model: str | None = None) -> ModelInfo:
        ref = resolve_model(model or self.settings.default_model)
        return ModelInfo(ref, self.prices.lookup(ref.provider, ref.name))

    def require_price(self, info: ModelInfo, cost_cap_usd: float | None = None) -> None:
        """Raise ModelPriceUnknown when the model has no price and a cost cap is set
        (`cost_cap_usd`, default ARBITER_MAX_COST_PER_REVIEW_USD; 0 means no cap)."""
        cap = self.settings.max_cost_per_review_usd if cost_cap_usd is None else cost_cap_usd
        if info.price is None and cap > 0:
            raise ModelPriceUnknown(
                missing_price_message(info.ref.provider, info.ref.name),
                provider=info.ref.provider,
                model=info.ref.name,
            )

    def counter(self, model: str | None = None) -> TokenCounter:
        """Counts text in `model`'s tokens: exactly for OpenAI's models, by a ratio calibrated
        on the usage reported so far for Anthropic's (see bot.llm.tokens)."""
        ref = self.model_info(model).ref
        first = counter_for(ref)
        seen = self._ratios.get(ref)
        return first if seen is None else first.calibrated(seen)

    def estimate_input_tokens(
        self, prompt: Prompt, schema: type[BaseModel], *, model: str | None = None
    ) -> int:
        """Input tokens this prompt will be billed with `model`: exact for OpenAI's models."""
        ref = self.model_info(model).ref
        return self.counter(model).request(
            prompt.system_text, prompt.user, schema_payload(ref.provider, schema)
        )

    # --- The call -----------------------------------------------------------------------------

    async def complete(
        self,
        prompt: Prompt,
        schema: type[T],
        *,
        model: str | None = None,
        max_output_tokens: int | None = None,
        cost_cap_usd: float | None = None,
        max_attempts: int = ANSWER_ATTEMPTS,
    ) -> Completion[T]:
        """The model's answer to `prompt`, parsed into `schema`.

        `max_attempts` is how many answers to ask for before a malformed one is reported
        (default 2: one retry); a caller on a budget passes 1 and books each retry itself.
        `cost_cap_usd` overrides ARBITER_MAX_COST_PER_REVIEW_USD for the price check.

        Raises LLMError subclasses: ModelPriceUnknown, LLMNotConfigured, LLMRefused,
        RateLimited, ProviderDown, LLMTimeout, MalformedAnswer.
        """
        info = self.model_info(model)
        self.require_price(info, cost_cap_usd)
        limit = max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
        key = cache_key(
            info.ref.provider, info.ref.name, schema_text(schema), prompt.system_text, prompt.user
        )
        lock = self._acquire_lock(key)
        try:
            async with lock:  # the same question asked twice at once is answered once
                hit = await self._from_cache(key, schema)
                if hit is not None:
                    self.metrics.llm_cache_hits.inc()
                    return Completion(
                        value=hit,
                        provider=info.ref.provider,
                        model=info.ref.name,
                        input_tokens=0,
                        output_tokens=0,
                        cost_usd=0.0,
                        cached=True,
                        priced=info.price is not None,
                        attempts=0,
                    )
                completion = await self._ask(info, prompt, schema, limit, max(max_attempts, 1))
                self.cache.put(key, completion.value.model_dump_json())
                return completion
        finally:
            self._release_lock(key)

    async def close(self) -> None:
        await self.cache.flush()
        for adapter in self._adapters.values():
            await adapter.close()
        self._adapters.clear()

    # --- Internals ----------------------------------------------------------------------------

    def _adapter(self, provider: Provider) -> ProviderAdapter:
        adapter = self._adapters.get(provider)
        if adapter is None:
            s = self.settings
            if provider == "anthropic":
                key = s.anthropic_api_key.get_secret_value() if s.anthropic_api_key else None
                adapter = AnthropicMessages(
                    api_key=key, base_url=s.anthropic_base_url, timeout=self.timeout
                )
            else:
                key = s.openai_api_key.get_secret_value() if s.openai_api_key else None
                adapter = OpenAIChat(api_key=key, base_url=s.openai_base_url, timeout=self.timeout)
            self._adapters[provider] = adapter
        return adapter

    def _acquire_lock(self, key: str) -> asyncio.Lock:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        return lock

    def _release_lock(self, key: str) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    async def _from_cache(self, key: str, schema: type[T]) -> T | None:
        text = await self.cache.get(key)
        if text is None:
            return None
        try:
            return schema.model_validate_json(text)
        except ValidationError:  # written by an older schema: ask again
            self.cache.forget(key)
            return None

    async def _ask(
        self, info: ModelInfo, prompt: Prompt, schema: type[T], limit: int, attempts: int
    ) -> Completion[T]:
        ref = info.ref
        spent_in = spent_out = read_in = written_in = 0
        spent_usd = 0.0
        problem = ""
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                raw = await self._send(ref, prompt, schema, limit)
            except LLMError as exc:
                exc.input_tokens += spent_in
                exc.output_tokens += spent_out
                exc.cost_usd += spent_usd
                raise
            input_tokens, output_tokens = self._billed(raw, info, prompt, schema)
            cost = info.cost(
                input_tokens,
                output_tokens,
                cache_read_tokens=raw.cache_read_tokens,
                cache_write_tokens=raw.cache_write_tokens,
            )
            read_in += raw.cache_read_tokens
            written_in += raw.cache_write_tokens
            spent_in += input_tokens
            spent_out += output_tokens
            spent_usd += cost
            if cost:
                self.metrics.cost.inc(cost)
            value, problem = _parse(raw, schema, limit)
            outcome = "ok" if value is not None else "malformed"
            self._count(ref, outcome)
            self._log.debug(
                "llm call",
                provider=ref.provider,
                model=ref.name,
                outcome=outcome,
                attempt=attempt,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=round(cost, 6),
                seconds=round(time.monotonic() - started, 3),
            )
            if value is not None:
                return Completion(
                    value=value,
                    provider=ref.provider,
                    model=ref.name,
                    input_tokens=spent_in,
                    output_tokens=spent_out,
                    cost_usd=spent_usd,
                    priced=info.price is not None,
                    attempts=attempt,
                    cache_read_tokens=read_in,
                    cache_write_tokens=written_in,
                )
            self._log.warning(
                "malformed model answer", provider=ref.provider, model=ref.name, problem=problem
            )
        tries = {1: "", 2: ", on the first try and on the retry"}.get(
            attempts, f", {attempts} times"
        )
        raise MalformedAnswer(
            f"the model's answer did not match the expected format{tries} "
            f"({ref.provider} {ref.name}): {problem}",
            provider=ref.provider,
            model=ref.name,
            input_tokens=spent_in,
            output_tokens=spent_out,
            cost_usd=spent_usd,
        )

    async def _send(
        self, ref: ModelRef, prompt: Prompt, schema: type[BaseModel], limit: int
    ) -> RawAnswer:
        adapter = self._adapter(ref.provider)
        last: Transient | None = None
        tries = self.max_retries + 1
        for number in range(tries):
            try:
                async with asyncio.timeout(self.timeout):
                    return await adapter.call(ref.name, prompt, schema, max_output_tokens=limit)
            except (TimedOut, TimeoutError):
                self._count(ref, "timeout")
                raise LLMTimeout(
                    f"the model did not answer within {self.timeout:g} s "
                    f"({ref.provider} {ref.name}; ARBITER_LLM_TIMEOUT)",
                    provider=ref.provider,
                    model=ref.name,
                ) from None
            except LLMRefused:
                self._count(ref, "refused")
                raise
            except Transient as exc:
                self._count(ref, exc.outcome)
                last = exc
                if number + 1 >= tries:
                    break
                delay = exc.retry_after if exc.retry_after is not None else _backoff(number)
                if delay > MAX_RETRY_WAIT:
                    raise RateLimited(
                        f"the model provider is rate-limiting us and asks to wait {delay:.0f} s, "
                        f"longer than {MAX_RETRY_WAIT:.0f} s ({ref.provider}: {exc})",
                        provider=ref.provider,
                        model=ref.name,
                    ) from None
                self._log.warning(
                    "model call failed, retrying",
                    provider=ref.provider,
                    model=ref.name,
                    error=str(exc),
                    retry_in=round(delay, 3),
                    attempt=number + 1,
                )
                await self._sleep(delay)
        assert last is not None
        attempts = f"{tries} attempt{'s' if tries != 1 else ''}"
        if last.outcome == "rate_limited":
            raise RateLimited(
                f"the model provider is rate-limiting us: {ref.provider} answered {last} "
                f"({attempts}; ARBITER_LLM_MAX_RETRIES)",
                provider=ref.provider,
                model=ref.name,
            )
        raise ProviderDown(
            f"the model provider is down: {ref.provider} answered {last} ({attempts})"
            if last.status is not None
            else f"the model provider is down: {last} ({attempts})",
            provider=ref.provider,
            model=ref.name,
        )

    def _billed(
        self, raw: RawAnswer, info: ModelInfo, prompt: Prompt, schema: type[BaseModel]
    ) -> tuple[int, int]:
        counter = self.counter(str(info.ref))
        if raw.usage_reported:
            if not counter.exact and raw.input_tokens > 0:
                self._calibrate(info.ref, counter, raw.input_tokens, prompt, schema)
            return raw.input_tokens, raw.output_tokens
        # Some compatible servers report no usage: count it rather than call it free.
        text = raw.payload if isinstance(raw.payload, str) else json.dumps(raw.payload)
        estimate = self.estimate_input_tokens(prompt, schema, model=str(info.ref))
        return estimate, counter.count(text or "")

    def _calibrate(
        self,
        ref: ModelRef,
        counter: TokenCounter,
        reported: int,
        prompt: Prompt,
        schema: type[BaseModel],
    ) -> None:
        """Learn the provider's tokens per encoding token from the usage it reported."""
        payload = schema_payload(ref.provider, schema)
        raw = counter.request_raw(prompt.system_text, prompt.user, payload)
        if raw <= 0:
            return
        estimated = counter.request(prompt.system_text, prompt.user, payload)
        seen = max(reported - counter.framing, 1) / raw
        self._ratios[ref] = max(self._ratios.get(ref, 0.0), seen)
        self._log.debug(
            "token estimate checked",
            provider=ref.provider,
            model=ref.name,
            estimated=estimated,
            reported=reported,
            error=round(estimated / reported - 1, 4),
            ratio=round(seen, 4),
        )

    def _count(self, ref: ModelRef, outcome: str) -> None:
        self.metrics.llm_requests.labels(
            provider=ref.provider, model=ref.name, outcome=outcome
        ).inc()


def make_llm(settings: Settings, store: Store | None, metrics: Metrics) -> LLM:
    """The LLM client for these settings; `store` backs the response cache (None: memory only).

    Raises config.prices.PriceError (a ValueError) when ARBITER_MODEL_PRICES cannot be used.
    """
    return LLM(settings, store, metrics)


def _parse(raw: RawAnswer, schema: type[T], limit: int) -> tuple[T | None, str]:
    if raw.refusal:
        return None, f"the model refused: {raw.refusal[:200]}"
    if raw.payload is None or raw.payload == "":
        if raw.truncated:
            return None, f"the answer was cut off at {limit} output tokens"
        return None, raw.note or "the answer was empty"
    try:
        if isinstance(raw.payload, str):
            return schema.model_validate_json(raw.payload), ""
        return schema.model_validate(raw.payload), ""
    except ValidationError as exc:
        if raw.truncated:
            return None, f"the answer was cut off at {limit} output tokens"
        return None, _explain(exc)


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "answer"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def _backoff(number: int) -> float:
    base: float = min(BACKOFF_FIRST * 2**number, BACKOFF_MAX)
    return base * (0.75 + 0.25 * random.random())  # noqa: S311  (jitter, not cryptography)
