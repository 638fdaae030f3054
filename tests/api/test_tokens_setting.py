"""ARBITER_API_TOKENS: both list forms, clear errors that never echo a token, and masking in
`arbiter config` and in the logs."""

from __future__ import annotations

import json

import pytest

from bot.cli import main
from bot.logs import Redactor
from config.settings import SettingsError, api_tokens, effective_settings, load_settings
from tests.api.conftest import ADMIN, READ


@pytest.mark.parametrize(
    "value",
    [
        f"{READ}:read,{ADMIN}:admin",
        f" {READ}:read , {ADMIN}:admin ",
        json.dumps([f"{READ}:read", f"{ADMIN}:admin"]),
    ],
)
def test_both_list_forms(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ARBITER_API_TOKENS", value)
    assert api_tokens(load_settings()) == [(READ, "read"), (ADMIN, "admin")]


def test_none_by_default() -> None:
    assert load_settings().api_tokens == []


def test_a_token_may_hold_colons() -> None:
    settings = load_settings(api_tokens="a:b:c:d-0123456789abcdef:admin")
    assert api_tokens(settings) == [("a:b:c:d-0123456789abcdef", "admin")]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (f"{READ}:root", "entry 1 does not end in :read or :admin"),
        (f"{READ}", "entry 1 does not end in :read or :admin"),
        (f"{ADMIN}:admin,short-one:read", "entry 2 is shorter than 16 characters"),
        (f"{ADMIN}:admin,{ADMIN}:read", "entry 2 is given twice"),
        ('["with a space in it 0123:read"]', "holds a space"),
    ],
)
def test_a_bad_entry_is_named_by_position_and_never_echoed(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("ARBITER_API_TOKENS", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "ARBITER_API_TOKENS" in message and says in message
    for secret in (READ, ADMIN, "short-one", "with a space"):
        assert secret not in message


def test_config_masks_the_tokens_and_keeps_the_roles(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARBITER_API_TOKENS", f"{READ}:read,{ADMIN}:admin")
    assert effective_settings(load_settings())["ARBITER_API_TOKENS"] == ["***:read", "***:admin"]
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert READ not in out and ADMIN not in out and "ARBITER_API_TOKENS" in out
    assert main(["config", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["ARBITER_API_TOKENS"] == ["***:read", "***:admin"]


def test_the_log_redactor_knows_the_tokens() -> None:
    settings = load_settings(api_tokens=f"{READ}:read")
    redactor = Redactor(settings.secret_values())
    assert READ not in redactor.scrub(f"Authorization: Bearer {READ}")
