"""Whether a model can be used as configured, asked of the settings alone (no call is made).

`model_status(settings)` says which provider serves ARBITER_DEFAULT_MODEL, through which base
URL, whether its key is set, and its price; `problem` names what to set when a review would
fail on it. Start-up, `/health/ready` and `arbiter config` report it, so a missing key is
found before the first pull request gets an error status.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from bot.llm.anthropic_messages import OFFICIAL_HOST as ANTHROPIC_HOST
from bot.llm.openai_chat import OFFICIAL_HOST as OPENAI_HOST
from bot.llm.routing import resolve_model
from bot.llm.types import Provider
from config.prices import ModelPrice, PriceError, load_prices, missing_price_message
from config.settings import Settings, mask_url


@dataclass(frozen=True)
class _ProviderFacts:
    key_variable: str
    base_variable: str
    sdk_base_variable: str  # the SDK's own variable, read when the setting is not set
    default_base_url: str
    official_host: str
    without_key: str  # how to run without a key


_PROVIDERS: dict[Provider, _ProviderFacts] = {
    "openai": _ProviderFacts(
        "OPENAI_API_KEY",
        "ARBITER_OPENAI_BASE_URL",
        "OPENAI_BASE_URL",
        f"https://{OPENAI_HOST}/v1",
        OPENAI_HOST,
        "ARBITER_OPENAI_BASE_URL for an OpenAI-compatible server (vLLM, Ollama, LM Studio)",
    ),
    "anthropic": _ProviderFacts(
        "ANTHROPIC_API_KEY",
        "ARBITER_ANTHROPIC_BASE_URL",
        "ANTHROPIC_BASE_URL",
        f"https://{ANTHROPIC_HOST}",
        ANTHROPIC_HOST,
        "ARBITER_ANTHROPIC_BASE_URL for a gateway that needs none",
    ),
}


@dataclass(frozen=True)
class ModelStatus:
    model: str  # as configured, e.g. "gpt-4o" or "openai:llama3.1:8b"
    provider: Provider
    name: str  # the model's name at the provider
    key_variable: str
    key_set: bool
    base_url: str  # where calls go, credentials masked
    base_url_source: str  # the variable that set it, or "default"
    price: ModelPrice | None
    problem: str | None  # what to set before a review can use this model; None: usable

    @property
    def configured(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        """One line for `arbiter config`."""
        key = f"{self.key_variable}=***" if self.key_set else f"{self.key_variable} not set"
        base = self.base_url
        if self.base_url_source != "default":
            base += f" (from {self.base_url_source})"
        price = (
            f"${self.price.input_per_mtok:g} in / ${self.price.output_per_mtok:g} out per "
            "million tokens"
            if self.price
            else "no price"
        )
        head = f"model: {self.model} ({self.provider} {self.name}), {key}, {base}, {price}"
        return head if self.problem is None else f"{head}\n  NOT CONFIGURED: {self.problem}"

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "provider": self.provider,
            "name": self.name,
            "key": self.key_variable,
            "key_set": self.key_set,
            "base_url": self.base_url,
            "base_url_source": self.base_url_source,
            "price_per_million_tokens": (
                {"input": self.price.input_per_mtok, "output": self.price.output_per_mtok}
                if self.price
                else None
            ),
            "configured": self.configured,
            "problem": self.problem,
        }


def model_status(
    settings: Settings, model: str | None = None, *, environ: Mapping[str, str] | None = None
) -> ModelStatus:
    """Whether `model` (default: ARBITER_DEFAULT_MODEL) can be used with these settings."""
    env = os.environ if environ is None else environ
    configured = model or settings.default_model
    ref = resolve_model(configured)
    facts = _PROVIDERS[ref.provider]
    secret = settings.openai_api_key if ref.provider == "openai" else settings.anthropic_api_key
    key_set = secret is not None and bool(secret.get_secret_value())
    setting = settings.openai_base_url if ref.provider == "openai" else settings.anthropic_base_url
    if setting:
        base_url, source = setting, facts.base_variable
    elif env.get(facts.sdk_base_variable):
        base_url, source = env[facts.sdk_base_variable], facts.sdk_base_variable
    else:
        base_url, source = facts.default_base_url, "default"
    official = (urlsplit(base_url).hostname or "").lower() == facts.official_host
    problems: list[str] = []
    if official and not key_set:
        problems.append(
            f"no key for {ref.provider} ({ref.name}): set {facts.key_variable}, or "
            f"{facts.without_key}"
        )
    price: ModelPrice | None = None
    try:
        price = load_prices(settings.model_prices).lookup(ref.provider, ref.name)
    except PriceError as exc:
        problems.append(str(exc))
    else:
        if price is None and settings.max_cost_per_review_usd > 0:
            problems.append(missing_price_message(ref.provider, ref.name))
    return ModelStatus(
        model=configured,
        provider=ref.provider,
        name=ref.name,
        key_variable=facts.key_variable,
        key_set=key_set,
        base_url=mask_url(base_url),
        base_url_source=source,
        price=price,
        problem="; ".join(problems) or None,
    )
