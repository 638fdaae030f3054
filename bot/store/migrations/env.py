"""Alembic environment: migrations run on the connection Arbiter hands over, or, from the
`alembic` command line, on `ARBITER_DATABASE_URL`."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from bot.store.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _from_settings() -> None:
    from bot.store.sql import SQLStore
    from config.settings import load_settings

    async def main() -> None:
        store = SQLStore(load_settings().database_url)
        await store.open()
        try:
            await store.run_sql(_run)
        finally:
            await store.close()

    asyncio.run(main())


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    _from_settings()
