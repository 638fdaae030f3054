"""The set-up flow's routes: `GET /setup` (the page that posts the manifest to GitHub) and
`GET /setup/callback` (where GitHub sends the browser back with a one-time code).

Open only while this process has no GitHub App credentials and serves GitHub in no other way;
afterwards both answer 404. The `state` sent to GitHub is unguessable, single-use and expires
with GitHub's own one-hour limit, so a callback that did not start on this page is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from bot.logs import get_logger
from bot.setup import pages
from bot.setup.envfile import EnvUpdate, update_env_file, write_private_key
from bot.setup.manifest import APP_YML, ManifestError, build_manifest, load_app_definition
from config.settings import SettingsError, env_name
from platforms.base import PlatformError
from platforms.github_manifest import (
    CreatedApp,
    convert_manifest_code,
    github_web_url,
    new_app_url,
)

if TYPE_CHECKING:
    from bot.runtime import Runtime

STATE_TTL_SECONDS = 3600.0  # GitHub wants the whole flow done within an hour
MAX_PENDING_STATES = 64  # each page view issues one; the oldest are dropped beyond this
MAX_CODE_LENGTH = 200
ORGANIZATION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}")

APP_ID = env_name("github_app_id")
KEY_PATH = env_name("github_private_key_path")
WEBHOOK_SECRET = env_name("github_webhook_secret")
INLINE_KEY = env_name("github_private_key")


class SetupStates:
    """The `state` values this process handed out: unguessable, single-use, short-lived."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        ttl: float = STATE_TTL_SECONDS,
        capacity: int = MAX_PENDING_STATES,
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._capacity = capacity
        self._issued: OrderedDict[str, float] = OrderedDict()

    def issue(self) -> str:
        state = secrets.token_urlsafe(32)
        self._issued[state] = self._clock()
        while len(self._issued) > self._capacity:
            self._issued.popitem(last=False)
        return state

    def consume(self, state: str | None) -> bool:
        """True once for a state issued here within the TTL; False for anything else."""
        if not state:
            return False
        issued = self._issued.pop(state, None)
        return issued is not None and self._clock() - issued <= self._ttl


class SetupFlow:
    """The two set-up routes of one process, bound to its runtime."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        env_file: Path | None = None,
        app_yml: Traversable = APP_YML,
        web_url: str | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.env_file = (env_file or Path(".env")).absolute()
        self.app_yml = app_yml
        self._web_url = web_url
        self._environ = environ
        self._clock = clock
        self.states = SetupStates(clock=clock)
        configured = runtime.settings.setup_token
        # Who may create this server's App: whoever can read its log (or set the token).
        self.token = configured.get_secret_value() if configured else secrets.token_urlsafe(18)
        self._token_configured = configured is not None
        self.completed = False
        self._lock = asyncio.Lock()
        self.log = get_logger(component="setup")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/setup", self.page)
        app.router.add_get("/setup/callback", self.callback)
        app.on_startup.append(self._announce)

    @property
    def web_url(self) -> str:
        """GitHub's web host: ARBITER_GITHUB_BASE_URL's, unless given."""
        return self._web_url or github_web_url(self.runtime.settings.github_base_url)

    def available(self) -> bool:
        """Open while no App is configured and GitHub is not served with a token either (so a
        stranger cannot swap the webhook secret of a working server)."""
        github = self.runtime.platforms["github"]
        return not self.completed and github.mode != "app" and not github.enabled

    # --- GET /setup -------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        if not self.available():
            raise web.HTTPNotFound()
        if not secrets.compare_digest(request.query.get("token", ""), self.token):
            self.log.warning("set-up page refused: missing or wrong token", remote=request.remote)
            return pages.message(
                "Open the set-up link from Arbiter's log",
                "This page creates the GitHub App this server will trust, so it asks for the "
                "one-time token that Arbiter printed in its log at start (or the value of "
                "ARBITER_SETUP_TOKEN). Open the link from the log line \u201cno GitHub App "
                "configured\u201d.",
                status=403,
                kind="warn",
            )
        public_url = self.runtime.settings.public_url
        if not public_url:
            return pages.message(
                "Set ARBITER_PUBLIC_URL first",
                "ARBITER_PUBLIC_URL is not set. Set it to the URL where GitHub reaches this "
                "server (for example https://arbiter.example.com), restart Arbiter, and open "
                "this page again: GitHub needs it for the App's webhook and to send you back.",
                status=200,
                kind="warn",
            )
        try:
            manifest = build_manifest(load_app_definition(self.app_yml), public_url=public_url)
        except ManifestError as exc:
            self.log.error("app manifest unusable", error=str(exc))
            return pages.message("The App manifest cannot be read", str(exc), status=500)
        requested = request.query.get("organization", "").strip()
        organization = requested if ORGANIZATION.fullmatch(requested) else None
        error_html = ""
        if requested and organization is None:
            error_html = (
                '<div class="bad">'
                + pages.escape(f"“{requested}” is not an organization name on GitHub: ")
                + "letters, digits and single hyphens, at most 39 characters.</div>"
            )
        web_url = self.web_url
        content = pages.render(
            "setup.html",
            github_host=urlsplit(web_url).netloc or web_url,
            organization=organization or requested,
            token=self.token,
            organization_error_html=error_html,
            action=new_app_url(web_url, self.states.issue(), organization),
            manifest_json=json.dumps(manifest, separators=(",", ":")),
            owner_label=f"the organization {organization}" if organization else "your account",
            permissions_html="\n".join(
                f"  <tr><td>{pages.escape(pages.PERMISSION_LABELS.get(name, name))}</td>"
                f"<td>{pages.escape(access)}</td></tr>"
                for name, access in manifest["default_permissions"].items()
            ),
            events_html=", ".join(
                f"<code>{pages.escape(event)}</code>" for event in manifest["default_events"]
            ),
            webhook_url=manifest["hook_attributes"]["url"],
            redirect_url=manifest["redirect_url"],
            manifest_pretty=json.dumps(manifest, indent=2),
            env_file=self.env_file,
        )
        return pages.page("Create the GitHub App", content, form_origin=_origin(web_url))

    # --- GET /setup/callback ----------------------------------------------------------------

    async def callback(self, request: web.Request) -> web.StreamResponse:
        if not self.available():
            raise web.HTTPNotFound()
        async with self._lock:  # two tabs finishing at once: the second one finds it closed
            if not self.available():
                raise web.HTTPNotFound()
            if not self.states.consume(request.query.get("state")):
                self.log.warning("set-up callback refused: unknown, used or expired state")
                return pages.message(
                    "This set-up link is not valid",
                    "The callback's state is missing, unknown, already used or expired, so it "
                    "did not come from this server's set-up page. Nothing was saved.",
                    status=403,
                    next_html=_start_again(),
                )
            code = request.query.get("code", "")
            if not code or len(code) > MAX_CODE_LENGTH:
                return pages.message(
                    "GitHub sent no code",
                    "The callback has no usable code, so there is nothing to exchange for "
                    "the App's credentials. Nothing was saved.",
                    status=400,
                    next_html=_start_again(),
                )
            return await self._finish(code)

    async def _finish(self, code: str) -> web.Response:
        settings = self.runtime.settings
        try:
            app = await convert_manifest_code(
                self.runtime.session,
                settings.github_base_url,
                code,
                request_timeout=settings.integration_timeout,
            )
        except PlatformError as exc:
            self.log.error("github app manifest code exchange failed", error=str(exc))
            return pages.message(
                "GitHub did not hand over the App's credentials",
                f"{exc}. Nothing was saved.",
                status=502,
                next_html=_start_again(),
            )
        try:
            key_path, update = self._save(app)
        except OSError as exc:
            self.log.error("github app credentials not saved", app_id=app.id, error=str(exc))
            return pages.message(
                "The App was created but its credentials could not be saved",
                f"{exc.strerror or exc} ({exc.filename or self.env_file}). The App "
                f"“{app.name}” exists on GitHub: generate a private key in its settings and "
                f"set {APP_ID}={app.id}, {KEY_PATH} and {WEBHOOK_SECRET} by hand "
                "(docs/github-app.md).",
                status=500,
            )
        self.completed = True
        warnings = self._warnings(update)
        live_reason = self._use(app, key_path)
        self.log.info(
            "github app created",
            app_id=app.id,
            slug=app.slug,
            owner=app.owner,
            env_file=str(update.path),
            key_file=str(key_path),
            added=list(update.added),
            replaced=list(update.replaced),
            unchanged=list(update.unchanged),
            live=live_reason is None,
        )
        for warning in warnings:
            self.log.warning(warning)
        return self._done_page(app, key_path, update, warnings, live_reason)

    def _save(self, app: CreatedApp) -> tuple[Path, EnvUpdate]:
        today = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%d")
        key_path = write_private_key(self.env_file.parent, f"{app.slug}.{today}", app.pem)
        update = update_env_file(
            self.env_file,
            {APP_ID: str(app.id), KEY_PATH: str(key_path), WEBHOOK_SECRET: app.webhook_secret},
            comment=f"GitHub App {app.slug} (id {app.id}), saved by Arbiter's /setup on {today}",
        )
        return key_path, update

    def _warnings(self, update: EnvUpdate) -> list[str]:
        environ = os.environ if self._environ is None else self._environ
        in_environment = {name.upper() for name in environ}
        warnings = [
            f"{name} already had a different value in {update.path}; it was replaced."
            for name in update.replaced
        ]
        if update.tightened_from is not None:
            warnings.append(
                f"{update.path} was readable by other users (mode {update.tightened_from:04o}); "
                "it is now 0600, as a file holding secrets must be."
            )
        warnings += [
            f"{name} is also set in this process's environment, which wins over .env: unset "
            "it before Arbiter restarts, or the old value comes back."
            for name in (APP_ID, KEY_PATH, WEBHOOK_SECRET, INLINE_KEY)
            if name in in_environment
        ]
        if INLINE_KEY in update.names:
            warnings.append(
                f"{INLINE_KEY} is set in {update.path} and wins over {KEY_PATH}: delete that "
                "line before Arbiter restarts."
            )
        return warnings

    def _use(self, app: CreatedApp, key_path: Path) -> str | None:
        """Switch the running process to the App; None when done, else why a restart is due."""
        try:
            self.runtime.use_github_app(str(app.id), key_path, app.webhook_secret)
        except SettingsError as exc:
            self.log.error("github app saved, but not usable without a restart", error=str(exc))
            return str(exc)
        return None

    def _done_page(
        self,
        app: CreatedApp,
        key_path: Path,
        update: EnvUpdate,
        warnings: list[str],
        live_reason: str | None,
    ) -> web.Response:
        def outcome(name: str) -> str:
            if name in update.replaced:
                return "replaced"
            return "already set" if name in update.unchanged else "added"

        saved = [
            f"{APP_ID}={app.id} ({outcome(APP_ID)})",
            f"{KEY_PATH}={key_path} ({outcome(KEY_PATH)})",
            f"{WEBHOOK_SECRET} ({outcome(WEBHOOK_SECRET)}; not shown here)",
        ]
        if live_reason is None:
            live_html = (
                '<p class="ok">Arbiter is using the App now: no restart needed. Webhooks '
                "signed with its secret are accepted from this moment.</p>"
            )
        else:
            live_html = (
                '<div class="warn">The credentials are saved, but this process could not '
                f"switch to them: {pages.escape(live_reason)}. Restart Arbiter.</div>"
            )
        warnings_html = ""
        if warnings:
            warnings_html = (
                '<h2>Check these</h2>\n<div class="warn"><ul class="plain">\n'
                + pages.items(warnings)
                + "\n</ul></div>"
            )
        content = pages.render(
            "done.html",
            app_name=app.name,
            app_slug=app.slug,
            app_id=app.id,
            app_owner=app.owner or "you",
            install_url=app.install_url,
            live_html=live_html,
            env_file=update.path,
            key_file=key_path,
            saved_html=pages.items(saved),
            warnings_html=warnings_html,
        )
        return pages.page("GitHub App ready", content)

    # --- Start-up ---------------------------------------------------------------------------

    async def _announce(self, app: web.Application) -> None:
        if not self.available():
            return
        public_url = self.runtime.settings.public_url
        token = "<ARBITER_SETUP_TOKEN>" if self._token_configured else self.token
        if public_url:
            self.log.info(
                "no GitHub App configured: open the set-up page to create one",
                url=f"{public_url}/setup?token={token}",
            )
        else:
            self.log.info(
                "no GitHub App configured: set ARBITER_PUBLIC_URL, then open /setup to create one",
                path=f"/setup?token={token}",
            )


def add_setup_routes(app: web.Application, runtime: Runtime, **options: Any) -> SetupFlow:
    """`/setup` and `/setup/callback` on `app`; `options` go to SetupFlow (tests use them)."""
    flow = SetupFlow(runtime, **options)
    flow.add_routes(app)
    return flow


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _start_again() -> str:
    return '<p><a class="button" href="../setup">Start again at /setup</a></p>'
