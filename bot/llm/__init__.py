"""The LLM layer: one small client over the official OpenAI and Anthropic SDKs.

```python
llm = make_llm(settings, store, metrics)
done = await llm.complete(Prompt(system="…", user="…"), Answer, model="claude-sonnet-4-5")
done.value            # an Answer instance, validated
done.cost_usd, done.input_tokens, done.output_tokens, done.cached
await llm.close()
```

Only this package talks to an LLM provider.
"""

from bot.llm.client import DEFAULT_MAX_OUTPUT_TOKENS, LLM, ModelInfo, make_llm
from bot.llm.errors import (
    LLMError,
    LLMNotConfigured,
    LLMRefused,
    LLMTimeout,
    MalformedAnswer,
    ModelPriceUnknown,
    ProviderDown,
    RateLimited,
)
from bot.llm.routing import resolve_model
from bot.llm.tokens import estimate_request_tokens, estimate_tokens
from bot.llm.types import Completion, ModelRef, Prompt, Provider

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "LLM",
    "Completion",
    "LLMError",
    "LLMNotConfigured",
    "LLMRefused",
    "LLMTimeout",
    "MalformedAnswer",
    "ModelInfo",
    "ModelPriceUnknown",
    "ModelRef",
    "Prompt",
    "Provider",
    "ProviderDown",
    "RateLimited",
    "estimate_request_tokens",
    "estimate_tokens",
    "make_llm",
    "resolve_model",
]
