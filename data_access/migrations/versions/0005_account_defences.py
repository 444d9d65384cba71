"""Account defences: failed-login and mail-request counters, TOTP factors, recovery codes, MFA
challenges, the security log, when a session last proved its credentials, and email changes (a
token purpose).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

security_events is append-only: a trigger refuses every UPDATE, so an entry, once written,
says what happened for as long as it is kept (rows go only with their account or their age).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("now()")
# Frozen here: a later kind comes with its own migration.
_KINDS = (
    "login_succeeded",
    "login_failed",
    "login_locked",
    "password_changed",
    "password_reset",
    "mfa_enabled",
    "mfa_disabled",
    "recovery_codes_regenerated",
    "recovery_code_used",
    "refresh_token_reused",
    "sessions_ended",
    "reauthenticated",
    "email_verified",
    "email_changed",
)


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


# One statement per execute: asyncpg prepares each, and a prepared statement holds only one.
_REFUSE_UPDATE = """
CREATE FUNCTION security_events_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'security_events is append-only';
END $$
"""
_APPEND_ONLY = (
    "CREATE TRIGGER security_events_append_only BEFORE UPDATE ON security_events "
    "FOR EACH ROW EXECUTE FUNCTION security_events_refuse_update()"
)


_PURPOSES = "purpose IN ('verify_email', 'reset_password'{})"
_PURPOSE_CHECK = "ck_account_tokens_purpose_known"


def upgrade() -> None:
    """Add sessions.authenticated_at, the six tables, and email changes as a token purpose."""
    op.drop_constraint(_PURPOSE_CHECK, "account_tokens", type_="check")
    op.create_check_constraint(
        _PURPOSE_CHECK, "account_tokens", _PURPOSES.format(", 'change_email'")
    )
    op.add_column("sessions", _timestamp("authenticated_at"))
    op.execute("UPDATE sessions SET authenticated_at = created_at")
    op.create_table(
        "login_attempts",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        _timestamp("last_failure_at", default=False),
        sa.PrimaryKeyConstraint("key", name="pk_login_attempts"),
    )
    op.create_index("ix_login_attempts_last_failure_at", "login_attempts", ["last_failure_at"])
    op.create_table(
        "mail_requests",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        _timestamp("last_request_at", default=False),
        sa.PrimaryKeyConstraint("key", name="pk_mail_requests"),
    )
    op.create_index("ix_mail_requests_last_request_at", "mail_requests", ["last_request_at"])
    op.create_table(
        "mfa_factors",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=True),
        _timestamp("enabled_at", default=False, nullable=True),
        sa.Column("last_used_step", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("pending_secret_sealed", sa.LargeBinary(), nullable=True),
        _timestamp("pending_started_at", default=False, nullable=True),
        sa.PrimaryKeyConstraint("account_id", name="pk_mfa_factors"),
        _account_fk("mfa_factors"),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        _timestamp("created_at"),
        _timestamp("used_at", default=False, nullable=True),
        sa.PrimaryKeyConstraint("account_id", "code_hash", name="pk_recovery_codes"),
        _account_fk("recovery_codes"),
    )
    op.create_table(
        "mfa_challenges",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("remembered", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _timestamp("created_at"),
        _timestamp("expires_at", default=False),
        _timestamp("used_at", default=False, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_mfa_challenges"),
        _account_fk("mfa_challenges"),
        sa.UniqueConstraint("token_hash", name="uq_mfa_challenges_token_hash"),
    )
    op.create_index("ix_mfa_challenges_account_id", "mfa_challenges", ["account_id"])
    op.create_index("ix_mfa_challenges_expires_at", "mfa_challenges", ["expires_at"])
    op.create_table(
        "security_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        _timestamp("created_at"),
        sa.Column("user_agent", sa.Text(), server_default="", nullable=False),
        sa.Column("client_ip", sa.Text(), server_default="", nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_security_events"),
        _account_fk("security_events"),
        sa.CheckConstraint(
            "kind IN (" + ", ".join(f"'{kind}'" for kind in _KINDS) + ")",
            name="ck_security_events_kind_known",
        ),
    )
    op.create_index("ix_security_events_account_id_id", "security_events", ["account_id", "id"])
    op.create_index("ix_security_events_created_at", "security_events", ["created_at"])
    op.execute(_REFUSE_UPDATE)
    op.execute(_APPEND_ONLY)


def downgrade() -> None:
    """Drop the six tables and sessions.authenticated_at; email changes are forgotten."""
    op.drop_table("security_events")
    op.execute("DROP FUNCTION security_events_refuse_update()")
    op.drop_table("mfa_challenges")
    op.drop_table("recovery_codes")
    op.drop_table("mfa_factors")
    op.drop_table("mail_requests")
    op.drop_table("login_attempts")
    op.drop_column("sessions", "authenticated_at")
    op.execute("DELETE FROM account_tokens WHERE purpose = 'change_email'")
    op.drop_constraint(_PURPOSE_CHECK, "account_tokens", type_="check")
    op.create_check_constraint(_PURPOSE_CHECK, "account_tokens", _PURPOSES.format(""))
