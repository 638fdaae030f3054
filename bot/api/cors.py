"""Cross-origin access to the API, from ARBITER_CORS_ORIGINS.

The API authenticates with a bearer token the page sends itself, never with cookies, so no
answer ever carries `Access-Control-Allow-Credentials`. `*` in the list allows every origin
and is answered as `*`: the request's origin is never reflected for it.
"""

from __future__ import annotations

from collections.abc import Iterable

ALLOWED_HEADERS = "Authorization, Content-Type"
EXPOSED_HEADERS = "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
PREFLIGHT_MAX_AGE = "600"


class CorsPolicy:
    def __init__(self, origins: Iterable[str]) -> None:
        listed = [o.strip() for o in origins if o.strip()]
        self.any_origin = "*" in listed
        self.origins = frozenset(_normal(o) for o in listed if o != "*")

    def allowed(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for `origin`; None: not allowed."""
        if not origin:
            return None
        if self.any_origin:
            return "*"
        return origin if _normal(origin) in self.origins else None

    def headers(self, origin: str | None) -> dict[str, str]:
        """What an actual (not preflight) answer carries for `origin`."""
        allowed = self.allowed(origin)
        if allowed is None:
            return {}
        return {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        }

    def preflight(self, origin: str | None, methods: Iterable[str]) -> dict[str, str] | None:
        """The answer to a preflight from `origin` for a resource allowing `methods`."""
        allowed = self.allowed(origin)
        if allowed is None:
            return None
        return {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ", ".join(sorted(set(methods))),
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        }


def _normal(origin: str) -> str:
    """Origins compare without case and without a trailing slash, as browsers send them."""
    return origin.strip().rstrip("/").lower()
