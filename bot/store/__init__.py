"""The store: everything that must survive a restart. `make_store(settings)` picks the backend
from the scheme of `ARBITER_DATABASE_URL`."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.store.base import (
    Delivery,
    Enqueued,
    Installation,
    Job,
    JobDeferred,
    NewJob,
    SchemaOutOfDate,
    SchemaStatus,
    Store,
    StoreUnavailable,
)
from config.settings import Settings

__all__ = [
    "Delivery",
    "Enqueued",
    "Installation",
    "Job",
    "JobDeferred",
    "NewJob",
    "SchemaOutOfDate",
    "SchemaStatus",
    "Store",
    "StoreUnavailable",
    "make_store",
]


def make_store(
    settings: Settings, *, clock: Callable[[], float] = time.time, web_only: bool = False
) -> Store:
    """The Store for `settings.database_url` (not yet opened). `web_only`: for a process that
    runs no workers; on a SQLite file that is the `WebStore`, which needs no SQLAlchemy until
    the API, the dashboard or the set-up page is used (bot/store/sqlite_web.py)."""
    url = settings.database_url
    if web_only and url.startswith("sqlite"):
        from bot.store.sqlite_plain import file_database

        if (database := file_database(url)) is not None:
            from bot.store.sqlite_web import WebStore

            return WebStore(
                url,
                database,
                pool_size=settings.database_pool_size,
                max_overflow=settings.database_max_overflow,
                clock=clock,
            )
    if url.startswith(("sqlite", "postgresql+asyncpg")):
        from bot.store.sql import SQLStore

        return SQLStore(
            url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            clock=clock,
        )
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from bot.store.mongo import MongoStore

        return MongoStore(
            url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            delivery_ttl_seconds=settings.delivery_retention_days * 86400,
            clock=clock,
        )
    raise ValueError(
        f"ARBITER_DATABASE_URL: no store for {url.split('://', 1)[0]!r}; use "
        "sqlite+aiosqlite:///PATH, postgresql+asyncpg://…, mongodb://… or mongodb+srv://…"
    )
