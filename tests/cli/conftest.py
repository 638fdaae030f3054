"""`arbiter review` runs against the fake model servers of the core's tests."""

from tests.core.conftest import fake_anthropic, fake_openai

__all__ = ["fake_anthropic", "fake_openai"]
