"""Process settings: every variable of the deployment guide, read once at start.

`load_settings()` is the only entry point; nothing reads the environment at import time.
Variables carry the `ARBITER_` prefix except the LLM providers' own API keys, and a `.env`
file in the working directory is read too (the environment wins over it).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "ARBITER_"
DEFAULT_DATABASE_URL = "sqlite:///./arbiter.db"
MIB = 1024 * 1024

# ARBITER_DATABASE_URL schemes, and the one each stands for: a PostgreSQL URL without a driver
# means asyncpg, the one driver Arbiter ships; `sqlite+aiosqlite` is the old spelling of SQLite.
DATABASE_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "mongodb": "mongodb",
    "mongodb+srv": "mongodb+srv",
}
DATABASE_URL_FORMS = "sqlite:///PATH, postgresql://… (asyncpg), mongodb://… or mongodb+srv://…"
REDIS_SCHEMES = ("redis", "rediss", "unix")
# Settings that hold a URL: shown and echoed with their credentials masked (mask_url).
URL_FIELDS = (
    "public_url",
    "database_url",
    "redis_url",
    "openai_base_url",
    "anthropic_base_url",
    "github_base_url",
    "gitlab_base_url",
)
# ARBITER_* variables that are not settings but are read on purpose (by the test suite).
NOT_SETTINGS = frozenset({"ARBITER_FIXTURES_DIR"})

StrList = Annotated[list[str], NoDecode]

# Secrets that, left blank, mean "not set" (a blank webhook secret would verify anything).
_SECRET_FIELD_NAMES = frozenset(
    {
        "github_token",
        "github_webhook_secret",
        "github_private_key",
        "gitlab_token",
        "gitlab_webhook_token",
        "openai_api_key",
        "anthropic_api_key",
        "setup_token",
    }
)
SecretList = Annotated[list[SecretStr], NoDecode]
API_ROLES = ("read", "admin")
MIN_API_TOKEN_LENGTH = 16


def normalize_database_url(url: str) -> str:
    """The store URL with its driver spelled out (`postgresql://` means asyncpg); ValueError
    for a scheme no store reads."""
    scheme, sep, rest = url.strip().partition("://")
    driver = DATABASE_SCHEMES.get(scheme.lower()) if sep else None
    if driver is None:
        raise ValueError(f"not a URL Arbiter can store in: use {DATABASE_URL_FORMS}")
    return f"{driver}://{rest}"


def _split_list(value: Any) -> Any:
    """Accept a JSON array (what the guide documents) or a comma-separated list."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class SettingsError(Exception):
    """A setting has a value Arbiter cannot use; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
        validate_default=True,
        # `ARBITER_GITHUB_WEBHOOK_SECRET=` must mean "not set", never "an empty secret": an
        # empty HMAC key would let anyone sign a webhook (verification must fail closed).
        env_ignore_empty=True,
    )

    # --- Server -------------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="address the HTTP server binds to")  # noqa: S104
    port: int = Field(8000, ge=1, le=65535, description="an integer from 1 to 65535")
    public_url: str | None = Field(
        None,
        description="the URL where platforms reach this server, e.g. https://arbiter.example.com",
    )
    max_webhook_bytes: int = Field(
        25 * MIB, ge=1024, description="largest webhook body accepted, in bytes (at least 1024)"
    )
    max_unverified_bytes: int = Field(
        64 * MIB,
        ge=1024,
        description="webhook body bytes held at once before their signature is checked (raised "
        "to ARBITER_MAX_WEBHOOK_BYTES if lower); a delivery beyond it is answered 429",
    )
    bot_name: str = Field(
        "arbiter",
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[bot\])?$",
        description="the handle users mention, letters, digits, '.', '_' and '-'",
    )
    handlers: StrList = Field(
        default_factory=list,
        description="extra handler modules to load (dotted import paths, each with a `router`)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )
    log_format: Literal["json", "console"] | None = Field(
        None, description="json or console (default: console on a terminal, json otherwise)"
    )

    # --- Database ------------------------------------------------------------------------------
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description=DATABASE_URL_FORMS,
    )
    database_pool_size: int = Field(5, ge=1, description="a positive integer")
    database_max_overflow: int = Field(10, ge=0, description="zero or a positive integer")

    # --- Redis (optional: the store holds the queue and the cache) -----------------------------
    redis_url: str | None = Field(
        None,
        description=(
            "a redis://, rediss:// or unix:// URL; when set, every web process counts the API "
            "rate limit there, together (unset: each process counts its own requests)"
        ),
    )
    redis_max_connections: int = Field(
        10, ge=1, description="connections to Redis per process, a positive integer"
    )
    redis_key_prefix: str = Field(
        "arbiter:",
        min_length=1,
        description="the prefix of every key Arbiter writes in Redis, so that several "
        "deployments can share one server",
    )

    # --- LLM ------------------------------------------------------------------------------------
    default_model: str = Field(
        "gpt-4o", min_length=1, description="a model name, or provider:model"
    )
    llm_timeout: float = Field(60, gt=0, description="seconds, a positive number")
    llm_max_retries: int = Field(3, ge=0, le=10, description="an integer from 0 to 10")
    max_tokens_per_review: int = Field(50000, ge=1000, description="an integer of at least 1000")
    max_cost_per_review_usd: float = Field(
        0.50, ge=0, description="USD, zero or more (0 disables the cap)"
    )
    daily_budget_usd: float = Field(
        0,
        ge=0,
        description=(
            "USD per UTC day across every repository, zero or more (0: no daily budget); once "
            "spent, new reviews wait for the next UTC day"
        ),
    )
    cache_ttl_hours: float = Field(24, ge=0, description="hours, zero or more (0 disables)")
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY"),
        description="the OpenAI API key (read without prefix)",
    )
    anthropic_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY"),
        description="the Anthropic API key (read without prefix)",
    )
    openai_base_url: str | None = Field(
        None, description="an OpenAI-compatible API base URL (vLLM, Ollama, LM Studio…)"
    )
    anthropic_base_url: str | None = Field(None, description="the Anthropic API base URL")
    model_prices: str | None = Field(
        None,
        description=(
            "model prices added to or replacing the shipped table: a YAML or JSON file, or "
            'inline JSON like {"my-model": {"input": 0.5, "output": 1.5}} (USD per million '
            "tokens; optional context, in tokens)"
        ),
    )

    # --- GitHub ---------------------------------------------------------------------------------
    github_token: SecretStr | None = Field(None, description="a personal or bot access token")
    github_webhook_secret: SecretStr | None = Field(None, description="the webhook HMAC secret")
    github_base_url: str = Field(
        "https://api.github.com",
        description="API base URL (GitHub Enterprise: https://HOST/api/v3)",
    )
    github_app_id: str | None = Field(None, description="the GitHub App's numeric id")
    github_private_key: SecretStr | None = Field(
        None, description="the GitHub App's private key, PEM text"
    )
    setup_token: SecretStr | None = Field(
        None,
        description=(
            "the token the /setup page asks for (default: a random one, printed in the log "
            "at start), so only whoever runs this server can create its GitHub App"
        ),
    )
    github_private_key_path: Path | None = Field(
        None, description="a file holding the GitHub App's private key (PEM)"
    )
    github_rate_limit_max_wait: float = Field(
        60,
        ge=0,
        description="seconds, zero or more: the longest GitHub rate-limit wait accepted per call",
    )

    # --- GitLab ---------------------------------------------------------------------------------
    gitlab_token: SecretStr | None = Field(None, description="a project, group or bot user token")
    gitlab_webhook_token: SecretStr | None = Field(None, description="the webhook secret token")
    gitlab_base_url: str = Field("https://gitlab.com", description="the GitLab instance URL")
    gitlab_rate_limit_max_wait: float = Field(
        60,
        ge=0,
        description="seconds, zero or more: the longest GitLab rate-limit wait accepted per call",
    )

    # --- API ------------------------------------------------------------------------------------
    api_title: str = Field("Arbiter API", description="OpenAPI title")
    api_version: str = Field("0.5.0", description="OpenAPI version string")
    cors_origins: StrList = Field(
        default_factory=lambda: ["http://localhost:3000"],
        description='a JSON array of origins, e.g. ["https://dash.example.com"]',
    )
    api_rate_limit_per_minute: int = Field(60, ge=1, description="a positive integer")
    api_tokens: SecretList = Field(
        default_factory=list,
        description=(
            "bearer tokens for the operator API and dashboard, each TOKEN:ROLE with ROLE read "
            "or admin (admin may also retry dead jobs) and TOKEN at least 16 characters, no "
            'spaces or commas; a JSON array or comma-separated, e.g. ["<random>:admin"] '
            "(empty: the API and dashboard refuse every request)"
        ),
    )

    # --- Worker ---------------------------------------------------------------------------------
    worker_max_jobs: int = Field(10, ge=1, le=1000, description="an integer from 1 to 1000")
    worker_job_timeout: float = Field(300, gt=0, description="seconds, a positive number")
    worker_retry_attempts: int = Field(3, ge=0, le=50, description="an integer from 0 to 50")
    worker_retry_backoff_seconds: float = Field(
        5, ge=0, description="first retry delay in seconds; doubles each attempt, with jitter"
    )
    worker_retry_backoff_max_seconds: float = Field(
        600, ge=0, description="the longest retry delay, in seconds"
    )
    worker_lease_seconds: float = Field(
        30,
        gt=0,
        description="how long a claimed job stays owned without a heartbeat, in seconds",
    )
    worker_poll_interval: float = Field(
        1.0, gt=0, description="seconds between queue polls when idle"
    )
    worker_shutdown_grace_seconds: float = Field(
        30, ge=0, description="on SIGTERM, seconds running jobs get to finish"
    )
    worker_http_port: int = Field(
        9100,
        ge=0,
        le=65535,
        description=(
            "the port where `arbiter worker` serves /health, /health/live, /health/ready and "
            "/metrics (0: none)"
        ),
    )
    delivery_retention_days: float = Field(
        14, gt=0, description="days seen delivery ids and finished jobs are kept"
    )

    # --- Feature flags --------------------------------------------------------------------------
    post_comments: bool = Field(True, description="true or false")
    update_status: bool = Field(True, description="true or false")
    followup_enabled: bool = Field(True, description="true or false")
    followup_confidence_threshold: float = Field(
        0.5, ge=0, le=1, description="a number from 0 to 1"
    )
    followup_max_tokens_per_response: int = Field(2000, ge=1, description="a positive integer")
    followup_rate_per_hour: int = Field(
        20,
        ge=1,
        description=(
            "questions one person may put to the bot on one pull request per hour, a positive "
            "integer; the next one gets a short rate-limit reply and no model call"
        ),
    )

    # --- Integrations ---------------------------------------------------------------------------
    integration_timeout: float = Field(30, gt=0, description="seconds, a positive number")
    integration_max_retries: int = Field(3, ge=0, le=10, description="an integer from 0 to 10")
    status_check_context: str = Field(
        "arbiter", min_length=1, description="the commit status context name"
    )

    # --- Recovery: deliveries that never arrived, pull requests never reviewed ------------------
    redelivery_interval_seconds: float = Field(
        300,
        ge=0,
        description=(
            "seconds between passes that ask GitHub (and GitLab, with ARBITER_GITLAB_HOOK_IDS) "
            "to send failed webhook deliveries again, zero or more (0: off)"
        ),
    )
    redelivery_max_per_pass: int = Field(
        50, ge=1, description="redeliveries one pass may ask for, a positive integer"
    )
    redelivery_max_pages: int = Field(
        10,
        ge=1,
        description="pages of 100 deliveries one pass reads per webhook, a positive integer",
    )
    github_hook_ids: StrList = Field(
        default_factory=list,
        description=(
            "token mode: the repository webhooks whose failed deliveries are asked for again, "
            "owner/repo:HOOK_ID, comma-separated, e.g. octo/app:12345,octo/lib:678 (the token "
            "needs admin:repo_hook; a GitHub App needs none of this)"
        ),
    )
    gitlab_hook_ids: StrList = Field(
        default_factory=list,
        description=(
            "project webhooks whose failed events GitLab 17.4+ resends, group/project:HOOK_ID, "
            "comma-separated, e.g. acme/shop:12 (the token needs the Maintainer role)"
        ),
    )
    reconcile_interval_seconds: float = Field(
        3600,
        ge=0,
        description=(
            "seconds between sweeps of open pull/merge requests that queue a review for any "
            "whose head was never reviewed, zero or more (0: off)"
        ),
    )
    reconcile_max_pages: int = Field(
        3,
        ge=1,
        description="pages of 100 open pull requests a sweep reads per repository, positive",
    )
    reconcile_max_reviews_per_pass: int = Field(
        50, ge=1, description="reviews one sweep may queue, a positive integer"
    )

    # --- Repository configuration (.arbiter.yml; config/repo.py) --------------------------------
    repo_config_defaults: Path | None = Field(
        None,
        description=(
            "a YAML file of .arbiter.yml defaults for every repository (the house rules), "
            "e.g. /etc/arbiter/defaults.yml; each repository's own file is merged over it"
        ),
    )
    allowed_models: StrList = Field(
        default_factory=list,
        description=(
            "models a repository may choose with `model:` in .arbiter.yml, a JSON array or "
            'comma-separated, e.g. ["gpt-4o-mini", "claude-sonnet-4-6"] (empty: none but the '
            "default)"
        ),
    )

    @field_validator("handlers", "cors_origins", "allowed_models", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("github_hook_ids", "gitlab_hook_ids", mode="before")
    @classmethod
    def _hook_lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("github_hook_ids", "gitlab_hook_ids")
    @classmethod
    def _hook_entries(cls, value: list[str]) -> list[str]:
        for position, entry in enumerate(value, start=1):
            repo, hook = parse_hook_id(entry)
            if not repo or hook is None:
                raise ValueError(
                    f"entry {position} ({entry[:80]!r}) is not PATH:HOOK_ID, e.g. octo/app:12345"
                )
        return value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _token_list(cls, value: Any) -> Any:
        return _split_list(value.get_secret_value() if isinstance(value, SecretStr) else value)

    @field_validator("api_tokens")
    @classmethod
    def _token_roles(cls, value: list[SecretStr]) -> list[SecretStr]:
        # The messages name the entry by position: a token must never be echoed.
        seen: set[str] = set()
        for position, entry in enumerate(value, start=1):
            token, _, role = entry.get_secret_value().rpartition(":")
            if role not in API_ROLES:
                raise ValueError(f"entry {position} does not end in :read or :admin")
            if len(token) < MIN_API_TOKEN_LENGTH or any(c.isspace() for c in token):
                raise ValueError(
                    f"the token of entry {position} is shorter than {MIN_API_TOKEN_LENGTH} "
                    "characters or holds a space"
                )
            if token in seen:
                raise ValueError(f"the token of entry {position} is given twice")
            seen.add(token)
        return value

    @field_validator("repo_config_defaults", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(*sorted(_SECRET_FIELD_NAMES), mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str) and not raw.strip():
            return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return value or None
        return value

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.partition("://")[0].lower() not in REDIS_SCHEMES:
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator(
        "github_base_url", "gitlab_base_url", "public_url", "openai_base_url", "anthropic_base_url"
    )
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    # --- Derived views --------------------------------------------------------------------------

    def secret_values(self) -> list[str]:
        """Every secret this process holds, for the log redactor."""
        values = [
            secret.get_secret_value()
            for secret in (
                self.github_token,
                self.github_webhook_secret,
                self.github_private_key,
                self.setup_token,
                self.gitlab_token,
                self.gitlab_webhook_token,
                self.openai_api_key,
                self.anthropic_api_key,
            )
            if secret is not None
        ]
        values.extend(token for token, _ in api_tokens(self))
        for field in URL_FIELDS:
            url = getattr(self, field)
            if url:
                values.extend(url_secrets(url))
        return [v for v in values if len(v) >= 4]


def api_tokens(settings: Settings) -> list[tuple[str, str]]:
    """ARBITER_API_TOKENS as (token, role) pairs."""
    pairs = [entry.get_secret_value().rpartition(":") for entry in settings.api_tokens]
    return [(token, role) for token, _, role in pairs]


def parse_hook_id(entry: str) -> tuple[str, int | None]:
    """One `PATH:HOOK_ID` entry: the repository ("owner/repo", "group/sub/project") and the
    webhook's numeric id (None when the entry is not of that form)."""
    path, sep, hook = entry.strip().rpartition(":")
    path = path.strip().strip("/")
    if not sep or "/" not in path or not hook.strip().isdigit() or " " in path:
        return path, None
    return path, int(hook)


def hook_ids(entries: list[str]) -> list[tuple[str, int]]:
    """ARBITER_GITHUB_HOOK_IDS / ARBITER_GITLAB_HOOK_IDS as (repository, hook id) pairs."""
    found = [parse_hook_id(entry) for entry in entries]
    return [(path, hook) for path, hook in found if hook is not None]


MASK = "***"
# Query (and fragment) parameters whose values are credentials: ?token=, ?api_key=, ?sig=…
_SECRET_PARAMETER = re.compile(
    r"(?P<lead>[?&;#])(?P<name>[^=&;#]*(?:token|key|secret|passw|pwd|sig|credential)"
    r"[^=&;#]*)=(?P<value>[^&;#]*)",
    re.IGNORECASE,
)


def _split_url(url: str) -> tuple[str, str, str, str]:
    """(scheme with its `://`, userinfo, host part, the rest from the first /, ? or #)."""
    scheme, sep, rest = url.partition("://")
    lead = f"{scheme}{sep}" if sep else ""
    if not sep:
        rest = url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, host = netloc.rpartition("@")
    return lead, userinfo if at else "", host if at else netloc, tail


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries: its password (or an http(s) URL's lone user, which is a
    token there) and the values of credential-like query parameters."""
    lead, userinfo, _, tail = _split_url(url)
    found: list[str] = []
    if userinfo:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            found.append(password)
        elif not colon and lead.lower().startswith("http"):
            found.append(user)
    found.extend(m["value"] for m in _SECRET_PARAMETER.finditer(tail) if m["value"])
    return found


def mask_url(url: str) -> str:
    """The URL with its credentials replaced by ***, fit for logs, errors and `arbiter config`.

    The password of `scheme://user:password@host` (an http(s) URL's lone user too: a token
    there), and the values of query parameters named like credentials (`?token=`, `?api_key=`).
    """
    lead, userinfo, host, tail = _split_url(url)
    if userinfo:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            userinfo = f"{user}:{MASK}"
        elif not colon and lead.lower().startswith("http"):
            userinfo = MASK
        host = f"{userinfo}@{host}"
    tail = _SECRET_PARAMETER.sub(lambda m: f"{m['lead']}{m['name']}={MASK}", tail)
    return f"{lead}{host}{tail}"


def without_credentials(url: str) -> str:
    """The URL with no userinfo, query or fragment: a base URL made fit to build links on."""
    lead, _, host, tail = _split_url(url)
    path = tail.split("?", 1)[0].split("#", 1)[0]
    return f"{lead}{host}{path}"


def env_name(field: str) -> str:
    """The environment variable an operator sets for a settings field."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        if isinstance(first, str):
            return first
    return ENV_PREFIX + field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, or raise SettingsError naming each bad variable and what it accepts."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    lines = ["invalid settings:"]
    for error in exc.errors():
        loc = error.get("loc") or ("?",)
        field = str(loc[0])
        if field in Settings.model_fields:
            name = env_name(field)
            accepts = Settings.model_fields[field].description or ""
        else:
            name, accepts = field, ""
        got = error.get("input")
        if field in URL_FIELDS and isinstance(got, str):
            got = mask_url(got)
        shown = "" if isinstance(got, dict) or got is None else f" (got {str(got)[:80]!r})"
        if field in _SECRET_FIELDS:
            shown = ""
        reason = error.get("msg", "invalid value")
        line = f"  {name}{shown}: {reason}"
        if accepts:
            line += f"; accepts {accepts}"
        lines.append(line)
    return "\n".join(lines)


_SECRET_FIELDS = {
    "api_tokens",
    "setup_token",
    "github_token",
    "github_webhook_secret",
    "github_private_key",
    "gitlab_token",
    "gitlab_webhook_token",
    "openai_api_key",
    "anthropic_api_key",
}


def _known_variables() -> set[str]:
    return {env_name(name).upper() for name in Settings.model_fields}


def _is_unknown(key: str, known: set[str]) -> bool:
    upper = key.upper()
    return (
        upper.startswith(ENV_PREFIX)
        and upper not in known
        and upper not in NOT_SETTINGS
        and not upper.startswith("ARBITER_TEST_")
    )


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """`ARBITER_*` variables that match no setting: almost always a typo worth a warning."""
    env = os.environ if environ is None else environ
    known = _known_variables()
    return sorted(key for key in env if _is_unknown(key, known))


@dataclass(frozen=True)
class UnknownVariable:
    """An `ARBITER_*` variable no setting reads, and the setting its name is closest to."""

    variable: str
    closest: str | None
    source: str  # "environment", or the .env file it is in

    def warning(self) -> str:
        where = "" if self.source == "environment" else f" (in {self.source})"
        hint = (
            f"did you mean {self.closest}?"
            if self.closest
            else "no setting is close; `arbiter config` lists every setting"
        )
        return f"{self.variable}{where} is not a setting (ignored): {hint}"


def closest_setting(variable: str) -> str | None:
    """The setting a mistyped variable most likely meant, or None when none is close."""
    known = sorted(_known_variables())
    name = variable.upper()
    bare = name.removeprefix(ENV_PREFIX)
    if bare in known:  # OPENAI_API_KEY and ANTHROPIC_API_KEY are read without the prefix
        return bare
    suffixes = {k.removeprefix(ENV_PREFIX): k for k in known}
    match = difflib.get_close_matches(bare, list(suffixes), n=1, cutoff=0.75)
    return suffixes[match[0]] if match else None


def unknown_settings(
    environ: Mapping[str, str] | None = None, *, env_file: Path | None = Path(".env")
) -> list[UnknownVariable]:
    """Unknown `ARBITER_*` variables of the environment and of the `.env` file, each with the
    setting it is closest to: a typo'd setting is otherwise silently ignored."""
    from dotenv import dotenv_values  # pydantic-settings reads .env with it too

    env = os.environ if environ is None else environ
    known = _known_variables()
    found = [
        UnknownVariable(key, closest_setting(key), "environment")
        for key in sorted(env)
        if _is_unknown(key, known)
    ]
    if env_file is not None and env_file.is_file():
        in_env = {u.variable.upper() for u in found}
        for key in dotenv_values(env_file):
            if _is_unknown(key, known) and key.upper() not in in_env:
                found.append(UnknownVariable(key, closest_setting(key), str(env_file)))
    return found


@dataclass(frozen=True)
class PlatformStatus:
    name: str
    enabled: bool
    missing: tuple[str, ...]
    mode: str  # how it authenticates when enabled: "app", "token" or ""

    def describe(self) -> str:
        if self.enabled:
            return f"{self.name}: enabled ({self.mode})"
        return f"{self.name}: disabled, set {' and '.join(self.missing)}"


def platform_status(settings: Settings) -> dict[str, PlatformStatus]:
    """Which platforms this process serves and, for the others, exactly what is missing."""
    gh_missing: list[str] = []
    if settings.github_webhook_secret is None:
        gh_missing.append("ARBITER_GITHUB_WEBHOOK_SECRET")
    has_key = settings.github_private_key is not None or settings.github_private_key_path
    if settings.github_app_id and has_key:
        gh_mode = "app"
    elif settings.github_token is not None:
        gh_mode = "token"
    else:
        gh_mode = ""
        if settings.github_app_id:
            gh_missing.append("ARBITER_GITHUB_PRIVATE_KEY (or ARBITER_GITHUB_PRIVATE_KEY_PATH)")
        elif has_key:
            gh_missing.append("ARBITER_GITHUB_APP_ID")
        else:
            gh_missing.append(
                "ARBITER_GITHUB_TOKEN (or ARBITER_GITHUB_APP_ID with ARBITER_GITHUB_PRIVATE_KEY)"
            )
    gl_missing: list[str] = []
    if settings.gitlab_webhook_token is None:
        gl_missing.append("ARBITER_GITLAB_WEBHOOK_TOKEN")
    if settings.gitlab_token is None:
        gl_missing.append("ARBITER_GITLAB_TOKEN")
    return {
        "github": PlatformStatus("github", not gh_missing, tuple(gh_missing), gh_mode),
        "gitlab": PlatformStatus("gitlab", not gl_missing, tuple(gl_missing), "token"),
    }


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Every setting by its variable name, secrets masked: what `arbiter config` prints."""
    shown: dict[str, Any] = {}
    for field in Settings.model_fields:
        value = getattr(settings, field)
        if isinstance(value, SecretStr):
            value = "***" if value.get_secret_value() else ""
        elif field in URL_FIELDS and isinstance(value, str):
            value = mask_url(value)
        elif field == "api_tokens":
            value = [f"***:{role}" for _, role in api_tokens(settings)]
        elif isinstance(value, Path):
            value = str(value)
        shown[env_name(field)] = value
    return shown
