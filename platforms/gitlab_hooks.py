"""GitLab's record of a project webhook's events, and the open merge requests, as ours.

GitLab 17.3 lists a project webhook's events of the last seven days
(`GET /projects/:id/hooks/:hook_id/events`, newest first, `status[]` filters by code or by
`client_failure` / `server_failure`, the latter including "internal error": no answer at
all); 17.4 resends one (`POST …/events/:hook_event_id/resend`, at most five a minute per
webhook and user). An event carries its request's headers and body but no time; its
`Idempotency-Key`, kept by a resend, is the delivery id Arbiter stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from platforms.base import HookDelivery, OpenPullRequest

# The headers GitLab names a delivery by, in the order Arbiter's webhook receiver reads them.
DELIVERY_HEADERS = ("Idempotency-Key", "X-Gitlab-Webhook-UUID", "X-Gitlab-Event-UUID")
FAILED = ("client_failure", "server_failure")


def event_from(item: Mapping[str, Any]) -> HookDelivery:
    """A webhook event (`GET …/hooks/:hook_id/events`) as a HookDelivery."""
    headers = item.get("request_headers")
    headers = headers if isinstance(headers, dict) else {}
    by_name = {str(k).lower(): str(v) for k, v in headers.items()}
    guid = next((by_name[h.lower()][:255] for h in DELIVERY_HEADERS if by_name.get(h.lower())), "")
    payload = item.get("request_data")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = None
    body = payload if isinstance(payload, dict) else None
    attributes = (body or {}).get("object_attributes")
    action = attributes.get("action") if isinstance(attributes, dict) else None
    status = str(item.get("response_status") or "")
    code = int(status) if status.isdigit() else None
    kind = (body or {}).get("object_kind")
    return HookDelivery(
        id=int(item["id"]),
        guid=guid,
        event=str(kind or item.get("trigger") or ""),
        action=action if isinstance(action, str) else None,
        ok=code is not None and 200 <= code < 300,
        status=status,
        status_code=code,
        payload=body,
    )


def open_merge_request_from(item: Mapping[str, Any]) -> OpenPullRequest:
    """A merge request of `GET /projects/:id/merge_requests` as an OpenPullRequest."""
    updated = item.get("updated_at") or item.get("created_at")
    return OpenPullRequest(
        number=int(item["iid"]),
        head_sha=str(item.get("sha") or ""),
        updated_at=parse_time(updated) if isinstance(updated, str) else 0.0,
        draft=bool(item.get("draft") or item.get("work_in_progress")),
    )


def parse_time(text: str) -> float:
    """GitLab's ISO 8601 times ("2024-05-26T03:03:17.123Z") as UNIX seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
