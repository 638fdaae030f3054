"""GitHub's App manifest flow, the GitHub side: where the form goes, and the code exchange.

The set-up page posts a manifest to GitHub's web host (`new_app_url`); GitHub creates the App
and sends the browser back with a one-time code, which `convert_manifest_code` exchanges on the
API host for the App's id, private key and webhook secret. The exchange needs no credentials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from platforms.base import PlatformError

ENTERPRISE_API_PATH = "/api/v3"
API_VERSION = "2022-11-28"


def github_web_url(api_base_url: str) -> str:
    """The web host of a GitHub API base URL, where people (and forms) go.

    https://api.github.com → https://github.com; GitHub Enterprise Server's
    https://HOST/api/v3 → https://HOST; https://api.SUB.ghe.com → https://SUB.ghe.com.
    Any other URL is taken as both (a test's fake GitHub serves both on one host).
    """
    parts = urlsplit(api_base_url.rstrip("/"))
    netloc, path = parts.netloc, parts.path
    if path.endswith(ENTERPRISE_API_PATH):
        path = path[: -len(ENTERPRISE_API_PATH)]
    elif netloc.lower().startswith("api."):
        netloc = netloc[len("api.") :]
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def new_app_url(web_url: str, state: str, organization: str | None = None) -> str:
    """Where the manifest form posts: the personal account's new-App page, or an organization's."""
    owner = f"/organizations/{quote(organization, safe='')}" if organization else ""
    return f"{web_url.rstrip('/')}{owner}/settings/apps/new?state={quote(state, safe='')}"


@dataclass(frozen=True)
class CreatedApp:
    """What GitHub answers for a converted manifest code, as far as Arbiter uses it.

    The OAuth client id and secret are left out: Arbiter never signs users in.
    """

    id: int
    slug: str
    name: str
    html_url: str
    owner: str
    pem: str = field(repr=False)
    webhook_secret: str = field(repr=False)

    @property
    def install_url(self) -> str:
        """GitHub's page for installing the App on an account's repositories."""
        return f"{self.html_url.rstrip('/')}/installations/new"


async def convert_manifest_code(
    session: aiohttp.ClientSession, api_base_url: str, code: str, *, request_timeout: float
) -> CreatedApp:
    """`POST /app-manifests/{code}/conversions`: the new App's credentials, or PlatformError.

    A code works once, for an hour. Error messages never quote the code or the answer's secrets.
    """
    url = f"{api_base_url.rstrip('/')}/app-manifests/{quote(code, safe='')}/conversions"
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
    try:
        async with session.post(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=request_timeout)
        ) as response:
            status, body = response.status, await response.read()
    except TimeoutError:
        raise PlatformError(
            f"GitHub did not answer the manifest code exchange within {request_timeout:g} s "
            "(ARBITER_INTEGRATION_TIMEOUT)"
        ) from None
    except aiohttp.ClientError as exc:
        raise PlatformError(
            f"could not reach GitHub at {api_base_url}: {type(exc).__name__}"
        ) from None
    data = _json(body)
    if status != 201:
        message = data.get("message") if isinstance(data, dict) else None
        raise PlatformError(
            f"GitHub refused the manifest code: {status} {message or 'no message'}"
            + (" (codes work once, within an hour)" if status == 404 else ""),
            status=status,
        )
    return _created_app(data)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _created_app(data: Any) -> CreatedApp:
    if not isinstance(data, dict):
        raise PlatformError("GitHub's answer to the manifest code exchange is not a JSON object")
    missing = [
        name
        for name, kind in (
            ("id", int),
            ("slug", str),
            ("html_url", str),
            ("pem", str),
            ("webhook_secret", str),
        )
        if not isinstance(data.get(name), kind) or not data.get(name)
    ]
    if missing:
        raise PlatformError(
            "GitHub's answer to the manifest code exchange lacks " + ", ".join(missing)
        )
    owner = data.get("owner")
    login = owner.get("login") if isinstance(owner, dict) else None
    return CreatedApp(
        id=int(data["id"]),
        slug=str(data["slug"]),
        name=str(data.get("name") or data["slug"]),
        html_url=str(data["html_url"]),
        owner=str(login or ""),
        pem=str(data["pem"]),
        webhook_secret=str(data["webhook_secret"]),
    )
