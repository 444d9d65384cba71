"""The end of an account: deactivation by its owner, restoration by a login within the grace
period, and deletion for good by the sweeper once the grace period is over.

A deactivated account is hidden at once (profile reads, lists and search skip it; nobody can
follow it) and signed out (its sessions end in the deactivation's transaction). A login before
delete_after restores it, in the transaction that starts the login's session (admit_login). After
delete_after, the sweeper moves it to deleted_accounts, which keeps its id and dates only, takes
its active follows off the other accounts' counts, and deletes the account row; every table that
holds the account's data refers to it with ON DELETE CASCADE (or SET NULL for the audit log), so
nothing of it stays behind. Rows that name the account by a value other than its id go in the same
transaction: its mail-request counters (by the digest of its address) and its sign-up lease.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.blob_collections import queue_blobs_of
from data_access.changes import ChangeFeed, recorded_position
from data_access.database import Database
from data_access.records import Device, TokenPurpose
from data_access.security_events import CheckedEvent, append_event
from data_access.sessions import end_sessions
from data_access.social_graph import adjust_counts, lock_profiles
from data_access.validation import parse_id
from meshkit.errors import NotFound, PermissionDenied
from meshkit.reasons import Reason

LONGEST_GRACE = timedelta(days=365)
DEACTIVATED = "account_deactivated"
RESTORED = "account_restored"


class AccountLifecycle:
    """Deactivates accounts on their owners' request."""

    def __init__(self, database: Database, feed: ChangeFeed) -> None:
        self._database = database
        self._feed = feed

    async def deactivate(self, account_id: str, *, grace: timedelta) -> datetime:
        """Deactivate an account (hide it, end its sessions) and return when it will be deleted
        for good; asking again keeps the first date. NotFound (ACCOUNT_NOT_FOUND) for an unknown
        account."""
        if not timedelta(0) <= grace <= LONGEST_GRACE:
            raise ValueError("grace must be between 0 and 365 days")
        key = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            row = (await session.execute(_LOCK, {"id": key})).one_or_none()
            if row is None:
                raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
            if row.delete_after is not None:
                first: datetime = row.delete_after
                return first.astimezone(UTC)
            delete_after: datetime = await session.scalar(
                _DEACTIVATE, {"id": key, "grace": grace.total_seconds()}
            )
            await end_sessions(session, key)
            when = delete_after.astimezone(UTC)
            await append_event(
                session,
                key,
                CheckedEvent(
                    kind=DEACTIVATED,
                    device=Device(),
                    session_id=None,
                    detail=f"deleted for good at {when:%Y-%m-%d %H:%M} UTC unless a login comes",
                ),
            )
            position = await _touch_profile(session, key)
        # Acknowledged once every profile cache has heard that the profile is gone.
        await self._feed.delivered(position)
        return delete_after.astimezone(UTC)


async def admit_login(session: AsyncSession, owner: uuid.UUID, device: Device) -> None:
    """Decide, inside the transaction that starts a login's session, whether the account may
    have one: PermissionDenied (ACCOUNT_BLOCKED) while an admin blocks it, NotFound
    (ACCOUNT_NOT_FOUND) once its deletion is due; a deactivated account is restored, which its
    security log records with the login's device.

    The account row is locked (FOR NO KEY UPDATE): a block or a deactivation, each an UPDATE of
    that row, either commits first and is seen here, or waits for this login and then ends its
    session with the others."""
    row = (await session.execute(_STANDING, {"id": owner})).one_or_none()
    if row is None:
        raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
    if row.blocked_till is not None:
        until = row.blocked_till.astimezone(UTC)
        raise PermissionDenied(
            message=f"this account is blocked until {until:%Y-%m-%d %H:%M} UTC",
            reason=Reason.ACCOUNT_BLOCKED,
            metadata={"blocked_till": until.isoformat()},
        )
    if row.deletion_due:
        raise NotFound(message="this account was deleted", reason=Reason.ACCOUNT_NOT_FOUND)
    if row.deactivated:
        await session.execute(_RESTORE, {"id": owner})
        await _touch_profile(session, owner)
        restored = CheckedEvent(kind=RESTORED, device=device, session_id=None, detail="")
        await append_event(session, owner, restored)


async def purge_due_account(session: AsyncSession, limit: int) -> int:
    """Delete for good one account whose grace period is over (the sweeper's job; limit is
    ignored: one account per transaction keeps each one's locks short) and return how many
    were deleted (0 or 1)."""
    del limit
    due = (await session.execute(_DUE)).one_or_none()
    if due is None:
        return 0
    follows = (await session.execute(_ACTIVE_FOLLOWS, {"id": due.id})).all()
    others = {row.follower_id for row in follows} | {row.followed_id for row in follows}
    # In id order, like every follow change, before the counts of the others change.
    await lock_profiles(session, due.id, *others)
    await adjust_counts(session, {(row.follower_id, row.followed_id): -1 for row in follows})
    await session.execute(
        _REMEMBER,
        {"id": due.id, "created_at": due.created_at, "deactivated_at": due.deactivated_at},
    )
    digest = hashlib.sha256(due.email.encode()).hexdigest()
    keys = [f"{purpose.value}:{digest}" for purpose in TokenPurpose]
    await session.execute(_FORGET_MAIL_REQUESTS, {"keys": keys})
    await session.execute(_FORGET_LEASES, {"name": f"signup-attempt:{due.id}"})
    # The image records go with the account; their bytes once storage_svc's collector has made
    # sure no other image shares them.
    await queue_blobs_of(session, due.id)
    await session.execute(_DELETE, {"id": due.id})
    return 1


async def _touch_profile(session: AsyncSession, account: uuid.UUID) -> int | None:
    """Mark the account's profile changed, so that every profile cache drops it; return the
    change's feed position."""
    await session.execute(_TOUCH, {"id": account})
    return await recorded_position(session)


_LOCK = text("SELECT delete_after FROM accounts WHERE id = :id FOR NO KEY UPDATE")
_DEACTIVATE = text(
    "UPDATE accounts SET deactivated_at = now(), "
    "delete_after = now() + make_interval(secs => :grace) "
    "WHERE id = :id RETURNING delete_after"
)
_TOUCH = text("UPDATE profiles SET updated_at = clock_timestamp() WHERE account_id = :id")
_STANDING = text(
    """
    SELECT CASE WHEN blocked_till > now() THEN blocked_till END AS blocked_till,
           deactivated_at IS NOT NULL AS deactivated,
           coalesce(delete_after <= now(), false) AS deletion_due
    FROM accounts WHERE id = :id FOR NO KEY UPDATE
    """
)
_RESTORE = text("UPDATE accounts SET deactivated_at = NULL, delete_after = NULL WHERE id = :id")
_DUE = text(
    "SELECT id, email, created_at, deactivated_at FROM accounts "
    "WHERE delete_after <= now() ORDER BY delete_after LIMIT 1 FOR UPDATE SKIP LOCKED"
)
_ACTIVE_FOLLOWS = text(
    "SELECT follower_id, followed_id FROM follows "
    "WHERE (follower_id = :id OR followed_id = :id) AND status = 'active'"
)
_REMEMBER = text(
    "INSERT INTO deleted_accounts (id, created_at, deactivated_at) "
    "VALUES (:id, :created_at, :deactivated_at) ON CONFLICT DO NOTHING"
)
_FORGET_MAIL_REQUESTS = text("DELETE FROM mail_requests WHERE key = ANY(:keys)")
_FORGET_LEASES = text("DELETE FROM leases WHERE name = :name")
_DELETE = text("DELETE FROM accounts WHERE id = :id")
