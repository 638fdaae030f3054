"""Who may call the operator API: bearer tokens from ARBITER_API_TOKENS, each with a role.

Tokens are compared as SHA-256 digests with `hmac.compare_digest`, against every configured
token whatever matched first, so neither a token's length nor its position shows in timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

Role = Literal["read", "admin"]
_RANK: dict[str, int] = {"read": 0, "admin": 1}
TOKENS_SETTING = "ARBITER_API_TOKENS"


@dataclass(frozen=True)
class Caller:
    role: Role
    key: str  # which configured token, by position: for the rate limiter, never the token


class Tokens:
    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._entries = [
            (_digest(token), cast(Role, role), f"token-{position}")
            for position, (token, role) in enumerate(pairs, start=1)
        ]

    @property
    def configured(self) -> bool:
        return bool(self._entries)

    def caller(self, authorization: str | None) -> Caller | None:
        """The caller an `Authorization: Bearer …` header names; None: no valid token."""
        token = bearer_token(authorization)
        if token is None:
            return None
        digest = _digest(token)
        found: Caller | None = None
        for expected, role, key in self._entries:
            if hmac.compare_digest(digest, expected) and found is None:
                found = Caller(role, key)
        return found


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def allows(role: Role, needed: Role) -> bool:
    """An admin token may do whatever a read token may."""
    return _RANK[role] >= _RANK[needed]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
