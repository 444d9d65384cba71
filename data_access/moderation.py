"""Moderation: roles, blocks by admins (`blocked_till`), and the audit log of what admins did.

Every admin call names its actor, whose role is checked in the call's own transaction: a role
revoked a moment ago is revoked for the next call, whatever access token the admin still holds.
A block ends the account's sessions in its transaction, and a login cannot slip in between:
starting a session reads the account's block under a share lock (refresh_tokens.start_session),
so it either runs before the block, whose session end then covers it, or after, and is refused.
The block itself ends at blocked_till whether or not the sweeper has lifted it yet; the sweeper
clears expired blocks and writes their audit entries.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.database import Database
from data_access.models import USERNAME_MAX
from data_access.sessions import end_sessions
from data_access.validation import Violations, lookup_key
from meshkit.errors import FailedPrecondition, NotFound, PermissionDenied
from meshkit.reasons import Reason

REASON_MAX = 500
AUDIT_PAGE_MAX = 1000
ROLES = ("user", "admin")


@dataclass(frozen=True)
class AccountStatus:
    """What an admin sees of an account."""

    account_id: uuid.UUID
    username: str
    email: str
    role: str
    created_at: datetime
    email_verified: bool
    blocked_till: datetime | None
    """Set while a block lasts (None once it expired, even before the sweeper clears it)."""
    blocked_reason: str


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit log; usernames are empty once the account is gone."""

    id: int
    created_at: datetime
    actor_username: str
    action: str
    account_username: str
    reason: str
    blocked_till: datetime | None


@dataclass(frozen=True)
class AuditPage:
    """A page of audit entries, newest first, and whether older ones remain."""

    entries: list[AuditEntry]
    more: bool


class ModerationStore:
    """Admin actions on accounts, each checked against its actor's role and audited."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def status(self, actor_id: str, username: str) -> AccountStatus:
        """Return an account's status as an admin sees it (audited); PermissionDenied
        (ADMIN_REQUIRED) unless actor_id is an admin, NotFound for an unknown username."""
        async with self._database.transaction() as session:
            actor = await _admin(session, actor_id)
            status = await _status(session, username)
            await record_audit(session, actor, "account_viewed", status.account_id)
        return status

    async def block(
        self, actor_id: str, username: str, *, until: datetime, reason: str
    ) -> AccountStatus:
        """Block an account until a time, ending its sessions now; FailedPrecondition for an
        admin account, oneself included (ACCOUNT_IS_ADMIN: revoke its role first)."""
        check = Violations()
        reason = check.text("reason", reason, max_chars=REASON_MAX)
        check.raise_if_any()
        async with self._database.transaction() as session:
            actor = await _admin(session, actor_id)
            if await session.scalar(_IN_PAST, {"until": until}):
                check.add("until", "must be in the future")
                check.raise_if_any()
            target = await _status(session, username, lock=True)
            if target.role == "admin":
                raise FailedPrecondition(
                    message="an admin account cannot be blocked: revoke its role first",
                    reason=Reason.ACCOUNT_IS_ADMIN,
                )
            await session.execute(
                _SET_BLOCK, {"id": target.account_id, "until": until, "reason": reason}
            )
            await end_sessions(session, target.account_id)
            await record_audit(
                session, actor, "account_blocked", target.account_id, reason=reason, until=until
            )
            return await _status(session, username)

    async def unblock(self, actor_id: str, username: str, *, reason: str) -> AccountStatus:
        """Lift an account's block (audited even when there was none)."""
        check = Violations()
        reason = check.text("reason", reason, max_chars=REASON_MAX, required=False)
        check.raise_if_any()
        async with self._database.transaction() as session:
            actor = await _admin(session, actor_id)
            target = await _status(session, username, lock=True)
            await session.execute(_CLEAR_BLOCK, {"id": target.account_id})
            await record_audit(
                session, actor, "account_unblocked", target.account_id, reason=reason
            )
            return await _status(session, username)

    async def audit_log(
        self, actor_id: str, *, username: str = "", page_size: int, before_id: int = 0
    ) -> AuditPage:
        """Return a page of the audit log (of one account when username is set), newest first;
        reading it is itself not audited (it holds no personal data beyond usernames)."""
        check = Violations()
        check.page(page_size, before_id, maximum=AUDIT_PAGE_MAX, before_field="before_id")
        check.raise_if_any()
        async with self._database.transaction() as session:
            await _admin(session, actor_id)
            account = None
            if username:
                account = (await _status(session, username)).account_id
            rows = (
                await session.execute(
                    _AUDIT_PAGE,
                    {
                        "account": account,
                        "before": before_id or 2**63 - 1,
                        "limit": page_size + 1,
                    },
                )
            ).all()
        entries = [_entry(row) for row in rows[:page_size]]
        return AuditPage(entries=entries, more=len(rows) > page_size)


async def set_role(database: Database, email: str, role: str) -> str:
    """Give the account with this email a role (the operator's command; audited with no actor)
    and return its username; NotFound when no account has the email."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    async with database.transaction() as session:
        row = (
            await session.execute(_SET_ROLE, {"email": email.strip().lower(), "role": role})
        ).one_or_none()
        if row is None:
            raise NotFound(message="no account has this email", reason=Reason.ACCOUNT_NOT_FOUND)
        action = "role_granted" if role == "admin" else "role_revoked"
        await record_audit(session, None, action, row.id, reason=f"role {role} by the operator")
        return str(row.username)


async def _admin(session: AsyncSession, actor_id: str) -> uuid.UUID | None:
    """The actor's id when it is an admin in good standing; PermissionDenied otherwise."""
    try:
        actor = uuid.UUID(actor_id)
    except ValueError:
        actor = None
    if actor is None or not await session.scalar(_IS_ADMIN, {"id": actor}):
        raise PermissionDenied(message="this needs an admin account", reason=Reason.ADMIN_REQUIRED)
    return actor


async def _status(session: AsyncSession, username: str, *, lock: bool = False) -> AccountStatus:
    """Read (and optionally lock) the account with a username; NotFound when there is none."""
    key = lookup_key(username.strip(), max_chars=USERNAME_MAX)
    row = None
    if key is not None:
        statement = _STATUS_FOR_UPDATE if lock else _STATUS
        row = (await session.execute(statement, {"username": key})).one_or_none()
    if row is None:
        raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
    return AccountStatus(
        account_id=row.id,
        username=row.username,
        email=row.email,
        role=row.role,
        created_at=row.created_at,
        email_verified=row.email_verified_at is not None,
        blocked_till=row.blocked_till if row.blocked else None,
        blocked_reason=row.blocked_reason if row.blocked else "",
    )


async def record_audit(
    session: AsyncSession,
    actor: uuid.UUID | None,
    action: str,
    account: uuid.UUID,
    *,
    reason: str = "",
    until: datetime | None = None,
) -> None:
    """Append one entry to the audit log inside the caller's transaction."""
    await session.execute(
        _APPEND,
        {"actor": actor, "action": action, "account": account, "reason": reason, "until": until},
    )


def _entry(row: Row[Any]) -> AuditEntry:
    """Build an audit entry from a row of _AUDIT_PAGE."""
    return AuditEntry(
        id=row.id,
        created_at=row.created_at,
        actor_username=row.actor_username or "",
        action=row.action,
        account_username=row.account_username or "",
        reason=row.reason,
        blocked_till=row.blocked_till,
    )


_IS_ADMIN = text(
    "SELECT true FROM accounts WHERE id = :id AND role = 'admin' "
    "AND (blocked_till IS NULL OR blocked_till <= now())"
)
_IN_PAST = text("SELECT CAST(:until AS timestamptz) <= now()")
_STATUS_COLUMNS = (
    "SELECT id, username, email, role, created_at, email_verified_at, blocked_till, "
    "blocked_reason, coalesce(blocked_till > now(), false) AS blocked "
    "FROM accounts WHERE username = :username"
)
_STATUS = text(_STATUS_COLUMNS)
_STATUS_FOR_UPDATE = text(_STATUS_COLUMNS + " FOR UPDATE")
_SET_BLOCK = text(
    "UPDATE accounts SET blocked_till = :until, blocked_reason = :reason WHERE id = :id"
)
_CLEAR_BLOCK = text("UPDATE accounts SET blocked_till = NULL, blocked_reason = '' WHERE id = :id")
_SET_ROLE = text("UPDATE accounts SET role = :role WHERE email = :email RETURNING id, username")
_APPEND = text(
    "INSERT INTO audit_events (actor_id, action, account_id, reason, blocked_till) "
    "VALUES (:actor, :action, :account, :reason, :until)"
)
_AUDIT_PAGE = text(
    """
    SELECT e.id, e.created_at, actor.username AS actor_username, e.action,
           target.username AS account_username, e.reason, e.blocked_till
    FROM audit_events e
    LEFT JOIN accounts actor ON actor.id = e.actor_id
    LEFT JOIN accounts target ON target.id = e.account_id
    WHERE e.id < :before
      AND (CAST(:account AS uuid) IS NULL OR e.account_id = CAST(:account AS uuid))
    ORDER BY e.id DESC
    LIMIT :limit
    """
)
# The sweeper's job: lift blocks that are over and audit each, in one statement.
LIFT_EXPIRED_BLOCKS = text(
    """
    WITH due AS (
        SELECT id FROM accounts
        WHERE blocked_till IS NOT NULL AND blocked_till <= now()
        ORDER BY blocked_till
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), lifted AS (
        UPDATE accounts a SET blocked_till = NULL, blocked_reason = ''
        FROM due WHERE a.id = due.id
        RETURNING a.id
    )
    INSERT INTO audit_events (action, account_id, reason)
    SELECT 'block_expired', id, 'the block ended' FROM lifted
    RETURNING id
    """
)
