"""Conservative token estimates, without a tokenizer.

No tokenizer runs here (tiktoken cannot fetch its encodings offline, and Anthropic publishes
none): a text is estimated at one token per 3 UTF-8 bytes, rounded up. Real tokenizers average
about 4 bytes per token on English and source code, so the estimate runs high on purpose;
the usage each provider reports corrects the budget after every call.
"""

from __future__ import annotations

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators around each message
REQUEST_OVERHEAD_TOKENS = 16  # framing of a request: start of answer, tool / format wrapper


def estimate_tokens(text: str) -> int:
    """Tokens in `text`, estimated high: ceil(UTF-8 bytes / 3)."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return -(-size // BYTES_PER_TOKEN)


def estimate_request_tokens(*messages: str, schema_text: str = "") -> int:
    """Input tokens of a request carrying these messages and a JSON schema (as text)."""
    total = REQUEST_OVERHEAD_TOKENS + estimate_tokens(schema_text)
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + estimate_tokens(message)
    return total
