"""Recovery: background passes and their watermarks, redelivery requests, repositories seen.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recovery_passes",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_recovery_passes"),
    )
    op.create_table(
        "watermarks",
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_watermarks"),
    )
    op.create_table(
        "redeliveries",
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("guid", sa.String(255), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("attempt_id", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("platform", "guid", name="pk_redeliveries"),
    )
    op.create_index("ix_redeliveries_created_at", "redeliveries", ["created_at"])
    op.create_table(
        "known_repositories",
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("repo", sa.String(255), nullable=False),
        sa.Column("installation_id", sa.BigInteger, nullable=True),
        sa.Column("first_seen_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("platform", "repo", name="pk_known_repositories"),
    )


def downgrade() -> None:
    op.drop_table("known_repositories")
    op.drop_index("ix_redeliveries_created_at", table_name="redeliveries")
    op.drop_table("redeliveries")
    op.drop_table("watermarks")
    op.drop_table("recovery_passes")
