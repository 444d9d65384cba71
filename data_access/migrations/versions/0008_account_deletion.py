"""Account deletion: deactivation with a grace period, and the table of accounts deleted for good.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

A deactivated account is hidden and signed out, and restorable by a login until delete_after;
then the sweeper moves it to deleted_accounts (ids and dates only) and deletes everything else
it owned.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the deactivation columns, their index and deleted_accounts."""
    for name in ("deactivated_at", "delete_after"):
        op.add_column("accounts", sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_accounts_delete_after",
        "accounts",
        ["delete_after"],
        postgresql_where=sa.text("delete_after IS NOT NULL"),
    )
    op.create_table(
        "deleted_accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "deleted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deleted_accounts"),
    )


def downgrade() -> None:
    """Drop deleted_accounts and the deactivation columns; pending deletions are forgotten."""
    op.drop_table("deleted_accounts")
    op.drop_index("ix_accounts_delete_after", table_name="accounts")
    op.drop_column("accounts", "delete_after")
    op.drop_column("accounts", "deactivated_at")
