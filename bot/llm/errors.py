"""Typed LLM failures, each with a message a status line can show as it is.

Every error says what was spent before it happened (`input_tokens`, `output_tokens`,
`cost_usd`): a malformed answer was still billed, and the review's budget must know.
"""

from __future__ import annotations


class LLMError(Exception):
    """A model call failed; `str(error)` is a readable sentence."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cost_usd = cost_usd


class LLMNotConfigured(LLMError):
    """No credentials (or no usable settings) for the provider; the message names the setting."""


class ModelPriceUnknown(LLMError):
    """The model has no price while a cost cap is set; the message says how to add one."""


class ProviderDown(LLMError):
    """The provider answered 5xx, or could not be reached, on every attempt."""


class RateLimited(LLMError):
    """The provider kept answering 429, or asked us to wait longer than we will."""


class LLMTimeout(LLMError):
    """The model did not answer within ARBITER_LLM_TIMEOUT."""


class MalformedAnswer(LLMError):
    """The answer did not match the schema, on the first try and on the one retry."""


class LLMRefused(LLMError):
    """The provider refused the request (bad request, credentials, unknown model, refusal)."""
