"""GitHub credentials: the App's private key and the installation tokens minted from it.

`load_private_key(settings)` reads and checks the key once at start, so a bad key is a start-up
error that names the setting, not a 401 in the middle of a review. `InstallationTokens` caches
one token per installation until a minute before it expires; one lock per installation makes
fifty concurrent events for the same installation mint one token. `AppCredentials` signs the
App's JWTs (gidgethub's); the HTTP call that mints a token lives in `platforms/github.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from config.settings import Settings, SettingsError

# A token this close to its expiry is replaced: a call made with it could outlive it.
REFRESH_MARGIN_SECONDS = 60.0

INLINE_KEY_VARIABLE = "ARBITER_GITHUB_PRIVATE_KEY"
KEY_PATH_VARIABLE = "ARBITER_GITHUB_PRIVATE_KEY_PATH"


def load_private_key(settings: Settings) -> str | None:
    """The App's private key as PEM text, or None when neither key setting is set.

    Raises SettingsError, naming the variable, when the file cannot be read or the text is not
    a PEM RSA private key. The inline key wins when both are set.
    """
    if settings.github_private_key is not None:
        text = settings.github_private_key.get_secret_value()
        # Environment variables often carry the PEM on one line with literal "\n" escapes.
        if "\\n" in text and "\n" not in text.strip():
            text = text.replace("\\n", "\n")
        return _checked_pem(text.strip().encode(), INLINE_KEY_VARIABLE)
    if settings.github_private_key_path is not None:
        return _checked_pem(_read_key_file(settings.github_private_key_path), KEY_PATH_VARIABLE)
    return None


def _read_key_file(path: Path) -> bytes:
    try:
        return path.expanduser().read_bytes().strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(f"{KEY_PATH_VARIABLE}: cannot read {str(path)!r}: {reason}") from None


def _checked_pem(data: bytes, variable: str) -> str:
    """The PEM text, after cryptography has parsed it as an unencrypted RSA private key."""
    expected = (
        "a PEM RSA private key (the .pem file GitHub gives for the App, "
        "starting with -----BEGIN RSA PRIVATE KEY-----)"
    )
    # cryptography (and its OpenSSL, 8 MiB resident) is imported in App mode only.
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(data, password=None)
        text = data.decode("ascii")
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        # The parser's own words say what is wrong; they never quote the key.
        raise SettingsError(f"{variable}: not {expected}: {exc}") from None
    if not isinstance(key, RSAPrivateKey):
        raise SettingsError(f"{variable}: not {expected}: it is a {type(key).__name__}")
    return text + "\n"


@dataclass(frozen=True)
class AppCredentials:
    """The App's id and private key: what signs the JWTs that mint installation tokens."""

    app_id: str
    private_key: str

    def __repr__(self) -> str:  # the key never reaches a log line or a traceback
        return f"AppCredentials(app_id={self.app_id!r})"

    def jwt(self) -> str:
        from gidgethub.apps import get_jwt  # PyJWT, and cryptography: App mode only

        # gidgethub sets the issued-at a minute back, for clocks that run ahead of GitHub's.
        return get_jwt(app_id=self.app_id, private_key=self.private_key)


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: float  # epoch seconds

    def usable(self, now: float) -> bool:
        return now < self.expires_at - REFRESH_MARGIN_SECONDS


def parse_expiry(text: str) -> float:
    """GitHub's `expires_at` ("2016-07-11T22:14:10Z") as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


Mint = Callable[[], Awaitable[InstallationToken]]


class InstallationTokens:
    """Installation tokens, cached until a minute before expiry and minted once at a time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tokens: dict[int, InstallationToken] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def get(self, installation_id: int, mint: Mint) -> str:
        cached = self._tokens.get(installation_id)
        if cached is not None and cached.usable(self._clock()):
            return cached.token
        lock = self._locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            # Whoever held the lock before us may have minted the token we need.
            cached = self._tokens.get(installation_id)
            if cached is not None and cached.usable(self._clock()):
                return cached.token
            fresh = await mint()
            self._tokens[installation_id] = fresh
            return fresh.token

    def forget(self, installation_id: int, token: str) -> None:
        """Drop a token GitHub refused, unless another call already replaced it."""
        cached = self._tokens.get(installation_id)
        if cached is not None and cached.token == token:
            del self._tokens[installation_id]
