"""GitHub App set-up: the manifest (app.yml), the /setup flow, and `arbiter github-app`.

`add_setup_routes(app, runtime)` adds `GET /setup` and `GET /setup/callback`;
`build_manifest(load_app_definition(), public_url=...)` is the one manifest both use.
"""

from __future__ import annotations

from bot.setup.flow import SetupFlow, add_setup_routes
from bot.setup.manifest import ManifestError, build_manifest, load_app_definition

__all__ = [
    "ManifestError",
    "SetupFlow",
    "add_setup_routes",
    "build_manifest",
    "load_app_definition",
]
