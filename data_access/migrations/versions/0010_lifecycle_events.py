"""Security-log kinds for deactivation and restoration of an account.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECK = "ck_security_events_kind_known"
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
_NEW = ("account_deactivated", "account_restored")


def _known(kinds: Sequence[str]) -> str:
    """The check constraint's condition for these kinds."""
    return "kind IN (" + ", ".join(f"'{kind}'" for kind in kinds) + ")"


def upgrade() -> None:
    """Allow the two new kinds."""
    op.drop_constraint(_CHECK, "security_events", type_="check")
    op.create_check_constraint(_CHECK, "security_events", _known((*_KINDS, *_NEW)))


def downgrade() -> None:
    """Forget entries of the two kinds and allow only the earlier ones."""
    # The log is append-only for updates; deleting rows is allowed.
    op.execute(
        "DELETE FROM security_events WHERE kind IN ('account_deactivated', 'account_restored')"
    )
    op.drop_constraint(_CHECK, "security_events", type_="check")
    op.create_check_constraint(_CHECK, "security_events", _known(_KINDS))
