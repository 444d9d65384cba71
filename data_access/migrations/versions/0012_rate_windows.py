"""Fixed-window hit counters for the edge's rate limits that hold across its replicas.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add rate_windows: one row per key, the count of its current window."""
    op.create_table(
        "rate_windows",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_rate_windows"),
    )
    # The sweeper deletes ended windows by this column.
    op.create_index("ix_rate_windows_ends_at", "rate_windows", ["ends_at"])


def downgrade() -> None:
    """Drop rate_windows."""
    op.drop_index("ix_rate_windows_ends_at", table_name="rate_windows")
    op.drop_table("rate_windows")
