"""`arbiter receive`: a saved webhook payload through normalization and the handlers.

It runs against a throw-away store (a temporary SQLite file, deleted when it ends) unless
`--store URL` names one, so trying a handler leaves nothing queued for a later `serve` in the
same folder to run. What the handlers queued is listed, not run.
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bot.events import Event, PayloadError, from_github, from_gitlab
from bot.router import handler_name
from bot.runtime import Runtime
from config.settings import Settings, mask_url, normalize_database_url

EXIT_USAGE = 2


def _load_payload(path: Path) -> Any:
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    return json.loads(text)


def _event_for(platform: str, event_name: str | None, payload: Any, settings: Settings) -> Event:
    delivery_id = f"local-{uuid.uuid4()}"
    if platform == "github":
        if not event_name:
            raise ValueError("--event is required for GitHub payloads (the X-GitHub-Event value)")
        return from_github(event_name, delivery_id, payload)
    return from_gitlab(delivery_id, payload, bot_names=frozenset({settings.bot_name.lower()}))


async def receive(
    settings: Settings,
    platform: str,
    event_name: str | None,
    path: Path,
    *,
    dry_run: bool,
    store_url: str | None = None,
) -> int:
    try:
        payload = _load_payload(path)
        event = _event_for(platform, event_name, payload, settings)
    except (OSError, ValueError, PayloadError) as exc:
        print(f"arbiter: cannot read {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if store_url is not None:
        try:
            store_url = normalize_database_url(store_url)
        except ValueError as exc:
            print(f"arbiter: --store: {exc}", file=sys.stderr)
            return EXIT_USAGE
    runtime = Runtime(settings)
    sender = (
        f"{event.sender.login}{' (bot)' if event.sender.is_bot else ''}" if event.sender else "-"
    )
    print(f"event    {event.label}")
    print(f"repo     {event.repo or '-'}   number {event.number or '-'}   sender {sender}")
    if event.comment:
        print(f"comment  {event.comment.kind} #{event.comment.id}: {event.comment.body[:70]!r}")
    handlers = runtime.router.handlers_for(event)
    if not handlers:
        print("handlers none: a delivery like this is answered 202 ignored")
        return 0
    for handler in handlers:
        print(f"handler  {handler_name(handler)}")
    if dry_run:
        return 0
    if store_url is not None:
        return await _run(settings.model_copy(update={"database_url": store_url}), event, True)
    with tempfile.TemporaryDirectory(prefix="arbiter-receive-") as folder:
        url = f"sqlite:///{Path(folder) / 'receive.db'}"
        return await _run(settings.model_copy(update={"database_url": url}), event, False)


async def _run(settings: Settings, event: Event, kept: bool) -> int:
    where = mask_url(settings.database_url) if kept else "throw-away (deleted after this run)"
    print(f"store    {where}")
    runtime = Runtime(settings)
    await runtime.start()
    try:
        result = await runtime.router.dispatch(runtime.context(event))
        queued = [
            job
            for job in await runtime.store.list_jobs(state="queued", limit=1000)
            if job.delivery_id == event.delivery_id
        ]
    finally:
        await runtime.close()
    for name in result.succeeded:
        print(f"ok       {name}")
    for name, error in result.failed:
        print(f"failed   {name}: {type(error).__name__}: {error}")
    fate = "a worker on that store will run it" if kept else "not run; gone with the store"
    for job in queued:
        print(f"queued   {job.kind} job {job.key or job.id} ({fate})")
    return 0 if result.ok else 1
