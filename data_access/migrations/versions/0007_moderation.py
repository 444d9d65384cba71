"""Moderation: account roles, admin blocks with `blocked_till`, and the audit log of admin actions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

audit_events is append-only: triggers refuse DELETE, TRUNCATE and every UPDATE except the one its
foreign keys make when an account is deleted for good (actor_id or account_id set to NULL), so an
entry outlives the accounts it names without keeping who they were.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: a later action comes with its own migration.
_ACTIONS = (
    "account_viewed",
    "account_blocked",
    "account_unblocked",
    "block_expired",
    "role_granted",
    "role_revoked",
)
_REFUSE_UPDATE = """
CREATE FUNCTION audit_events_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.created_at, NEW.action, NEW.reason, NEW.blocked_till)
           IS DISTINCT FROM (OLD.id, OLD.created_at, OLD.action, OLD.reason, OLD.blocked_till)
       OR (NEW.actor_id IS NOT NULL AND NEW.actor_id IS DISTINCT FROM OLD.actor_id)
       OR (NEW.account_id IS NOT NULL AND NEW.account_id IS DISTINCT FROM OLD.account_id) THEN
        RAISE EXCEPTION 'audit_events is append-only';
    END IF;
    RETURN NEW;
END $$
"""

_REFUSE_DELETE = """
CREATE FUNCTION audit_events_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$
"""


def upgrade() -> None:
    """Add the account columns, the audit log and its append-only trigger."""
    op.add_column("accounts", sa.Column("role", sa.Text(), server_default="user", nullable=False))
    op.add_column("accounts", sa.Column("blocked_till", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "accounts", sa.Column("blocked_reason", sa.Text(), server_default="", nullable=False)
    )
    op.create_check_constraint("ck_accounts_role_known", "accounts", "role IN ('user', 'admin')")
    op.create_index(
        "ix_accounts_blocked_till",
        "accounts",
        ["blocked_till"],
        postgresql_where=sa.text("blocked_till IS NOT NULL"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("blocked_till", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "action IN (" + ", ".join(f"'{action}'" for action in _ACTIONS) + ")",
            name="ck_audit_events_action_known",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["accounts.id"],
            name="fk_audit_events_actor_id_accounts",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_audit_events_account_id_accounts",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_audit_events_actor_id", "audit_events", ["actor_id"])
    op.create_index("ix_audit_events_account_id_id", "audit_events", ["account_id", "id"])
    op.execute(_REFUSE_UPDATE)
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_update()"
    )
    op.execute(_REFUSE_DELETE)
    op.execute(
        "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_delete()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_delete()"
    )


def downgrade() -> None:
    """Drop the audit log and the account columns; blocks and roles are forgotten."""
    op.drop_table("audit_events")
    op.execute("DROP FUNCTION audit_events_refuse_update()")
    op.execute("DROP FUNCTION audit_events_refuse_delete()")
    op.drop_index("ix_accounts_blocked_till", table_name="accounts")
    op.drop_constraint("ck_accounts_role_known", "accounts", type_="check")
    for name in ("blocked_reason", "blocked_till", "role"):
        op.drop_column("accounts", name)
