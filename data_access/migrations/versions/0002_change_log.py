"""The change log and the triggers that feed it and notify listeners.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Every insert, update and delete of a profile, and every rename of an account, records one row in
change_log and sends its position on the `meshgram_changes` channel, inside the transaction that
made the change: PostgreSQL delivers the notification only if that transaction commits, and
drops it with the row if it rolls back. Triggers rather than application code, so that a
cascade (an image deleted, clearing an avatar) or a later write path cannot skip it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# TG_ARGV[0] is the topic, TG_ARGV[1] the column that identifies the record.
_RECORD_CHANGE = """
CREATE FUNCTION meshgram_record_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed_row jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
    entry change_log%ROWTYPE;
BEGIN
    INSERT INTO change_log (topic, key)
    VALUES (TG_ARGV[0], changed_row ->> TG_ARGV[1])
    RETURNING * INTO entry;
    -- Transaction-local: the writer reads it to wait until the feed has passed it on.
    PERFORM set_config('meshgram.change_position', entry.position::text, true);
    PERFORM pg_notify(
        'meshgram_changes',
        json_build_object(
            'position', entry.position,
            'topic', entry.topic,
            'key', entry.key,
            'recorded_at', extract(epoch FROM entry.recorded_at)
        )::text
    );
    RETURN NULL;
END;
$$
"""


def upgrade() -> None:
    """Create change_log, its trigger function and the triggers on profiles and accounts."""
    op.create_table(
        "change_log",
        sa.Column("position", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("position", name="pk_change_log"),
    )
    op.create_index("ix_change_log_recorded_at", "change_log", ["recorded_at"])
    op.execute(_RECORD_CHANGE)
    op.execute(
        "CREATE TRIGGER profiles_changed AFTER INSERT OR UPDATE OR DELETE ON profiles "
        "FOR EACH ROW EXECUTE FUNCTION meshgram_record_change('profile', 'account_id')"
    )
    # The username is part of a profile as services show it.
    op.execute(
        "CREATE TRIGGER accounts_renamed AFTER UPDATE OF username ON accounts "
        "FOR EACH ROW WHEN (OLD.username IS DISTINCT FROM NEW.username) "
        "EXECUTE FUNCTION meshgram_record_change('profile', 'id')"
    )


def downgrade() -> None:
    """Drop the triggers, the function and change_log."""
    op.execute("DROP TRIGGER accounts_renamed ON accounts")
    op.execute("DROP TRIGGER profiles_changed ON profiles")
    op.execute("DROP FUNCTION meshgram_record_change()")
    op.drop_table("change_log")
