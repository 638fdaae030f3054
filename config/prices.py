"""The price table: US dollars per million input and output tokens, per model.

`load_prices(overrides)` reads `prices.yml` (a resource of this package) and lays the operator's
`ARBITER_MODEL_PRICES` over it (a YAML or JSON file, or inline JSON, in the same shape).
`table.lookup(provider, model)` answers a model's price, or None when nobody priced it: the LLM
client then refuses to run that model while a cost cap is set, with `missing_price_message`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PRICES_FILE = resources.files("config") / "prices.yml"
OVERRIDE_VARIABLE = "ARBITER_MODEL_PRICES"
DEFAULT_CONTEXT_TOKENS = 128_000
MILLION = 1_000_000

# Dated snapshots are priced like their undated name: gpt-4o-2024-08-06, claude-x-20250929.
_SNAPSHOT_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class PriceError(ValueError):
    """The price table or the operator's overrides cannot be read; the message says why."""


@dataclass(frozen=True)
class ModelPrice:
    input_per_mtok: float
    output_per_mtok: float
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    cached_input_per_mtok: float | None = None  # input read from the prompt cache; None: input
    cache_write_per_mtok: float | None = None  # input written to the prompt cache; None: input

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """USD for that many tokens; `input_tokens` counts all input, of which
        `cache_read_tokens` and `cache_write_tokens` are billed at the cache's prices."""
        read = min(cache_read_tokens, input_tokens)
        written = min(cache_write_tokens, input_tokens - read)
        plain = input_tokens - read - written
        read_price = (
            self.input_per_mtok
            if self.cached_input_per_mtok is None
            else (self.cached_input_per_mtok)
        )
        write_price = (
            self.input_per_mtok
            if self.cache_write_per_mtok is None
            else (self.cache_write_per_mtok)
        )
        return (
            plain * self.input_per_mtok
            + read * read_price
            + written * write_price
            + output_tokens * self.output_per_mtok
        ) / MILLION


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    context: int = Field(DEFAULT_CONTEXT_TOKENS, gt=0)
    cached_input: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)

    def price(self) -> ModelPrice:
        return ModelPrice(
            self.input, self.output, self.context, self.cached_input, self.cache_write
        )


@dataclass(frozen=True)
class PriceTable:
    entries: Mapping[str, ModelPrice]

    def lookup(self, provider: str, model: str) -> ModelPrice | None:
        """The price of `model` at `provider`: "provider:model" first, then the plain name,
        then the same for the undated name of a dated snapshot."""
        names = [model]
        undated = _SNAPSHOT_SUFFIX.sub("", model)
        if undated != model:
            names.append(undated)
        for name in names:
            for key in (f"{provider}:{name}", name):
                price = self.entries.get(key)
                if price is not None:
                    return price
        return None

    def merged(self, overrides: Mapping[str, ModelPrice]) -> PriceTable:
        return PriceTable({**self.entries, **overrides})


def load_prices(overrides: str | None = None) -> PriceTable:
    """The shipped table with the operator's overrides (ARBITER_MODEL_PRICES) laid over it."""
    table = _builtin_table()
    if overrides is None or not overrides.strip():
        return table
    return table.merged(parse_overrides(overrides))


def parse_overrides(value: str) -> dict[str, ModelPrice]:
    """Inline JSON (`{"model": {"input": 1.0, "output": 2.0}}`) or the path of a YAML/JSON
    file of that shape; PriceError, naming ARBITER_MODEL_PRICES, when it cannot be used."""
    text = value.strip()
    source = "inline JSON"
    if not text.startswith(("{", "[")):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceError(
                f"{OVERRIDE_VARIABLE}: cannot read {path}: {exc.strerror or exc}; it accepts "
                'a YAML or JSON file, or inline JSON like {"my-model": {"input": 0.5, '
                '"output": 1.5}} (USD per million tokens)'
            ) from None
        source = str(path)
    try:
        data = yaml.safe_load(text) if source != "inline JSON" else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise PriceError(f"{OVERRIDE_VARIABLE}: {source} is not valid: {exc}") from None
    return _entries(data, source=f"{OVERRIDE_VARIABLE} ({source})")


def missing_price_message(provider: str, model: str) -> str:
    return (
        f"no price is known for the model {model!r} ({provider}), and a cost cap is set "
        f"(ARBITER_MAX_COST_PER_REVIEW_USD), so it cannot be used: add its price in USD per "
        f"million tokens to {OVERRIDE_VARIABLE}, e.g. "
        f'{OVERRIDE_VARIABLE}=\'{{"{provider}:{model}": {{"input": 1.0, "output": 4.0}}}}\', '
        "or set ARBITER_MAX_COST_PER_REVIEW_USD=0 to run without a cost cap"
    )


@functools.cache
def _builtin_table() -> PriceTable:
    data = yaml.safe_load(PRICES_FILE.read_text(encoding="utf-8"))
    return PriceTable(_entries(data, source=str(PRICES_FILE)))


def _entries(data: Any, *, source: str) -> dict[str, ModelPrice]:
    if not isinstance(data, dict):
        raise PriceError(
            f"{source}: expected a mapping of model name to "
            '{"input": USD per million tokens, "output": USD per million tokens}'
        )
    prices: dict[str, ModelPrice] = {}
    for name, entry in data.items():
        try:
            prices[str(name)] = _Entry.model_validate(entry).price()
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
                for err in exc.errors()
            )
            raise PriceError(
                f"{source}: the price of {name!r} is invalid ({problems}); each entry takes "
                "input and output (USD per million tokens, zero or more) and optionally "
                "context (tokens), cached_input and cache_write (USD per million tokens)"
            ) from None
    return prices
