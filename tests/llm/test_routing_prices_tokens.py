"""Model routing, the price table and the token estimate: the pure parts of the LLM layer."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bot.llm import ModelRef, estimate_request_tokens, estimate_tokens, resolve_model
from config.prices import ModelPrice, PriceError, load_prices, parse_overrides
from tests.fakes.openai import count_tokens


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-4o", ModelRef("openai", "gpt-4o")),
        ("claude-sonnet-4-6", ModelRef("anthropic", "claude-sonnet-4-6")),
        ("Claude-Opus-5", ModelRef("anthropic", "Claude-Opus-5")),
        ("anthropic:my-claude-proxy", ModelRef("anthropic", "my-claude-proxy")),
        ("openai:claude-via-gateway", ModelRef("openai", "claude-via-gateway")),
        ("llama3.1:8b", ModelRef("openai", "llama3.1:8b")),  # Ollama's tag, not a provider
        ("openai:llama3.1:8b", ModelRef("openai", "llama3.1:8b")),
    ],
)
def test_routing(name: str, expected: ModelRef) -> None:
    assert resolve_model(name) == expected


def test_routing_refuses_empty_names() -> None:
    with pytest.raises(ValueError, match="ARBITER_DEFAULT_MODEL"):
        resolve_model(" ")
    with pytest.raises(ValueError, match="names a provider but no model"):
        resolve_model("openai:")


def test_the_table_prices_current_models() -> None:
    table = load_prices()
    gpt4o = table.lookup("openai", "gpt-4o")
    assert gpt4o == ModelPrice(2.5, 10.0, 128_000, cached_input_per_mtok=1.25)
    assert gpt4o.cost(1_000_000, 100_000) == pytest.approx(3.5)
    # Input read from OpenAI's prompt cache is billed at the cached price.
    assert gpt4o.cost(1_000_000, 100_000, cache_read_tokens=400_000) == pytest.approx(3.0)
    sonnet = table.lookup("anthropic", "claude-sonnet-4-5")
    assert sonnet is not None
    # Anthropic: a cache write costs 1.25 x input, a read 0.1 x.
    assert sonnet.cost(1_000_000, 0, cache_write_tokens=1_000_000) == pytest.approx(3.75)
    assert sonnet.cost(1_000_000, 0, cache_read_tokens=1_000_000) == pytest.approx(0.30)
    assert sonnet.cost(
        1_000_000, 0, cache_read_tokens=500_000, cache_write_tokens=200_000
    ) == pytest.approx((300_000 * 3 + 500_000 * 0.3 + 200_000 * 3.75) / 1e6)
    for provider, model in [
        ("openai", "gpt-5.5"),
        ("openai", "gpt-4.1-mini"),
        ("anthropic", "claude-sonnet-4-6"),
        ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-opus-5"),
    ]:
        price = table.lookup(provider, model)
        assert price is not None and price.output_per_mtok > price.input_per_mtok > 0
    # Dated snapshots are priced as their model.
    assert table.lookup("openai", "gpt-4o-2024-08-06") == gpt4o
    assert table.lookup("anthropic", "claude-haiku-4-5-20251001") == table.lookup(
        "anthropic", "claude-haiku-4-5"
    )
    assert table.lookup("openai", "llama3.1:8b") is None
    assert table.lookup("openai", "gpt-4o-mini") != gpt4o  # no prefix guessing


def test_operator_overrides(tmp_path: Path) -> None:
    inline = load_prices(
        '{"gpt-4o": {"input": 1, "output": 2}, "openai:llama3": {"input": 0, '
        '"output": 0, "context": 8192}}'
    )
    assert inline.lookup("openai", "gpt-4o") == ModelPrice(1, 2)
    assert inline.lookup("openai", "llama3") == ModelPrice(0, 0, 8192)
    assert inline.lookup("anthropic", "llama3") is None  # provider-qualified
    assert inline.lookup("openai", "gpt-4.1") is not None  # the rest of the table stays
    path = tmp_path / "prices.yml"
    path.write_text("house-model: {input: 0.3, output: 0.9}\n")
    assert load_prices(str(path)).lookup("openai", "house-model") == ModelPrice(0.3, 0.9)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/no/such/file.yml", "ARBITER_MODEL_PRICES: cannot read /no/such/file.yml"),
        ('{"m": {"input": 1}}', "the price of 'm' is invalid (output: Field required)"),
        ('{"m": {"input": -1, "output": 1}}', "input: Input should be greater than or equal to 0"),
        ('{"m": {"input": 1, "output": 1, "cache": 2}}', "cache: Extra inputs are not permitted"),
        ("{not json", "ARBITER_MODEL_PRICES: inline JSON is not valid"),
        ('["gpt-4o"]', "expected a mapping of model name"),
    ],
)
def test_bad_overrides_say_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(PriceError, match=re.escape(message)):
        parse_overrides(value)


@pytest.mark.parametrize(
    "text",
    [
        "def f(x):\n    return x + 1\n",
        "    " * 50 + "x",
        "é" * 100 + "漢字" * 50,
        "a" * 10_000,
        "",
    ],
)
def test_the_bytes_estimate_is_only_an_estimate(text: str) -> None:
    # Where no tokenizer exists: ceil(UTF-8 bytes / 3). It is no upper bound on a real count
    # (short code lines tokenize worse), which is why counts are exact wherever they can be.
    estimate = estimate_tokens(text)
    assert estimate == math.ceil(len(text.encode()) / 3)
    assert estimate == 0 or count_tokens(text) > 0


def test_a_request_estimate_counts_messages_and_schema() -> None:
    bare = estimate_request_tokens("s", "u")
    assert estimate_request_tokens("s", "u", schema_text="x" * 300) == bare + 100
    assert estimate_request_tokens("s" * 30, "u") == bare + 10 - 1
