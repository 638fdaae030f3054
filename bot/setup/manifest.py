"""The GitHub App manifest: `app.yml` (shipped in this package; the repository's top-level
`app.yml` is a link to it), plus this server's URLs.

One builder for both the set-up page and `arbiter github-app manifest`, so what people create
by hand and what /setup creates cannot drift apart.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import yaml

APP_YML = resources.files("bot.setup") / "app.yml"
WEBHOOK_PATH = "/webhooks/github"
CALLBACK_PATH = "/setup/callback"
ACCESS_LEVELS = frozenset({"read", "write"})


class ManifestError(Exception):
    """app.yml is missing or not a usable manifest; the message says what to fix."""


def load_app_definition(path: Traversable = APP_YML) -> dict[str, Any]:
    """app.yml, checked: a name, a list of events and a map of permissions to read or write."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(
            f"cannot read the App manifest {str(path)!r}: {exc.strerror or exc} "
            "(app.yml ships inside Arbiter's bot.setup package: reinstall Arbiter)"
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} must be a mapping of manifest fields")
    name, events, permissions = (
        data.get("name"),
        data.get("default_events"),
        data.get("default_permissions"),
    )
    if not isinstance(name, str) or not name.strip():
        raise ManifestError(f"{path}: `name` must be a non-empty string")
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise ManifestError(f"{path}: `default_events` must be a list of event names")
    if not isinstance(permissions, dict) or not all(
        isinstance(k, str) and v in ACCESS_LEVELS for k, v in permissions.items()
    ):
        raise ManifestError(
            f"{path}: `default_permissions` must map permission names to read or write"
        )
    return data


def build_manifest(app: dict[str, Any], *, public_url: str | None) -> dict[str, Any]:
    """The manifest GitHub receives: app.yml's fields, with the webhook and redirect URLs of
    this server when its public URL is known (without one, GitHub would need them typed in)."""
    manifest: dict[str, Any] = {
        key: app[key]
        for key in ("name", "url", "description", "public")
        if app.get(key) is not None
    }
    manifest["default_events"] = list(app["default_events"])
    manifest["default_permissions"] = dict(app["default_permissions"])
    if public_url:
        base = public_url.rstrip("/")
        manifest.setdefault("url", base)
        manifest["hook_attributes"] = {"url": base + WEBHOOK_PATH, "active": True}
        manifest["redirect_url"] = base + CALLBACK_PATH
    return manifest
