"""Alembic migrations for the SQL store, run in-process by `arbiter migrate` (and by
`arbiter serve` on the embedded SQLite default). `alembic upgrade head` works too, through the
`alembic.ini` at the repository root. Alembic finds the scripts as a resource of this package
(`bot.store:migrations`), so an installed wheel migrates like a checkout.

A schema already at head is recognised without Alembic (its revision table read with one
SELECT, the head read from the scripts' `revision =` lines): a process restarted on a current
store never imports Alembic and Mako, 7 MiB it would hold for the rest of its life.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.store.revisions import VERSION_TABLE, scripted_head

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPT_LOCATION = "bot.store:migrations"  # Alembic's package-resource form


def config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return scripted_head() or _alembic_head()


def _alembic_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    version = sa.table(VERSION_TABLE, sa.column("version_num"))
    found = connection.execute(sa.select(version.c.version_num)).all()
    if len(found) <= 1:
        return str(found[0][0]) if found else None
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()  # says what is wrong


def upgrade(connection: Connection) -> list[str]:
    """Upgrade to head on `connection`; the revisions applied, oldest first."""
    before = current_revision(connection)
    if before is not None and before == scripted_head():
        return []  # at head already: nothing for Alembic to do
    from alembic import command
    from alembic.script import ScriptDirectory

    command.upgrade(config(connection), "head")
    script = ScriptDirectory.from_config(config())
    applied = [rev.revision for rev in script.iterate_revisions("head", before or "base")]
    return list(reversed([r for r in applied if r != before]))
