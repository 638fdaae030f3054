"""The static dashboard, served at `/`: the files of `bot/dashboard/` (shipped in the `bot`
package; the repository's top-level `dashboard/` is a link to it).

No build step: the files are served as they are. The same files work from any static host
or CDN, pointed at this server's API by `config.js`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web


def _installed_directory() -> Path:
    # pip installs a wheel as plain files, so this is the package's own folder, not a copy.
    with resources.as_file(resources.files("bot") / "dashboard") as path:
        return path


DASHBOARD_DIR = _installed_directory()
# Scripts and styles only from this server; the API may live elsewhere (config.js).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' http: https:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


def add_dashboard_routes(app: web.Application, directory: Path = DASHBOARD_DIR) -> None:
    """`/` and each file of the dashboard (what a browser may load: pages, scripts, styles)."""
    files = (
        sorted(
            p
            for p in directory.rglob("*")
            if p.is_file() and p.suffix in _TYPES and not p.name.startswith(".")
        )
        if directory.is_dir()
        else []
    )
    index = directory / "index.html"
    app.router.add_get("/", _serve(index) if index in files else _missing)
    for path in files:
        app.router.add_get("/" + path.relative_to(directory).as_posix(), _serve(path))


def _serve(path: Path) -> Callable[[web.Request], Any]:
    content_type = _TYPES[path.suffix]

    async def serve(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers={**HEADERS, "Content-Type": content_type})

    return serve


async def _missing(request: web.Request) -> web.Response:
    return web.Response(
        status=404,
        text="The dashboard is not installed with this copy of Arbiter. The API is at /api/.\n",
    )
