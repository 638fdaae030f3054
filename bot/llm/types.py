"""What goes into a model call and what comes out of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

Provider = Literal["openai", "anthropic"]
PROVIDERS: tuple[Provider, ...] = ("openai", "anthropic")

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Prompt:
    """A system message (instructions) and a user message (the data, delimited).

    `system` should be the same text on every call of a kind, so that the providers' prompt
    caching applies to it (and to the answer's schema before it); `instructions` is trusted
    text sent after it in the system role that may vary (a repository's review instructions).
    `cache_prefix` asks Anthropic to cache the schema and `system` (a cache write costs 25 %
    more once, each read 90 % less): worth it when the same prefix is sent again soon.
    """

    system: str
    user: str
    instructions: str = ""
    cache_prefix: bool = False

    @property
    def system_text(self) -> str:
        """The whole system message as one text."""
        return f"{self.system}\n\n{self.instructions}" if self.instructions else self.system


@dataclass(frozen=True)
class ModelRef:
    """A model at a provider: `claude-*` is Anthropic, anything else OpenAI (or compatible),
    unless the name says `provider:model`."""

    provider: Provider
    name: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.name}"


@dataclass(frozen=True)
class Completion(Generic[T]):
    """A parsed answer and what it cost.

    Tokens and cost are what this call was billed, malformed attempts included; an answer from
    the cache was billed nothing (`cached`). `priced` is False when the model has no price, in
    which case `cost_usd` is 0.0 and means "unknown".
    """

    value: T
    provider: Provider
    model: str
    input_tokens: int  # all of them, cache reads and writes included
    output_tokens: int
    cost_usd: float
    cached: bool = False
    priced: bool = True
    attempts: int = 1
    cache_read_tokens: int = 0  # input read from the provider's prompt cache (cheaper)
    cache_write_tokens: int = 0  # input written to it (Anthropic: dearer, once)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
