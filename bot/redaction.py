"""Redaction: the one set of rules that masks secrets wherever text leaves Arbiter.

A `Redactor` knows the secrets this process holds (from Settings) and the shapes of
credentials nobody told it about (GitHub and GitLab tokens, API keys, private keys, passwords
in URLs, Authorization headers). The log pipeline (bot/logs.py) and every other boundary, the
job errors the worker stores, review reasons and exchanges, what is posted on a pull request
(bot/outbound.py) and what the operator API answers, use the same one.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from config.settings import Settings

REDACTED = "***"

# Field names whose values are secret whatever they hold; counts of tokens are not.
_SECRET_FIELD = re.compile(
    r"(token|secret|password|passwd|private_key|api_key|authorization|cookie|signature)",
    re.IGNORECASE,
)
_COUNT_FIELD = re.compile(r"(input|output|max|total|prompt|completion|cached)_tokens$", re.I)


@dataclass(frozen=True)
class _Shape:
    """A credential's shape. Its group 1, or the whole match, is masked; `word`: only where a
    word starts. A shape matched in any case (`markers`: the lower-case literals it starts
    with) is tried only where a marker occurs: case-blind regex scans of a 60 KB comment are
    slow, finding literals is not."""

    pattern: re.Pattern[str]
    word: bool = True
    markers: tuple[str, ...] = ()

    def inside_word(self, match: re.Match[str]) -> bool:
        """A match that does not start a word ("risk-assessment-…" is not a key)."""
        start = match.start()
        return self.word and start > 0 and _in_word(match.string[start - 1])

    def masked(self, match: re.Match[str]) -> str:
        """What replaces `match`: itself inside a word, else *** for its secret part."""
        if self.inside_word(match):
            return match.group(0)
        if not self.pattern.groups:
            return REDACTED
        text, start = match.string, match.start()
        return text[start : match.start(1)] + REDACTED + text[match.end(1) : match.end()]


def _shape(pattern: str, *markers: str, word: bool = True) -> _Shape:
    return _Shape(re.compile(pattern, re.IGNORECASE if markers else 0), word, markers)


# Each pattern starts with a literal (which re finds fast) and cannot backtrack far.
_SHAPES = (
    _shape(r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    _shape(r"github_pat_[A-Za-z0-9_]{20,}"),
    _shape(r"v1\.[0-9a-f]{40}(?![0-9a-f])"),  # GitHub installation tokens, older form
    _shape(r"gl(?:pat|dt|rt|cbt|ptt|ft|imt|agent|oas|soat|ffct)-[A-Za-z0-9_\-]{20,}"),  # GitLab
    _shape(r"sk-[A-Za-z0-9_\-]{20,}"),  # OpenAI and Anthropic keys
    _shape(r"AKIA[0-9A-Z]{16}(?![0-9A-Z])"),  # AWS access key ids
    _shape(r"eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"),  # JWTs
    # A private key, to its end, or to the end of the text when cut short.
    _shape(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
        word=False,
    ),
    _shape(r"://([^/\s@]++)@", word=False),  # in a URL: user:password@, token@
    # A credential after its name (headers, JSON bodies, key=value); the name is kept.
    _shape(
        r"(?:authorization|api[-_]?key|private[-_]token|x-gitlab-token|client[-_]secret)"
        r"[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?([^\s\"',;}&]{8,})",
        "authorization",
        "api_key",
        "api-key",
        "apikey",
        "private_token",
        "private-token",
        "x-gitlab-token",
        "client_secret",
        "client-secret",
    ),
    _shape(r"(?:bearer|basic)\s+([A-Za-z0-9._~+/=\-]{16,})", "bearer", "basic"),
)


@functools.lru_cache(maxsize=1024)  # a log line asks for each of its few field names
def secret_field(name: str) -> bool:
    """Whether a field called `name` holds a secret (its value is masked whole in logs)."""
    return bool(_SECRET_FIELD.search(name)) and not _COUNT_FIELD.search(name)


class Redactor:
    """Masks the secrets it was given, as given and as they appear encoded in URLs and JSON,
    and credential shapes it was not given."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._given = frozenset(secret for secret in secrets if secret)
        forms = {form for secret in self._given for form in _encoded_forms(secret)}
        self._secrets = sorted(forms, key=len, reverse=True)  # a longer one before its parts

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        return cls(settings.secret_values())

    def adding(self, secrets: Iterable[str]) -> Redactor:
        """A Redactor that knows `secrets` as well as this one's."""
        return Redactor([*self._given, *secrets])

    def scrub(self, text: str) -> str:
        """`text` with every secret and credential shape replaced by ***."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for shape in _SHAPES:
            text = _mask(text, shape)
        return text

    def scrub_value(self, value: Any) -> Any:
        """A JSON-like value (an API answer) with every string in it scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {k: self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_value(v) for v in value]
        return value


def _encoded_forms(secret: str) -> set[str]:
    """A secret as written, percent-encoded (a URL) and escaped (a JSON string, with or
    without its slashes escaped too)."""
    escaped = {json.dumps(secret, ensure_ascii=as_ascii)[1:-1] for as_ascii in (True, False)}
    return {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        *escaped,
        *(e.replace("/", "\\/") for e in escaped),
    }


def _mask(text: str, shape: _Shape) -> str:
    """`text` with every match of `shape` masked."""
    if not shape.markers:
        return shape.pattern.sub(shape.masked, text)
    lowered = text.lower()
    if len(lowered) != len(text):  # a letter lowercased to two: positions would not agree
        return shape.pattern.sub(shape.masked, text)
    found = [marker for marker in shape.markers if marker in lowered]
    if not found:
        return text
    starts = sorted(at for marker in found for at in _occurrences(lowered, marker))
    parts, done = [], 0
    for at in starts:
        match = shape.pattern.match(text, at) if at >= done else None
        if match is not None and not shape.inside_word(match):
            group = 1 if shape.pattern.groups else 0
            parts += [text[done : match.start(group)], REDACTED]
            done = match.end(group)
    return "".join([*parts, text[done:]]) if parts else text


def _occurrences(text: str, marker: str) -> list[int]:
    found, at = [], text.find(marker)
    while at != -1:
        found.append(at)
        at = text.find(marker, at + 1)
    return found


def _in_word(char: str) -> bool:
    return char.isalnum() or char == "_"
