"""Image renditions, placeholders, kept originals, per-account media usage, list positions, and
the audit action for an admin deleting an image.

Images stored before renditions existed were kept byte for byte: they become images whose
original is kept, with no renditions yet (storage_svc makes them on first delivery).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECK = "ck_audit_events_action_known"
# Frozen here: a later action comes with its own migration.
_ACTIONS = (
    "account_viewed",
    "account_blocked",
    "account_unblocked",
    "block_expired",
    "role_granted",
    "role_revoked",
)
_NEW = ("image_deleted",)


def _known(actions: Sequence[str]) -> str:
    """The check constraint's condition for these actions."""
    return "action IN (" + ", ".join(f"'{action}'" for action in actions) + ")"


def upgrade() -> None:
    """Add the image columns and tables, and backfill them from the images already stored."""
    op.add_column("images", sa.Column("placeholder", sa.Text(), server_default="", nullable=False))
    op.add_column(
        "images",
        sa.Column("original_kept", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(
        "images", sa.Column("stored_bytes", sa.BigInteger(), server_default="0", nullable=False)
    )
    # An identity column numbers the existing rows as it is added.
    op.add_column("images", sa.Column("position", sa.BigInteger(), sa.Identity(), nullable=False))
    op.create_unique_constraint("uq_images_position", "images", ["position"])
    op.execute("UPDATE images SET original_kept = true, stored_bytes = size_bytes")
    op.create_table(
        "image_renditions",
        sa.Column("image_id", sa.Uuid(), nullable=False),
        sa.Column("variant", sa.Text(), nullable=False),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.CheckConstraint("size_bytes > 0", name="ck_image_renditions_size_positive"),
        sa.CheckConstraint(
            "width > 0 AND height > 0", name="ck_image_renditions_dimensions_positive"
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name="fk_image_renditions_image_id_images",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", "variant", "format", name="pk_image_renditions"),
    )
    op.create_index("ix_image_renditions_sha256", "image_renditions", ["sha256"])
    op.create_table(
        "media_usage",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("used_bytes >= 0", name="ck_media_usage_used_not_negative"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_media_usage_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name="pk_media_usage"),
    )
    op.execute(
        "INSERT INTO media_usage (account_id, used_bytes) "
        "SELECT owner_id, sum(stored_bytes) FROM images GROUP BY owner_id"
    )
    op.drop_constraint(_CHECK, "audit_events", type_="check")
    op.create_check_constraint(_CHECK, "audit_events", _known((*_ACTIONS, *_NEW)))


def downgrade() -> None:
    """Drop the renditions and usage; images keep their original bytes only where kept. The
    audit log's check keeps allowing image_deleted: the log refuses to lose entries."""
    op.drop_table("media_usage")
    op.drop_table("image_renditions")
    op.drop_constraint("uq_images_position", "images", type_="unique")
    for column in ("position", "stored_bytes", "original_kept", "placeholder"):
        op.drop_column("images", column)
