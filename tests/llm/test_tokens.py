"""Token counts: OpenAI's encodings from the bpe-openai wheel, per model, and whole requests
counted as the providers bill them (checked against the fakes, which count by the published
formulas, through the real SDKs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.findings import ReviewAnswer
from bot.llm import ModelRef, Prompt
from bot.llm.tokens import ANTHROPIC_FIRST_RATIO, CL100K, O200K, counter_for, encoding
from tests.conftest import ROOT
from tests.llm.conftest import Via


def test_the_encodings_are_openais_own_and_load_offline() -> None:
    # Token ids of the real vocabularies: a wrong or stand-in encoding fails here.
    assert encoding(O200K).encode_ordinary("hello world") == [24912, 2375]
    assert encoding(CL100K).encode_ordinary("hello world") == [15339, 1917]
    # Special-token text in a diff is text, as the API treats it.
    assert len(encoding(O200K).encode_ordinary("<|endoftext|>")) > 1


# Texts a review counts: code, prose in other scripts, emoji and combining marks, runs of
# whitespace, special-token text, and a lone surrogate (text that is not valid Unicode).
VARIED = [
    "def handler(event):\n    return event['body']\n" * 50,
    "    \t\n\n   \r\n" * 30 + "x",
    "日本語のテキストと中文文本，한국어 텍스트. Ünïcödé façade — naïve café.",
    "🙂👍🏽 family: 👨‍👩‍👧‍👦, flags: 🇫🇷🇯🇵, e\u0301 a\u0308",
    "<|endoftext|> <|fim_prefix|> <|endofprompt|>",
    "a\ud800b \udfff",
    "".join(chr(c) for c in range(32, 0x3000, 7)),
]


@pytest.mark.parametrize("name", [O200K, CL100K])
def test_counts_are_the_packages_own(name: str) -> None:
    """The Rust tokenizer counted alone gives what bpe-openai's tiktoken-compatible encoder
    gives, text for text (the package's encoder, loaded here, is the reference)."""
    import warnings

    from bot.llm import tokens

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai  # type: ignore[import-untyped]

        reference = bpe_openai.get_encoding(name)
    ours = encoding(name)
    for text in VARIED:
        expected = reference.encode_ordinary(text)
        assert ours.encode_ordinary(text) == expected, text[:40]
        assert ours.count(text) == len(expected) == tokens._raw(name, text), text[:40]


def test_counting_loads_the_tokenizer_without_the_package_s_tables(tmp_path: Path) -> None:
    """Counting in a fresh process loads bpe-openai's compiled tokenizer and not its Python
    package, whose import builds every encoding's rank tables (some 75 MiB for good)."""
    script = (
        "import sys\n"
        "from bot.llm.tokens import encoding\n"
        "assert encoding('o200k_base').count('hello world') == 2\n"
        "print(sorted(m for m in sys.modules if m.startswith('bpe_openai')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.stdout.split() == ["['bpe_openai._bindings']"]


def test_a_wheel_whose_tokenizer_cannot_be_loaded_alone_is_counted_by_its_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another layout of the bpe-openai wheel costs memory, not counts: the package's own
    encoder counts then."""
    from bot.llm import tokens

    def moved() -> None:
        raise ImportError("bpe-openai has no bpe_openai._bindings module")

    monkeypatch.setattr(tokens, "_bindings", moved)
    monkeypatch.setattr(tokens, "_ENCODINGS", {})
    fallback = tokens.encoding(O200K)
    assert not isinstance(fallback, tokens.RustEncoding)
    assert fallback.encode_ordinary("hello world") == [24912, 2375]
    assert tokens._raw(O200K, VARIED[0]) == len(fallback.encode_ordinary(VARIED[0]))


@pytest.mark.parametrize(
    ("model", "name", "exact"),
    [
        ("gpt-4o", O200K, True),
        ("gpt-4o-2024-08-06", O200K, True),
        ("gpt-4.1-mini", O200K, True),
        ("gpt-5.4", O200K, True),
        ("o3", O200K, True),
        ("o4-mini", O200K, True),
        ("gpt-4", CL100K, True),
        ("gpt-4-turbo", CL100K, True),
        ("gpt-3.5-turbo", CL100K, True),
        ("llama3.1:8b", O200K, False),  # a compatible server: o200k as the estimate
    ],
)
def test_each_openai_model_is_counted_with_its_encoding(model: str, name: str, exact: bool) -> None:
    counter = counter_for(ModelRef("openai", model))
    assert (counter.encoding, counter.exact, counter.ratio) == (name, exact, 1.0)


def test_claude_is_counted_by_a_ratio_until_usage_calibrates_it() -> None:
    counter = counter_for(ModelRef("anthropic", "claude-sonnet-4-6"))
    assert not counter.exact and counter.ratio == ANTHROPIC_FIRST_RATIO
    text = "def handler(event):\n    return event['body']\n" * 20
    assert counter.count(text) == -(-counter.raw(text) * 3 // 2)
    tuned = counter.calibrated(1.2)
    assert tuned.ratio == pytest.approx(1.26) and tuned.count(text) < counter.count(text)
    exact = counter_for(ModelRef("openai", "gpt-4o"))
    assert exact.calibrated(2.0) is exact  # an exact count is never scaled


LONG = Prompt(
    system="You review code. Report problems as findings.",
    user="=== app.py (added)\n" + "".join(f"{n}+value_{n} = compute({n})\n" for n in range(1, 80)),
    instructions="Instructions from the repository: prefer small functions.",
)


@pytest.mark.parametrize("via", ["openai"], indirect=True)
async def test_openai_requests_are_counted_exactly_as_billed(via: Via) -> None:
    llm = via.llm()
    counted = llm.estimate_input_tokens(LONG, ReviewAnswer)
    await llm.complete(LONG, ReviewAnswer)
    (request,) = via.fake.requests
    assert counted == request.input_tokens  # to the token: system, user, framing and schema


@pytest.mark.parametrize("via", ["anthropic"], indirect=True)
async def test_claude_counts_start_high_and_calibrate_on_reported_usage(via: Via) -> None:
    llm = via.llm()
    first = llm.estimate_input_tokens(LONG, ReviewAnswer)
    await llm.complete(LONG, ReviewAnswer)
    reported = via.fake.requests[0].input_tokens
    assert first >= reported  # booked high before any usage is known
    other = Prompt(LONG.system, LONG.user.replace("compute", "evaluate_slowly"))
    calibrated = llm.estimate_input_tokens(other, ReviewAnswer)
    await llm.complete(other, ReviewAnswer)
    actual = via.fake.requests[1].input_tokens
    # Still not under the bill, and now within 10 % of it.
    assert actual <= calibrated <= actual * 1.10


def test_a_text_over_the_encoders_limit_is_counted_in_pieces() -> None:
    counter = counter_for(ModelRef("openai", "gpt-4o"))
    line = "value = compute(a, b) + other_function(c)\n"
    text = line * 30_000  # ~300,000 tokens: more than the encoder takes at once
    assert counter.count(text) == counter.count(line * 1000) * 30


async def test_a_repeated_prefix_is_billed_at_the_cache_price(via: Via) -> None:
    from config.prices import load_prices

    rules = "Review carefully. " * 400  # a fixed system prompt long enough to be cached
    llm = via.llm()
    first = await llm.complete(Prompt(rules, "one", cache_prefix=True), ReviewAnswer)
    second = await llm.complete(Prompt(rules, "two", cache_prefix=True), ReviewAnswer)
    price = load_prices().lookup(via.provider, via.model)
    assert price is not None
    assert second.cache_read_tokens > 1000 and first.cache_read_tokens == 0
    if via.provider == "anthropic":
        assert first.cache_write_tokens == second.cache_read_tokens  # written once, then read
    assert second.cost_usd == pytest.approx(
        price.cost(
            second.input_tokens,
            second.output_tokens,
            cache_read_tokens=second.cache_read_tokens,
        )
    )
    assert second.cost_usd < price.cost(second.input_tokens, second.output_tokens)


async def test_different_instructions_are_a_different_question_for_the_cache(via: Via) -> None:
    llm = via.llm()
    await llm.complete(Prompt("rules", "diff", instructions="Be strict."), ReviewAnswer)
    again = await llm.complete(Prompt("rules", "diff", instructions="Be lenient."), ReviewAnswer)
    assert not again.cached and len(via.fake.requests) == 2
    assert "Be lenient." in via.fake.requests[1].system


def test_an_encoding_asked_for_by_many_threads_at_once_is_loaded_once() -> None:
    """Ten reviews starting together count tokens in their worker threads: one load (about
    60 MiB), not ten."""
    import threading

    from bot.llm import tokens

    tokens._ENCODINGS.pop("o200k_base", None)
    loads: list[str] = []
    real_load = tokens._load

    def counted(name: str) -> tokens.Encoding:
        loads.append(name)
        return real_load(name)

    tokens._load = counted
    try:
        start = threading.Barrier(10)
        found: list[object] = []

        def ask() -> None:
            start.wait()
            found.append(tokens.encoding("o200k_base"))

        threads = [threading.Thread(target=ask) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        tokens._load = real_load
    assert loads == ["o200k_base"]
    assert len({id(enc) for enc in found}) == 1


def test_a_request_s_fixed_texts_are_remembered_only_up_to_a_size() -> None:
    """The system prompt and schema are counted once and kept, but a repository's instructions
    can make the system prompt large: such a text is counted every time, not kept, so the
    remembered texts stay within 128 × REMEMBERED_CHARS characters."""
    from bot.llm import tokens

    counter = counter_for(ModelRef("openai", "gpt-4o"))
    schema = {"type": "object"}
    small, large = "be brief\n" * 10, "watch the locks\n" * (tokens.REMEMBERED_CHARS // 16 + 1)
    tokens._repeated.cache_clear()
    first = counter.request(small, "diff", schema)
    assert counter.request(small, "diff", schema) == first
    assert tokens._repeated.cache_info().hits >= 2  # the system prompt and the schema
    kept = tokens._repeated.cache_info().currsize
    exact = counter.framing + sum(counter.raw(t) for t in (large, "diff", '{"type":"object"}'))
    assert counter.request(large, "diff", schema) == exact
    assert tokens._repeated.cache_info().currsize == kept  # the large one was not kept
