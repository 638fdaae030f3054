"""Settings: the guide's variables and defaults, clear errors, masking, platform status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from config.settings import (
    DEFAULT_DATABASE_URL,
    SettingsError,
    effective_settings,
    load_settings,
    mask_url,
    platform_status,
    unknown_settings,
    unknown_variables,
)

# Every variable of the deployment guide's tables, with its documented default.
GUIDE_DEFAULTS = {
    "ARBITER_DATABASE_URL": DEFAULT_DATABASE_URL,  # the one documented departure: embedded SQLite
    "ARBITER_DATABASE_POOL_SIZE": 5,
    "ARBITER_DATABASE_MAX_OVERFLOW": 10,
    # Unset: Redis is optional (the guide's localhost default would make every process without
    # one reach for it); the store holds what the guide kept there.
    "ARBITER_REDIS_URL": None,
    "ARBITER_REDIS_MAX_CONNECTIONS": 10,
    "ARBITER_DEFAULT_MODEL": "gpt-4o",
    "ARBITER_LLM_TIMEOUT": 60,
    "ARBITER_LLM_MAX_RETRIES": 3,
    "ARBITER_MAX_TOKENS_PER_REVIEW": 50000,
    "ARBITER_MAX_COST_PER_REVIEW_USD": 0.50,
    "ARBITER_CACHE_TTL_HOURS": 24,
    "OPENAI_API_KEY": None,
    "ANTHROPIC_API_KEY": None,
    "ARBITER_GITHUB_TOKEN": None,
    "ARBITER_GITHUB_WEBHOOK_SECRET": None,
    "ARBITER_GITHUB_BASE_URL": "https://api.github.com",
    "ARBITER_GITLAB_TOKEN": None,
    "ARBITER_GITLAB_WEBHOOK_TOKEN": None,
    "ARBITER_GITLAB_BASE_URL": "https://gitlab.com",
    "ARBITER_API_TITLE": "Arbiter API",
    "ARBITER_API_VERSION": "0.5.0",
    "ARBITER_CORS_ORIGINS": ["http://localhost:3000"],
    "ARBITER_API_RATE_LIMIT_PER_MINUTE": 60,
    "ARBITER_WORKER_MAX_JOBS": 10,
    "ARBITER_WORKER_JOB_TIMEOUT": 300,
    "ARBITER_WORKER_RETRY_ATTEMPTS": 3,
    "ARBITER_POST_COMMENTS": True,
    "ARBITER_UPDATE_STATUS": True,
    "ARBITER_FOLLOWUP_ENABLED": True,
    "ARBITER_FOLLOWUP_CONFIDENCE_THRESHOLD": 0.5,
    "ARBITER_FOLLOWUP_MAX_TOKENS_PER_RESPONSE": 2000,
    "ARBITER_INTEGRATION_TIMEOUT": 30,
    "ARBITER_INTEGRATION_MAX_RETRIES": 3,
    "ARBITER_STATUS_CHECK_CONTEXT": "arbiter",
    # Named by the framework-core issue.
    "ARBITER_HOST": "0.0.0.0",
    "ARBITER_PORT": 8000,
    "ARBITER_BOT_NAME": "arbiter",
    "ARBITER_LOG_LEVEL": "INFO",
    "ARBITER_MAX_WEBHOOK_BYTES": 25 * 1024 * 1024,
    "ARBITER_GITHUB_APP_ID": None,
    "ARBITER_GITHUB_PRIVATE_KEY": None,
    "ARBITER_GITHUB_PRIVATE_KEY_PATH": None,
    "ARBITER_LOG_FORMAT": None,
}


def test_every_guide_variable_exists_with_its_default() -> None:
    shown = effective_settings(load_settings())
    for name, default in GUIDE_DEFAULTS.items():
        assert name in shown, f"{name} is missing"
        assert shown[name] == default, f"{name}: {shown[name]!r} != {default!r}"


def test_environment_overrides_and_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_PORT", "9001")
    monkeypatch.setenv("ARBITER_POST_COMMENTS", "false")
    monkeypatch.setenv("ARBITER_MAX_COST_PER_REVIEW_USD", "0.05")
    monkeypatch.setenv("ARBITER_CORS_ORIGINS", '["https://a.example", "https://b.example"]')
    monkeypatch.setenv("ARBITER_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.port == 9001
    assert settings.post_comments is False
    assert settings.max_cost_per_review_usd == 0.05
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.log_level == "DEBUG"


def test_lists_also_accept_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("ARBITER_HANDLERS", "my.handlers,other.handlers")
    settings = load_settings()
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.handlers == ["my.handlers", "other.handlers"]


def test_llm_keys_are_read_without_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_OPENAI_API_KEY", "sk-prefixed-is-not-read")
    assert load_settings().openai_api_key is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    settings = load_settings()
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-test-openai"
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.get_secret_value() == "sk-ant-test"


def test_dotenv_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("ARBITER_PORT=7001\nARBITER_BOT_NAME=reviewer\n")
    monkeypatch.setenv("ARBITER_BOT_NAME", "fromenv")
    settings = load_settings()
    assert settings.port == 7001
    assert settings.bot_name == "fromenv"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ARBITER_PORT", "eighty", "ARBITER_PORT (got 'eighty'): "),
        ("ARBITER_PORT", "70000", "accepts an integer from 1 to 65535"),
        ("ARBITER_LOG_FORMAT", "xml", "ARBITER_LOG_FORMAT (got 'xml')"),
        ("ARBITER_DATABASE_URL", "mysql://db/x", "sqlite:///PATH, postgresql://"),
        ("ARBITER_FOLLOWUP_CONFIDENCE_THRESHOLD", "2", "a number from 0 to 1"),
        ("ARBITER_GITHUB_BASE_URL", "api.github.com", "must start with http:// or https://"),
        ("ARBITER_POST_COMMENTS", "perhaps", "ARBITER_POST_COMMENTS (got 'perhaps')"),
        ("ARBITER_CORS_ORIGINS", "[not json", "ARBITER_CORS_ORIGINS"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert expected in str(caught.value)
    assert variable in str(caught.value)


def test_a_bad_secret_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_DATABASE_URL", "mysql://user:hunter22@db/x")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter22" not in str(caught.value)
    assert "mysql://user:***@db/x" in str(caught.value)  # masked, still recognisable


@pytest.mark.parametrize(
    ("variable", "value", "secret", "shown"),
    [
        (
            "ARBITER_GITHUB_BASE_URL",
            "ghe.example/api/v3?token=ghp_hunter22",
            "ghp_hunter22",
            "?token=***",
        ),
        (
            "ARBITER_GITLAB_BASE_URL",
            "ftp://bot:hunter22@gitlab.example",
            "hunter22",
            "ftp://bot:***@",
        ),
        ("ARBITER_PUBLIC_URL", "arbiter:hunter22@example.com", None, None),
        ("ARBITER_REDIS_URL", "http://:hunter22@redis:6379/0", "hunter22", "http://:***@redis"),
        (
            "ARBITER_OPENAI_BASE_URL",
            "localhost:8000/v1?api_key=hunter22",
            "hunter22",
            "api_key=***",
        ),
    ],
)
def test_an_invalid_url_setting_is_echoed_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    secret: str | None,
    shown: str | None,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["config"]) == 2  # start-up reads the settings the same way for every command
    err = capsys.readouterr().err
    assert variable in err
    assert "hunter22" not in err
    if shown is not None:
        assert shown in err


URLS_WITH_CREDENTIALS = {
    "ARBITER_DATABASE_URL": (
        "postgresql+asyncpg://arbiter:db-pass-1@db:5432/arbiter",
        "postgresql+asyncpg://arbiter:***@db:5432/arbiter",
    ),
    "ARBITER_REDIS_URL": ("redis://:redis-pass-2@cache:6379/0", "redis://:***@cache:6379/0"),
    "ARBITER_OPENAI_BASE_URL": (
        "https://proxy:openai-pass-3@llm.internal/v1?api_key=openai-key-4&team=a",
        "https://proxy:***@llm.internal/v1?api_key=***&team=a",
    ),
    "ARBITER_ANTHROPIC_BASE_URL": (
        "https://gateway.internal/anthropic?token=anthropic-token-5",
        "https://gateway.internal/anthropic?token=***",
    ),
    "ARBITER_GITHUB_BASE_URL": (
        "https://x-access:gh-pass-6@ghe.example/api/v3",
        "https://x-access:***@ghe.example/api/v3",
    ),
    "ARBITER_GITLAB_BASE_URL": (
        "https://gl-token-7@gitlab.example",
        "https://***@gitlab.example",
    ),
    "ARBITER_PUBLIC_URL": (
        "https://arbiter.example?access_token=public-token-8",
        "https://arbiter.example?access_token=***",
    ),
}
URL_SECRETS = (
    "db-pass-1",
    "redis-pass-2",
    "openai-pass-3",
    "openai-key-4",
    "anthropic-token-5",
    "gh-pass-6",
    "gl-token-7",
    "public-token-8",
)


def test_every_url_setting_is_shown_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable, (value, _) in URLS_WITH_CREDENTIALS.items():
        monkeypatch.setenv(variable, value)
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert main(["config", "--json"]) == 0
    text = capsys.readouterr().out
    report = json.loads(text)
    for secret in URL_SECRETS:
        assert secret not in out and secret not in text, secret
    for variable, (_, masked) in URLS_WITH_CREDENTIALS.items():
        assert report["settings"][variable] == masked
        assert masked in out


def test_url_credentials_never_reach_a_log_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from bot.logs import configure_logging, get_logger

    for variable, (value, _) in URLS_WITH_CREDENTIALS.items():
        monkeypatch.setenv(variable, value)
    settings = load_settings()
    stream = io.StringIO()
    configure_logging(settings, stream=stream)
    log = get_logger(component="test")
    for value, _ in URLS_WITH_CREDENTIALS.values():
        log.warning("cannot reach", url=value, detail=f"GET {value} failed")
    written = stream.getvalue()
    assert written.count("cannot reach") == len(URLS_WITH_CREDENTIALS)
    for secret in URL_SECRETS:
        assert secret not in written, secret


@pytest.mark.parametrize(
    ("given", "used"),
    [
        (
            "postgresql://arbiter:pw@db:5432/arbiter",
            "postgresql+asyncpg://arbiter:pw@db:5432/arbiter",
        ),
        ("postgres://arbiter:pw@db/arbiter", "postgresql+asyncpg://arbiter:pw@db/arbiter"),
        ("postgresql+asyncpg://db/arbiter", "postgresql+asyncpg://db/arbiter"),
        ("sqlite:///./other.db", "sqlite:///./other.db"),
        ("sqlite+aiosqlite:///./old.db", "sqlite+aiosqlite:///./old.db"),
        ("mongodb+srv://cluster.example/arbiter", "mongodb+srv://cluster.example/arbiter"),
    ],
)
def test_database_url_schemes(monkeypatch: pytest.MonkeyPatch, given: str, used: str) -> None:
    monkeypatch.setenv("ARBITER_DATABASE_URL", given)
    assert load_settings().database_url == used


def test_the_default_database_url_needs_no_driver_that_is_gone() -> None:
    assert DEFAULT_DATABASE_URL == "sqlite:///./arbiter.db"
    assert "aiosqlite" not in load_settings().database_url


def test_serve_refuses_to_start_on_a_bad_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARBITER_WORKER_MAX_JOBS", "0")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "ARBITER_WORKER_MAX_JOBS" in err
    assert "an integer from 1 to 1000" in err


def test_platform_status_names_exactly_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    status = platform_status(load_settings())
    assert not status["github"].enabled
    assert "ARBITER_GITHUB_WEBHOOK_SECRET" in status["github"].missing
    assert status["gitlab"].missing == ("ARBITER_GITLAB_WEBHOOK_TOKEN", "ARBITER_GITLAB_TOKEN")

    monkeypatch.setenv("ARBITER_GITHUB_WEBHOOK_SECRET", "s3cret-hook")
    monkeypatch.setenv("ARBITER_GITHUB_APP_ID", "12345")
    status = platform_status(load_settings())
    assert status["github"].missing == (
        "ARBITER_GITHUB_PRIVATE_KEY (or ARBITER_GITHUB_PRIVATE_KEY_PATH)",
    )

    monkeypatch.setenv("ARBITER_GITHUB_PRIVATE_KEY_PATH", "/keys/app.pem")
    monkeypatch.setenv("ARBITER_GITLAB_TOKEN", "glpat-abc")
    monkeypatch.setenv("ARBITER_GITLAB_WEBHOOK_TOKEN", "hooktoken")
    status = platform_status(load_settings())
    assert status["github"].enabled and status["github"].mode == "app"
    assert status["gitlab"].enabled


def test_config_command_masks_secrets_and_reports_platforms(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARBITER_GITHUB_TOKEN", "ghp_realtokenvalue1234567890")
    monkeypatch.setenv("ARBITER_GITHUB_WEBHOOK_SECRET", "hook-secret-value")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret-value")
    monkeypatch.setenv(
        "ARBITER_DATABASE_URL", "postgresql+asyncpg://arbiter:db-password@db:5432/arbiter"
    )
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for secret in ("ghp_realtokenvalue1234567890", "hook-secret-value", "sk-openai", "db-password"):
        assert secret not in out
    assert "ARBITER_GITHUB_TOKEN" in out and "***" in out
    assert "github: enabled (token)" in out
    assert "gitlab: disabled, set ARBITER_GITLAB_WEBHOOK_TOKEN and ARBITER_GITLAB_TOKEN" in out

    assert main(["config", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["platforms"]["gitlab"]["missing"] == [
        "ARBITER_GITLAB_WEBHOOK_TOKEN",
        "ARBITER_GITLAB_TOKEN",
    ]
    assert report["settings"]["ARBITER_DATABASE_URL"] == (
        "postgresql+asyncpg://arbiter:***@db:5432/arbiter"
    )


def test_unknown_prefixed_variables_are_reported() -> None:
    env = {"ARBITER_PORTT": "1", "ARBITER_PORT": "2", "ARBITER_TEST_X": "3", "HOME": "/"}
    assert unknown_variables(env) == ["ARBITER_PORTT"]


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("ARBITER_GITHUB_TOKN", "ARBITER_GITHUB_TOKEN"),
        ("ARBITER_WORKER_MAX_JOB", "ARBITER_WORKER_MAX_JOBS"),
        ("ARBITER_OPENAI_API_KEY", "OPENAI_API_KEY"),  # read without the prefix
        ("ARBITER_DATABSE_URL", "ARBITER_DATABASE_URL"),
        ("ARBITER_ZZZZZZZZ", None),
    ],
)
def test_an_unknown_variable_is_told_the_closest_setting(
    variable: str, closest: str | None
) -> None:
    (unknown,) = unknown_settings({variable: "1"}, env_file=None)
    assert (unknown.variable, unknown.closest) == (variable, closest)
    if closest:
        assert f"did you mean {closest}?" in unknown.warning()
    else:
        assert "`arbiter config` lists every setting" in unknown.warning()


def test_unknown_variables_in_the_env_file_are_reported_too(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ARBITER_PORT=8001\nARBITER_LOG_LEVL=DEBUG\n")
    found = unknown_settings({"ARBITER_BOT_NAMES": "x"}, env_file=env_file)
    assert [(u.variable, u.closest, u.source) for u in found] == [
        ("ARBITER_BOT_NAMES", "ARBITER_BOT_NAME", "environment"),
        ("ARBITER_LOG_LEVL", "ARBITER_LOG_LEVEL", str(env_file)),
    ]


def test_config_flags_unknown_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARBITER_GITHUB_TOKN", "ghp_typo")
    assert main(["config"]) == 0
    captured = capsys.readouterr()
    assert (
        "ARBITER_GITHUB_TOKN is not a setting (ignored): did you mean ARBITER_GITHUB_TOKEN?"
        in captured.err
    )
    assert main(["config", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unknown_variables"] == [
        {
            "variable": "ARBITER_GITHUB_TOKN",
            "closest": "ARBITER_GITHUB_TOKEN",
            "source": "environment",
        }
    ]


def test_mask_url() -> None:
    assert mask_url("postgresql+asyncpg://u:p%40ss@h/db") == "postgresql+asyncpg://u:***@h/db"
    assert mask_url("sqlite+aiosqlite:///./arbiter.db") == "sqlite+aiosqlite:///./arbiter.db"
    assert mask_url("mongodb://u:p@h1:1,h2:2/db?authSource=admin") == (
        "mongodb://u:***@h1:1,h2:2/db?authSource=admin"
    )
    assert mask_url("redis://:p@h/0") == "redis://:***@h/0"
    assert mask_url("postgresql://arbiter@db/x") == "postgresql://arbiter@db/x"  # no password
    assert mask_url("https://h/v1?key=k&Token=t#access_token=a") == (
        "https://h/v1?key=***&Token=***#access_token=***"
    )
    assert mask_url("https://h/p@th?q=1") == "https://h/p@th?q=1"  # an @ after the host
    assert mask_url("not a url at all") == "not a url at all"


@pytest.mark.parametrize(
    "variable", ["ARBITER_GITHUB_WEBHOOK_SECRET", "ARBITER_GITLAB_WEBHOOK_TOKEN"]
)
def test_a_blank_webhook_secret_is_no_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    """A blank HMAC key would verify anything: blank means unset, and the platform is off."""
    monkeypatch.setenv("ARBITER_GITHUB_TOKEN", "ghp_x")
    monkeypatch.setenv("ARBITER_GITLAB_TOKEN", "glpat-x")
    monkeypatch.setenv(variable, "")
    settings = load_settings()
    status = platform_status(settings)
    platform = "github" if "GITHUB" in variable else "gitlab"
    assert not status[platform].enabled
    assert variable in status[platform].missing
    (tmp_path / ".env").write_text(f"{variable}=   \n")
    monkeypatch.delenv(variable)
    assert not platform_status(load_settings())[platform].enabled
