"""Exchanges: what people asked Arbiter on pull requests, and what it did about it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "exchanges",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("delivery_id", sa.String(255), nullable=False),
        sa.Column("repo", sa.String(255), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("comment_id", sa.String(64), nullable=False),
        sa.Column("thread", sa.String(255), nullable=True),
        sa.Column("path", sa.Text, nullable=True),
        sa.Column("line", sa.Integer, nullable=True),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("command", sa.String(32), nullable=True),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("answer", sa.Text, nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("reply_id", sa.String(64), nullable=True),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_exchanges"),
        sa.UniqueConstraint("platform", "delivery_id", name="uq_exchanges_platform_delivery_id"),
    )
    op.create_index(
        "ix_exchanges_platform_repo_number_author_created_at",
        "exchanges",
        ["platform", "repo", "number", "author", "created_at"],
    )
    op.create_index("ix_exchanges_created_at", "exchanges", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_exchanges_created_at", table_name="exchanges")
    op.drop_index("ix_exchanges_platform_repo_number_author_created_at", table_name="exchanges")
    op.drop_table("exchanges")
