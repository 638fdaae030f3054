"""app.yml, the manifest built from it, and `arbiter github-app manifest`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main
from bot.setup.manifest import APP_YML, ManifestError, build_manifest, load_app_definition
from platforms.github_manifest import github_web_url, new_app_url
from tests.conftest import ROOT

# The least the reviewer needs; docs/github-app.md says why for each.
LEAST_PERMISSIONS = {
    "pull_requests": "write",
    "issues": "write",
    "contents": "read",
    "statuses": "write",
    "metadata": "read",
}
EVENTS = {
    "pull_request",
    "issue_comment",
    "pull_request_review_comment",
    "installation",
    "installation_repositories",
}


def _app_yml() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "app.yml").read_text())
    return data


def test_app_yml_asks_for_the_least_permissions_and_the_events_handled() -> None:
    app = _app_yml()
    # The top-level app.yml readers find is the very file the package ships and reads.
    assert (ROOT / "app.yml").resolve() == Path(str(APP_YML)).resolve()
    assert app["default_permissions"] == LEAST_PERMISSIONS
    assert set(app["default_events"]) == EVENTS
    assert len(app["default_events"]) == len(EVENTS)


def test_every_permission_is_justified_in_the_docs() -> None:
    docs = (ROOT / "docs" / "github-app.md").read_text()
    for name, access in _app_yml()["default_permissions"].items():
        assert f"| `{name}` | {access} |" in docs, f"docs/github-app.md does not justify {name}"


def test_the_manifest_command_prints_json_matching_app_yml(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["github-app", "manifest"]) == 0
    captured = capsys.readouterr()
    manifest = json.loads(captured.out)
    app = _app_yml()
    assert manifest["default_events"] == app["default_events"]
    assert manifest["default_permissions"] == app["default_permissions"]
    assert manifest["name"] == app["name"] and manifest["url"] == app["url"]
    assert "hook_attributes" not in manifest  # no public URL: nothing to point GitHub at
    assert "ARBITER_PUBLIC_URL is not set" in captured.err


def test_the_manifest_command_uses_the_public_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARBITER_PUBLIC_URL", "https://arbiter.example.com/")
    assert main(["github-app", "manifest"]) == 0
    from_env = json.loads(capsys.readouterr().out)
    assert from_env["hook_attributes"] == {
        "url": "https://arbiter.example.com/webhooks/github",
        "active": True,
    }
    assert from_env["redirect_url"] == "https://arbiter.example.com/setup/callback"
    assert main(["github-app", "manifest", "--public-url", "https://other.example"]) == 0
    flag = json.loads(capsys.readouterr().out)
    assert flag["hook_attributes"]["url"] == "https://other.example/webhooks/github"
    assert main(["github-app", "manifest", "--public-url", "other.example"]) == 2


def test_the_installed_command_prints_the_same_manifest(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("arbiter")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    result = subprocess.run(
        [*command, "github-app", "manifest", "--public-url", "https://arbiter.example.com"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    expected = build_manifest(load_app_definition(), public_url="https://arbiter.example.com")
    assert json.loads(result.stdout) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("- a list", "must be a mapping"),
        ("name: x\ndefault_events: push\ndefault_permissions: {}", "`default_events`"),
        (
            "name: x\ndefault_events: [push]\ndefault_permissions: {contents: admin}",
            "read or write",
        ),
        ("default_events: []\ndefault_permissions: {}", "`name`"),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_an_unusable_app_yml_is_named_with_what_to_fix(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "app.yml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=complaint):
        load_app_definition(path)
    with pytest.raises(ManifestError, match="cannot read"):
        load_app_definition(tmp_path / "missing.yml")


@pytest.mark.parametrize(
    ("api", "web"),
    [
        ("https://api.github.com", "https://github.com"),
        ("https://github.example.com/api/v3", "https://github.example.com"),
        ("https://github.example.com/api/v3/", "https://github.example.com"),
        ("https://api.octo.ghe.com", "https://octo.ghe.com"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
    ],
)
def test_the_web_host_is_derived_from_the_api_base_url(api: str, web: str) -> None:
    assert github_web_url(api) == web


def test_the_form_goes_to_the_account_or_the_organization() -> None:
    web = "https://github.com"
    assert new_app_url(web, "s1") == "https://github.com/settings/apps/new?state=s1"
    assert (
        new_app_url(web, "s/2", "acme")
        == "https://github.com/organizations/acme/settings/apps/new?state=s%2F2"
    )
