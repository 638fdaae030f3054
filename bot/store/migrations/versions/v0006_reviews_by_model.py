"""Reviews by model, newest first: each review reads what its model's recent reviews wrote per
call (`output_per_call`, the answer's reservation). Without the index that read scanned the
reviews back from the newest until it found 100 of the model, so a model used rarely, or not
yet, read the whole table, once per review (200,000 reviews: 20 ms, before the model call).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_reviews_model_id", "reviews", ["model", "id"])


def downgrade() -> None:
    op.drop_index("ix_reviews_model_id", table_name="reviews")
