"""The set-up pages: small HTML templates beside this module, filled with escaped values.

`render(name, **values)` escapes every value except those whose name ends in `_html`, which
callers build from escaped pieces (`escape`, `items`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from functools import cache
from importlib import resources
from string import Template

from aiohttp import web

PERMISSION_LABELS = {
    "pull_requests": "Pull requests",
    "issues": "Issues",
    "contents": "Contents",
    "statuses": "Commit statuses",
    "metadata": "Metadata",
    "members": "Members (organization)",
}


@cache
def _template(name: str) -> Template:
    return Template(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def render(name: str, **values: object) -> str:
    """Template `name` with `values`, escaped unless their name ends in `_html`."""
    filled = {k: (str(v) if k.endswith("_html") else escape(v)) for k, v in values.items()}
    return _template(name).substitute(filled)


def items(texts: Iterable[str], *, tag: str = "li") -> str:
    return "\n".join(f"<{tag}>{escape(text)}</{tag}>" for text in texts)


def page(
    title: str, content_html: str, *, status: int = 200, form_origin: str | None = None
) -> web.Response:
    """A whole page, with headers that keep it out of caches, frames and Referer headers (the
    callback's URL carries the one-time code)."""
    form_action = "'self'" + (f" {form_origin}" if form_origin else "")
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
            f"frame-ancestors 'none'; form-action {form_action}"
        ),
    }
    body = render("layout.html", title=title, content_html=content_html)
    return web.Response(text=body, content_type="text/html", status=status, headers=headers)


def message(
    title: str, text: str, *, status: int, kind: str = "bad", next_html: str = ""
) -> web.Response:
    """A page that says one thing: an error, or what to do first."""
    content = render("message.html", heading=title, kind=kind, message=text, next_html=next_html)
    return page(title, content, status=status)
