"""The social graph: profile fields and counts, follows and follow requests, blocks, the
search indexes, and when a username last changed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Counts start exact (no follows exist before this revision). The search indexes are in byte order
("C"): they serve a prefix range (LIKE 'abc%') and its order whatever the database's collation.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _account(column: str, table: str) -> tuple[sa.Column[object], sa.ForeignKeyConstraint]:
    """A uuid column naming an account, and its cascading foreign key."""
    return (
        sa.Column(column, sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            [column], ["accounts.id"], name=f"fk_{table}_{column}_accounts", ondelete="CASCADE"
        ),
    )


def upgrade() -> None:
    """Add the profile and account columns, the two tables and the search indexes."""
    op.add_column(
        "accounts", sa.Column("username_changed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_accounts_username_search", "accounts", [sa.text('username COLLATE "C"')])
    for name in ("website", "pronouns"):
        op.add_column("profiles", sa.Column(name, sa.Text(), server_default="", nullable=False))
    op.add_column(
        "profiles", sa.Column("private", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    for name in ("follower_count", "following_count", "post_count"):
        op.add_column(
            "profiles", sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)
        )
    op.create_check_constraint(
        "ck_profiles_counts_not_negative",
        "profiles",
        "follower_count >= 0 AND following_count >= 0 AND post_count >= 0",
    )
    op.create_index(
        "ix_profiles_display_name_search",
        "profiles",
        [sa.text('lower(display_name) COLLATE "C"'), "account_id"],
    )
    follower, follower_fk = _account("follower_id", "follows")
    followed, followed_fk = _account("followed_id", "follows")
    op.create_table(
        "follows",
        follower,
        followed,
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("follower_id <> followed_id", name="ck_follows_not_self"),
        sa.CheckConstraint("status IN ('active', 'pending')", name="ck_follows_status_known"),
        sa.PrimaryKeyConstraint("follower_id", "followed_id", name="pk_follows"),
        sa.UniqueConstraint("position", name="uq_follows_position"),
        follower_fk,
        followed_fk,
    )
    op.create_index(
        "ix_follows_followed_id_status_position", "follows", ["followed_id", "status", "position"]
    )
    op.create_index(
        "ix_follows_follower_id_status_position", "follows", ["follower_id", "status", "position"]
    )
    blocker, blocker_fk = _account("blocker_id", "blocks")
    blocked, blocked_fk = _account("blocked_id", "blocks")
    op.create_table(
        "blocks",
        blocker,
        blocked,
        sa.Column("position", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("blocker_id <> blocked_id", name="ck_blocks_not_self"),
        sa.PrimaryKeyConstraint("blocker_id", "blocked_id", name="pk_blocks"),
        sa.UniqueConstraint("position", name="uq_blocks_position"),
        blocker_fk,
        blocked_fk,
    )
    op.create_index("ix_blocks_blocked_id_blocker_id", "blocks", ["blocked_id", "blocker_id"])
    op.create_index("ix_blocks_blocker_id_position", "blocks", ["blocker_id", "position"])


def downgrade() -> None:
    """Drop the two tables, the indexes and the columns; follows and blocks are forgotten."""
    op.drop_table("blocks")
    op.drop_table("follows")
    op.drop_index("ix_profiles_display_name_search", table_name="profiles")
    op.drop_constraint("ck_profiles_counts_not_negative", "profiles", type_="check")
    for name in ("post_count", "following_count", "follower_count", "private", "pronouns"):
        op.drop_column("profiles", name)
    op.drop_column("profiles", "website")
    op.drop_index("ix_accounts_username_search", table_name="accounts")
    op.drop_column("accounts", "username_changed_at")
