"""The baseline of `bench.webhooks --baseline`: bare aiohttp and gidgethub's signature check.

    python -m bench.bare_server PORT SECRET

What every webhook receiver must do at the least (read the body, check its HMAC-SHA256 and
parse its JSON with gidgethub's `Event.from_http`) and nothing more: it stores nothing, so a
delivery it answered is lost if the process dies. Arbiter's intake is measured against it in
the same run, on the same core, so the ratio means the same on any machine.
"""

from __future__ import annotations

import sys

from aiohttp import web
from gidgethub import ValidationFailure, sansio


def app(secret: str) -> web.Application:
    async def github(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = sansio.Event.from_http(request.headers, body, secret=secret)
        except ValidationFailure as exc:
            return web.json_response({"error": str(exc)}, status=401)
        return web.json_response({"delivery_id": event.delivery_id}, status=202)

    async def ready(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    application = web.Application(client_max_size=25 * 1024 * 1024)
    application.router.add_post("/webhooks/github", github)
    application.router.add_get("/health/ready", ready)
    return application


if __name__ == "__main__":
    port, secret = int(sys.argv[1]), sys.argv[2]
    web.run_app(app(secret), host="127.0.0.1", port=port, access_log=None, print=None)
