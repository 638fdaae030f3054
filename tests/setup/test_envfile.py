"""Saving credentials: .env keeps every other byte, says what it replaced; it and the keys are
0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.setup.envfile import dotenv_value, update_env_file, write_private_key
from config.settings import load_settings

VALUES = {
    "ARBITER_GITHUB_APP_ID": "42",
    "ARBITER_GITHUB_PRIVATE_KEY_PATH": "/srv/arbiter/app.private-key.pem",
    "ARBITER_GITHUB_WEBHOOK_SECRET": "0123abcd",
}


def test_a_new_env_file_is_created_private_and_reads_back(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    update = update_env_file(env, VALUES, comment="GitHub App demo")
    assert update.created and update.added == tuple(VALUES) and not update.replaced
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert env.read_text() == (
        "# GitHub App demo\n"
        "ARBITER_GITHUB_APP_ID=42\n"
        "ARBITER_GITHUB_PRIVATE_KEY_PATH=/srv/arbiter/app.private-key.pem\n"
        "ARBITER_GITHUB_WEBHOOK_SECRET=0123abcd\n"
    )
    settings = load_settings()  # the working directory is tmp_path
    assert settings.github_app_id == "42"
    assert settings.github_webhook_secret == SecretStr("0123abcd")


def test_everything_else_stays_byte_for_byte(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    original = (
        b"# settings\r\n"
        b"OPENAI_API_KEY='sk-x # not a comment'\r\n"
        b"export arbiter_github_app_id = 7   # the old App\r\n"
        b"CAFE=caf\xe9\r\n"  # Latin-1, not UTF-8: kept as it was
        b"ARBITER_LOG_LEVEL=DEBUG"  # no newline at the end
    )
    env.write_bytes(original)
    os.chmod(env, 0o640)
    update = update_env_file(env, VALUES, comment="new App")
    assert update.replaced == ("ARBITER_GITHUB_APP_ID",)
    assert update.added == ("ARBITER_GITHUB_PRIVATE_KEY_PATH", "ARBITER_GITHUB_WEBHOOK_SECRET")
    assert env.read_bytes() == (
        b"# settings\r\n"
        b"OPENAI_API_KEY='sk-x # not a comment'\r\n"
        b"export arbiter_github_app_id = 42\r\n"
        b"CAFE=caf\xe9\r\n"
        b"ARBITER_LOG_LEVEL=DEBUG\r\n"
        b"# new App\r\n"
        b"ARBITER_GITHUB_PRIVATE_KEY_PATH=/srv/arbiter/app.private-key.pem\r\n"
        b"ARBITER_GITHUB_WEBHOOK_SECRET=0123abcd\r\n"
    )
    # Rewritten in place (owner, links kept), and no longer readable by the group.
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert update.tightened_from == 0o640
    assert "OPENAI_API_KEY" in update.names and "ARBITER_LOG_LEVEL" in update.names


def test_the_same_value_is_left_alone_and_an_empty_one_filled(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    original = 'ARBITER_GITHUB_WEBHOOK_SECRET="0123abcd"\nARBITER_GITHUB_APP_ID=\n'
    env.write_text(original)
    update = update_env_file(env, VALUES)
    assert update.unchanged == ("ARBITER_GITHUB_WEBHOOK_SECRET",)
    assert update.added == ("ARBITER_GITHUB_APP_ID", "ARBITER_GITHUB_PRIVATE_KEY_PATH")
    assert not update.replaced
    assert env.read_text() == (
        'ARBITER_GITHUB_WEBHOOK_SECRET="0123abcd"\n'
        "ARBITER_GITHUB_APP_ID=42\n"
        "ARBITER_GITHUB_PRIVATE_KEY_PATH=/srv/arbiter/app.private-key.pem\n"
    )
    before = env.read_bytes()
    again = update_env_file(env, VALUES)
    assert again.unchanged == tuple(VALUES) and env.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o604])
def test_an_existing_env_file_readable_by_others_is_made_private(tmp_path: Path, mode: int) -> None:
    env = tmp_path / ".env"
    env.write_text("ARBITER_LOG_LEVEL=DEBUG\n")
    os.chmod(env, mode)
    update = update_env_file(env, VALUES)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert update.tightened_from == mode
    # Already private, or unchanged: nothing to say.
    again = update_env_file(env, VALUES)
    assert again.tightened_from is None and again.unchanged == tuple(VALUES)


def test_a_private_env_file_holding_the_secret_already_is_made_private_too(
    tmp_path: Path,
) -> None:
    env = tmp_path / ".env"
    env.write_text("".join(f"{name}={value}\n" for name, value in VALUES.items()))
    os.chmod(env, 0o644)
    before = env.read_bytes()
    update = update_env_file(env, VALUES)
    assert update.unchanged == tuple(VALUES) and env.read_bytes() == before
    assert stat.S_IMODE(env.stat().st_mode) == 0o600 and update.tightened_from == 0o644


def test_no_secret_goes_into_a_file_others_can_read_and_that_cannot_be_made_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text("ARBITER_LOG_LEVEL=DEBUG\n")
    os.chmod(env, 0o644)

    def not_the_owner(self: Path, mode: int) -> None:  # as for a file another user owns
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "chmod", not_the_owner)
    with pytest.raises(OSError, match=r"mode 0644\) and must be made private \(chmod 600\)"):
        update_env_file(env, VALUES)
    assert env.read_text() == "ARBITER_LOG_LEVEL=DEBUG\n"


def test_a_new_env_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        update = update_env_file(tmp_path / ".env", VALUES)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(update.path.stat().st_mode) == 0o600 and update.tightened_from is None


def test_a_path_with_spaces_and_quotes_reads_back_exactly(tmp_path: Path) -> None:
    awkward = str(tmp_path / 'my "keys" #1' / "app key.pem")
    update_env_file(tmp_path / ".env", {"ARBITER_GITHUB_PRIVATE_KEY_PATH": awkward})
    assert str(load_settings().github_private_key_path) == awkward


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("plain", "plain"),
        (" spaced  # comment", "spaced"),
        ("'single # kept'", "single # kept"),
        ('"a \\"quoted\\" \\\\ value"', 'a "quoted" \\ value'),
        ("", ""),
    ],
)
def test_dotenv_values_are_read_as_python_dotenv_reads_them(raw: str, value: str) -> None:
    assert dotenv_value(raw) == value


def test_the_key_file_is_private_from_the_start_and_never_overwritten(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even with a permissive umask
    try:
        first = write_private_key(tmp_path, "arbiter.2026-01-02", "PEM ONE\n")
        second = write_private_key(tmp_path, "arbiter.2026-01-02", "PEM TWO\n")
    finally:
        os.umask(old_umask)
    assert first.name == "arbiter.2026-01-02.private-key.pem"
    assert second.name == "arbiter.2026-01-02-2.private-key.pem"
    assert first.read_text() == "PEM ONE\n" and second.read_text() == "PEM TWO\n"
    for path in (first, second):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_hostile_slug_cannot_leave_the_directory(tmp_path: Path) -> None:
    path = write_private_key(tmp_path, "../../etc/evil", "PEM\n")
    assert path.parent == tmp_path
    assert path.name == "etc-evil.private-key.pem"
