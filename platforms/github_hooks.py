"""GitHub's record of its webhook deliveries, and asking it to send one again.

The GitHub App's webhook: `GET /app/hook/deliveries` (paged by a `cursor` in the Link header,
newest first) and `POST /app/hook/deliveries/{id}/attempts`, both with the App's JWT. A
repository webhook (token mode, ARBITER_GITHUB_HOOK_IDS): the same under
`/repos/{owner}/{repo}/hooks/{hook_id}`, with the token (admin:repo_hook). GitHub keeps
deliveries for three days and never retries a failed one by itself; a redelivery carries the
same `X-GitHub-Delivery` (the item's `guid`) and is listed as a new item with `redelivery`.

Requests travel through the platform's `Transport`: rate limits, retries and timeouts as for
every other GitHub call; the first page answers 304 to its ETag when nothing was delivered.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import aclosing
from typing import Any

from gidgethub import HTTPException

from platforms.base import Deliveries, HookDelivery, OpenPullRequest
from platforms.github_auth import parse_expiry
from platforms.github_transport import Transport, platform_error

PER_PAGE = 100
Hook = tuple[str, int]  # a repository webhook: ("owner/repo", hook id); None: the App's
Access = tuple[Transport, str | None, str | None]  # a transport, and the JWT or the token


def deliveries_path(hook: Hook | None) -> str:
    if hook is None:
        return "/app/hook/deliveries"
    repo, hook_id = hook
    owner, _, name = repo.partition("/")
    return f"/repos/{owner}/{name}/hooks/{hook_id}/deliveries"


def describe(hook: Hook | None) -> str:
    return "the GitHub App's webhook" if hook is None else f"webhook {hook[1]} of {hook[0]}"


def delivery_from(item: Mapping[str, Any]) -> HookDelivery:
    """A delivery item (`hook-delivery-item`) as a HookDelivery."""
    code = item.get("status_code")
    status_code = int(code) if isinstance(code, int) and not isinstance(code, bool) else None
    status = str(item.get("status") or "")
    delivered = item.get("delivered_at")
    action = item.get("action")
    return HookDelivery(
        id=int(item["id"]),
        guid=str(item.get("guid") or ""),
        event=str(item.get("event") or ""),
        action=action if isinstance(action, str) and action else None,
        ok=status == "OK" and status_code is not None and 200 <= status_code < 300,
        status=status,
        status_code=status_code,
        delivered_at=parse_expiry(delivered) if isinstance(delivered, str) else None,
        redelivery=bool(item.get("redelivery")),
    )


def open_pull_request_from(item: Mapping[str, Any]) -> OpenPullRequest:
    """A pull request of `GET /repos/{o}/{r}/pulls` as an OpenPullRequest."""
    updated = item.get("updated_at") or item.get("created_at")
    return OpenPullRequest(
        number=int(item["number"]),
        head_sha=str((item.get("head") or {}).get("sha") or ""),
        updated_at=parse_expiry(updated) if isinstance(updated, str) else 0.0,
        draft=bool(item.get("draft")),
    )


async def list_deliveries(
    access: Access, hook: Hook | None, *, newer_than: float | None, limit: int
) -> Deliveries:
    """The deliveries of `hook`, newest first, back to `newer_than` (UNIX seconds; None: as
    far back as GitHub keeps them), at most `limit`."""
    http, jwt, token = access
    url = f"{deliveries_path(hook)}?per_page={min(PER_PAGE, max(limit, 1))}"
    found: list[HookDelivery] = []
    complete = True
    try:
        async with aclosing(http.getiter(url, jwt=jwt, oauth_token=token)) as pages:
            async for raw in pages:
                item = delivery_from(raw)
                if newer_than is not None and (item.delivered_at or 0.0) < newer_than:
                    break
                if len(found) >= limit:
                    complete = False
                    break
                found.append(item)
    except HTTPException as exc:
        raise platform_error(f"list the deliveries of {describe(hook)}", exc) from exc
    return Deliveries(tuple(found), complete)


async def redeliver(access: Access, hook: Hook | None, delivery_id: int) -> None:
    """Ask GitHub to send delivery `delivery_id` again (it answers 202 and sends it soon)."""
    http, jwt, token = access
    url = f"{deliveries_path(hook)}/{delivery_id}/attempts"
    try:
        await http.post(url, data=b"", jwt=jwt, oauth_token=token)
    except HTTPException as exc:
        raise platform_error(f"redeliver delivery {delivery_id} of {describe(hook)}", exc) from exc
