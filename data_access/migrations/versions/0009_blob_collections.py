"""The queue of blobs that may have lost their last image, for storage_svc's collector.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create blob_collections."""
    op.create_table(
        "blob_collections",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column(
            "queued_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("sha256", name="pk_blob_collections"),
    )
    op.create_index("ix_blob_collections_queued_at", "blob_collections", ["queued_at"])


def downgrade() -> None:
    """Drop blob_collections; the blobs it named stay on disk."""
    op.drop_table("blob_collections")
