"""Account lifecycle: verified addresses, sessions, single-use mailed tokens, the mail outbox.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09

A session row now holds what a login is (its start, its absolute end, its device) and its id is
the refresh-token family's, so refresh_tokens.session_started_at moves there. Every existing
family becomes a remembered session ending 90 days after its login. account_tokens keeps the
hashes of mailed single-use tokens; outbox queues the (sealed) mails that writes cause, in their
transaction; leases lets one replica at a time act as the mail sender.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("now()")
_FAMILY_FK = "fk_refresh_tokens_family_id_sessions"


def _timestamp(name: str, *, default: bool = True, nullable: bool = False) -> sa.Column[datetime]:
    """A timezone-aware timestamp column, defaulting to the transaction's time."""
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=_NOW if default else None,
        nullable=nullable,
    )


def _account_fk(table: str) -> sa.ForeignKeyConstraint:
    """The cascading foreign key of a table's account_id."""
    return sa.ForeignKeyConstraint(
        ["account_id"], ["accounts.id"], name=f"fk_{table}_account_id_accounts", ondelete="CASCADE"
    )


def upgrade() -> None:
    """Add the account columns and the four tables; turn every token family into a session."""
    op.add_column("accounts", _timestamp("email_verified_at", default=False, nullable=True))
    op.add_column("accounts", _timestamp("password_changed_at", default=False, nullable=True))
    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        _timestamp("created_at"),
        _timestamp("ends_at", default=False),
        sa.Column("remembered", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("user_agent", sa.Text(), server_default="", nullable=False),
        sa.Column("client_ip", sa.Text(), server_default="", nullable=False),
        _timestamp("last_used_at"),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        _account_fk("sessions"),
    )
    op.create_index("ix_sessions_account_id", "sessions", ["account_id"])
    op.execute(
        "INSERT INTO sessions (id, account_id, created_at, ends_at, remembered, last_used_at) "
        "SELECT family_id, account_id, min(session_started_at), "
        "min(session_started_at) + interval '90 days', true, max(created_at) "
        "FROM refresh_tokens GROUP BY family_id, account_id"
    )
    op.create_foreign_key(
        _FAMILY_FK, "refresh_tokens", "sessions", ["family_id"], ["id"], ondelete="CASCADE"
    )
    op.drop_column("refresh_tokens", "session_started_at")
    op.create_table(
        "account_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        _timestamp("created_at"),
        _timestamp("expires_at", default=False),
        _timestamp("used_at", default=False, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_account_tokens"),
        _account_fk("account_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_account_tokens_token_hash"),
        sa.CheckConstraint(
            "purpose IN ('verify_email', 'reset_password')",
            name="ck_account_tokens_purpose_known",
        ),
    )
    op.create_index(
        "ix_account_tokens_account_id_purpose_created_at",
        "account_tokens",
        ["account_id", "purpose", "created_at"],
    )
    op.create_index("ix_account_tokens_expires_at", "account_tokens", ["expires_at"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        _timestamp("created_at"),
        _timestamp("next_attempt_at"),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        _timestamp("sent_at", default=False, nullable=True),
        _timestamp("given_up_at", default=False, nullable=True),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index(
        "ix_outbox_next_attempt_at",
        "outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("sent_at IS NULL AND given_up_at IS NULL"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        _timestamp("expires_at", default=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    """Drop the four tables and the account columns; give tokens their login time back."""
    op.drop_table("leases")
    op.drop_table("outbox")
    op.drop_table("account_tokens")
    op.add_column("refresh_tokens", _timestamp("session_started_at"))
    op.execute(
        "UPDATE refresh_tokens AS t SET session_started_at = s.created_at "
        "FROM sessions AS s WHERE s.id = t.family_id"
    )
    op.drop_constraint(_FAMILY_FK, "refresh_tokens", type_="foreignkey")
    op.drop_table("sessions")
    op.drop_column("accounts", "password_changed_at")
    op.drop_column("accounts", "email_verified_at")
