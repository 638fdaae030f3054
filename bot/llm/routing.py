"""Which provider serves a model name."""

from __future__ import annotations

from bot.llm.types import PROVIDERS, ModelRef, Provider


def resolve_model(name: str) -> ModelRef:
    """`anthropic:x` / `openai:x` are explicit; otherwise `claude-*` goes to Anthropic and any
    other name to OpenAI (or the OpenAI-compatible server at the configured base URL).

    A colon that follows no known provider is part of the model name (Ollama's `llama3.1:8b`).
    """
    text = name.strip()
    if not text:
        raise ValueError("the model name is empty: set ARBITER_DEFAULT_MODEL, e.g. gpt-4o")
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in PROVIDERS:
        if not rest.strip():
            raise ValueError(f"{name!r} names a provider but no model, e.g. {prefix}:MODEL")
        provider: Provider = "anthropic" if prefix.lower() == "anthropic" else "openai"
        return ModelRef(provider, rest.strip())
    if text.lower().startswith("claude-"):
        return ModelRef("anthropic", text)
    return ModelRef("openai", text)
