"""Token counts: exact for OpenAI's models, calibrated for Anthropic's, estimated where no
tokenizer exists.

OpenAI's encodings ship inside the `bpe-openai` wheel (nothing is downloaded at run time):
`o200k_base` for gpt-4o, gpt-4.1, gpt-4.5, the gpt-5 family and the o-series, `cl100k_base`
for gpt-4 and gpt-3.5. Counts come from the wheel's Rust tokenizer alone (`_bindings`): its
Python package, on import, builds every encoding's rank tables as Python dictionaries for
its tiktoken-compatible API (about 75 MiB more, kept for the life of the process, and half a
second of the first review's time), which counting does not use. Any other model name (a
local or compatible server: vLLM, Ollama) is counted with `o200k_base` as an estimate.
Anthropic publishes no tokenizer: a Claude count is the `o200k_base` count times a ratio, set
high at first and then corrected by the usage Anthropic reports (`TokenCounter.calibrated`).
`estimate_tokens` (UTF-8 bytes / 3) is only for text no tokenizer counts.

A request is counted as the provider bills it: each message's content plus its framing, the
reply's priming, and the answer's schema (OpenAI's `response_format`, Anthropic's forced tool
and the tool-use system prompt that comes with it). See docs/costs.md for the figures.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import json
import math
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

from bot.llm.types import ModelRef

BYTES_PER_TOKEN = 3
PIECE_CHARS = 100_000  # counted at once: under the package encoder's 200,000 tokens
MESSAGE_OVERHEAD_TOKENS = 8  # the estimate's framing of a message (no tokenizer)
REQUEST_OVERHEAD_TOKENS = 16  # the estimate's framing of a request (no tokenizer)

O200K, CL100K = "o200k_base", "cl100k_base"
# Chat Completions framing (OpenAI's published formula): every message costs 3 tokens around
# its content, and every answer is primed with 3 more.
OPENAI_MESSAGE_TOKENS = 3
OPENAI_REPLY_TOKENS = 3
# Anthropic: the system prompt added for tool use with tool_choice "tool" (Claude 4 models,
# per Anthropic's pricing page), and the framing of each message.
ANTHROPIC_TOOL_PROMPT_TOKENS = 313
ANTHROPIC_MESSAGE_TOKENS = 7
# Claude tokens per o200k token before any usage was seen: Claude's tokenizer is reported to
# need 15-30 % more tokens than o200k on text and more on code; start high, then calibrate.
ANTHROPIC_FIRST_RATIO = 1.5
CALIBRATION_MARGIN = 1.05  # over the highest ratio seen, for the next chunk's different text

_O200K_PREFIXES = (
    *("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss", "chatgpt-4o"),
    *("o1", "o3", "o4", "codex-"),
)
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-")


class Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...

    def count(self, text: str) -> int: ...


class _Tokenizer(Protocol):  # bpe-openai's compiled tokenizer (its `_bindings.pyi`)
    def encode(self, text: str) -> list[int]: ...

    def count(self, text: str) -> int: ...


class RustEncoding:
    """An OpenAI encoding as bpe-openai's Rust tokenizer counts it, as its Python API would
    (text that is not valid Unicode, a lone surrogate, is counted as that API counts it)."""

    def __init__(self, name: str, tokenizer: _Tokenizer) -> None:
        self.name = name
        self._tokenizer = tokenizer

    def encode_ordinary(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(_utf8(text)))

    def count(self, text: str) -> int:
        return self._tokenizer.count(_utf8(text))


class _PackageEncoding:
    """The package's own encoding, where its Rust tokenizer cannot be loaded by itself."""

    def __init__(self, encoding: Any) -> None:
        self._encoding = encoding

    def encode_ordinary(self, text: str) -> list[int]:
        return cast(list[int], self._encoding.encode_ordinary(text))

    def count(self, text: str) -> int:
        return len(self.encode_ordinary(text))


def _utf8(text: str) -> str:
    """`text`, with what UTF-8 cannot hold (lone surrogates) replaced, as bpe-openai does."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


_ENCODINGS: dict[str, Encoding] = {}
BINDINGS = "bpe_openai._bindings"
_LOADING = threading.Lock()


def encoding(name: str) -> Encoding:
    """An OpenAI encoding, loaded once from the files inside the bpe-openai wheel, however
    many reviews ask for it at once (from their worker threads): the others wait for it."""
    found = _ENCODINGS.get(name)
    if found is None:
        with _LOADING:
            found = _ENCODINGS.get(name)
            if found is None:
                found = _ENCODINGS[name] = _load(name)
    return found


def _load(name: str) -> Encoding:
    try:
        enc: Encoding = RustEncoding(name, _bindings().tokenizer_for_encoding(name))
    except (ImportError, AttributeError, OSError) as exc:  # another layout of the wheel
        from bot.logs import get_logger

        get_logger(component="tokens").warning(
            "bpe-openai's tokenizer could not be loaded by itself; loading its package",
            error=str(exc),
        )
        with warnings.catch_warnings():  # its loader uses a deprecated importlib.resources call
            warnings.simplefilter("ignore", DeprecationWarning)
            import bpe_openai  # type: ignore[import-untyped]

            enc = _PackageEncoding(bpe_openai.get_encoding(name))
    enc.count("warm up")  # the ranks load on first use
    return enc


def _bindings() -> Any:
    """bpe-openai's compiled module, loaded without its package (whose import builds the
    tables described above); the package, if imported later, uses this same module."""
    loaded = sys.modules.get(BINDINGS)
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("bpe_openai")  # found, not imported
    if package is None or not package.submodule_search_locations:
        raise ImportError("the bpe-openai package is not installed")
    finder = importlib.machinery.FileFinder(
        next(iter(package.submodule_search_locations)),
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    )
    spec = finder.find_spec(BINDINGS)
    if spec is None or spec.loader is None:
        raise ImportError(f"bpe-openai has no {BINDINGS} module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sys.modules.setdefault(BINDINGS, module)


def encoding_for(ref: ModelRef) -> tuple[str, bool]:
    """The encoding that counts `ref`'s tokens, and whether its count is exact."""
    name = ref.name.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" on a gateway
    if ref.provider == "openai":
        if name.startswith(_O200K_PREFIXES):
            return O200K, True
        if name.startswith(_CL100K_PREFIXES):
            return CL100K, True
    return O200K, False


@dataclass(frozen=True)
class TokenCounter:
    """Counts text and whole requests in one model's tokens.

    `exact` is True when the count is the provider's own (OpenAI's models); otherwise it is
    the encoding's count times `ratio` (Anthropic), or the encoding's count as an estimate
    (any other model).
    """

    provider: str
    encoding: str
    exact: bool
    ratio: float = 1.0

    def count(self, text: str) -> int:
        """Tokens in `text` (for a ratio, rounded up)."""
        return self._scaled(self.raw(text))

    def raw(self, text: str) -> int:
        """Tokens in `text` by the encoding alone, without the ratio."""
        return _raw(self.encoding, text)

    @property
    def framing(self) -> int:
        """The tokens a request of two messages and a schema costs besides their text."""
        if self.provider == "anthropic":
            return ANTHROPIC_TOOL_PROMPT_TOKENS + 2 * ANTHROPIC_MESSAGE_TOKENS
        return 2 * OPENAI_MESSAGE_TOKENS + OPENAI_REPLY_TOKENS

    def request(self, system: str, user: str, schema: Mapping[str, Any]) -> int:
        """Input tokens of a request with these messages, answering in `schema` (the
        response_format or tool object exactly as sent), as the provider bills them."""
        return self.framing + sum(self._scaled(n) for n in self._texts(system, user, schema))

    def request_raw(self, system: str, user: str, schema: Mapping[str, Any]) -> int:
        """The encoding's own count of a request's text (no framing, no ratio): what a
        provider's reported usage is calibrated against."""
        return sum(self._texts(system, user, schema))

    def _texts(self, system: str, user: str, schema: Mapping[str, Any]) -> tuple[int, int, int]:
        """The encoding's count of each text of a request: the system prompt and the schema
        remembered (`_remembered`), the user's message counted."""
        name = self.encoding
        return _remembered(name, system), _raw(name, user), _remembered(name, _json(schema))

    def _scaled(self, raw: int) -> int:
        return raw if self.ratio == 1.0 else math.ceil(raw * self.ratio)

    def calibrated(self, ratio_seen: float) -> TokenCounter:
        """This counter after a provider reported `ratio_seen` of its tokens per encoding
        token: the highest seen, plus a margin. An exact counter needs no calibration."""
        if self.exact or ratio_seen <= 0:
            return self
        return replace(self, ratio=ratio_seen * CALIBRATION_MARGIN)


@functools.cache
def counter_for(ref: ModelRef) -> TokenCounter:
    """The first counter for a model, before any usage was reported."""
    name, exact = encoding_for(ref)
    ratio = ANTHROPIC_FIRST_RATIO if ref.provider == "anthropic" else 1.0
    return TokenCounter(ref.provider, name, exact, ratio)


def estimate_tokens(text: str) -> int:
    """Tokens in `text` where no tokenizer exists, estimated high: ceil(UTF-8 bytes / 3)."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return -(-size // BYTES_PER_TOKEN)


def estimate_request_tokens(*messages: str, schema_text: str = "") -> int:
    """Input tokens of a request carrying these messages and a JSON schema (as text), where
    no tokenizer exists."""
    total = REQUEST_OVERHEAD_TOKENS + estimate_tokens(schema_text)
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + estimate_tokens(message)
    return total


def _raw(name: str, text: str) -> int:
    """Tokens in `text` by the encoding `name`."""
    if not text:
        return 0
    enc = encoding(name)
    if len(text) <= PIECE_CHARS:
        return enc.count(text)
    # The package's encoder refuses over 200,000 tokens at once, and one call holds the GIL
    # for all of its text: count in pieces cut after a newline, where a token never spans the
    # cut (so the sum is the count, or just over).
    total = start = 0
    while start < len(text):
        end = min(start + PIECE_CHARS, len(text))
        if end < len(text):
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut > start else end
        total += enc.count(text[start:end])
        start = end
    return total


# A request's system prompt and answer schema are the same for every chunk of every review
# under one configuration: counted once, then remembered. The default system prompt and the
# schema are about 1,300 characters each; a repository's instructions add up to 10,000, and
# its path instructions up to 50 × 4,000, so only texts up to REMEMBERED_CHARS are kept (the
# cache holds at most 128 × 32,000 characters). The diff, different every time, is counted.
REMEMBERED_CHARS = 32_000
_repeated = functools.lru_cache(maxsize=128)(_raw)


def _remembered(name: str, text: str) -> int:
    return _repeated(name, text) if len(text) <= REMEMBERED_CHARS else _raw(name, text)


def _json(value: Mapping[str, Any]) -> str:
    # As the SDKs put it on the wire: compact, not ASCII-escaped.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
