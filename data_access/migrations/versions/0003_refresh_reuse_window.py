"""Refresh-token rotation that tolerates a repeated refresh, and sessions with an absolute end.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

successor_hash remembers which token a consumed one was exchanged for, so that the same refresh
repeated within a short window (two browser tabs) gets the same successor instead of revoking
the family; session_started_at is the login time, copied along the family, which bounds how long
a session may be kept alive by refreshing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add successor_hash and session_started_at (from each family's first token)."""
    op.add_column("refresh_tokens", sa.Column("successor_hash", sa.String(64), nullable=True))
    op.add_column(
        "refresh_tokens",
        sa.Column(
            "session_started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.execute(
        "UPDATE refresh_tokens AS t SET session_started_at = f.started "
        "FROM (SELECT family_id, min(created_at) AS started FROM refresh_tokens "
        "GROUP BY family_id) AS f WHERE t.family_id = f.family_id"
    )


def downgrade() -> None:
    """Drop the two columns."""
    op.drop_column("refresh_tokens", "session_started_at")
    op.drop_column("refresh_tokens", "successor_hash")
