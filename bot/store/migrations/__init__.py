"""Alembic migrations for the SQL store, run in-process by `arbiter migrate` (and by
`arbiter serve` on the embedded SQLite default). `alembic upgrade head` works too, through the
`alembic.ini` at the repository root. Alembic finds the scripts as a resource of this package
(`bot.store:migrations`), so an installed wheel migrates like a checkout.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

SCRIPT_LOCATION = "bot.store:migrations"  # Alembic's package-resource form


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> list[str]:
    """Upgrade to head on `connection`; the revisions applied, oldest first."""
    before = current_revision(connection)
    command.upgrade(config(connection), "head")
    script = ScriptDirectory.from_config(config())
    applied = [rev.revision for rev in script.iterate_revisions("head", before or "base")]
    return list(reversed([r for r in applied if r != before]))
