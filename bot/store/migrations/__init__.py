"""Alembic migrations for the SQL store, run in-process by `arbiter migrate` (and by
`arbiter serve` on the embedded SQLite default). `alembic upgrade head` works too, through the
`alembic.ini` at the repository root.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

HERE = Path(__file__).parent


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
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
