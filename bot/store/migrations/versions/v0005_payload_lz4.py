"""PostgreSQL: a job's payload (a webhook's whole body, often tens of KB) is compressed with
LZ4 instead of pglz where the server has it: compressing each delivery's body took most of
the database's CPU at intake. Nothing is rewritten: values stored before stay as they are.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _lz4_available() -> bool:
    """PostgreSQL 14 or newer built with LZ4 (Debian's, the official images' and most
    managed services' are); older or other servers keep their default."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    methods = bind.execute(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    ).scalar()
    return "lz4" in (methods or [])


def upgrade() -> None:
    if _lz4_available():
        op.execute("ALTER TABLE jobs ALTER COLUMN payload SET COMPRESSION lz4")


def downgrade() -> None:
    if _lz4_available():
        op.execute("ALTER TABLE jobs ALTER COLUMN payload SET COMPRESSION DEFAULT")
