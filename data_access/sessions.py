"""Sessions (logins) of an account: listed while live, ended one at a time or all but one, and
marked when they prove their credentials again (a re-authentication).

A session is live while it has not reached its end and its refresh-token family holds a token
that can still be rotated; ending it revokes the family (families.py), under the family's lock,
so that a rotation running at the same time cannot leave a live successor behind.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.database import Database
from data_access.families import live_token, lock_families, revoke_families
from data_access.models import LoginSession, RefreshToken
from data_access.records import Device, NewSecurityEvent, SessionRecord
from data_access.security_events import append_event, check_event_account, checked_event
from data_access.validation import Violations, parse_id
from meshkit.errors import NotFound
from meshkit.reasons import Reason

LIST_LIMIT = 1_000


class SessionStore:
    """Lists and ends the sessions of an account."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def live(self, account_id: str) -> list[SessionRecord]:
        """Return the live sessions of an account, most recently used first (at most
        LIST_LIMIT); NotFound (ACCOUNT_NOT_FOUND) for a malformed account id."""
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        query = (
            select(
                LoginSession.id,
                LoginSession.created_at,
                LoginSession.last_used_at,
                func.least(func.max(RefreshToken.expires_at), LoginSession.ends_at).label(
                    "expires_at"
                ),
                LoginSession.remembered,
                LoginSession.user_agent,
                LoginSession.client_ip,
            )
            .join(RefreshToken, RefreshToken.family_id == LoginSession.id)
            .where(
                LoginSession.account_id == owner,
                LoginSession.ends_at > func.now(),
                live_token(),
            )
            .group_by(LoginSession.id)
            .order_by(LoginSession.last_used_at.desc(), LoginSession.id)
            .limit(LIST_LIMIT)
        )
        async with self._database.read() as connection:
            rows = (await connection.execute(query)).all()
        return [
            SessionRecord(
                id=row.id,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                expires_at=row.expires_at,
                remembered=row.remembered,
                device=Device(user_agent=row.user_agent, client_ip=row.client_ip),
            )
            for row in rows
        ]

    async def end_one(self, account_id: str, session_id: str) -> int:
        """End one live session of an account and return 1; NotFound (SESSION_NOT_FOUND) when
        it is not a live session of that account."""
        owner = parse_id(account_id, reason=Reason.SESSION_NOT_FOUND, what="session")
        key = parse_id(session_id, reason=Reason.SESSION_NOT_FOUND, what="session")
        async with self._database.transaction() as session:
            await lock_families(session, [key])
            ended = await revoke_families(session, [key], account_id=owner)
            if not ended:
                raise NotFound(message="session not found", reason=Reason.SESSION_NOT_FOUND)
        return ended

    async def end_all_except(self, account_id: str, keep_session_id: str) -> int:
        """End every live session of an account except keep_session_id (empty: every one) and
        return how many ended; NotFound (ACCOUNT_NOT_FOUND) for a malformed account id."""
        check = Violations()
        keep = check.optional_id("all_except_session_id", keep_session_id)
        check.raise_if_any()
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            return await end_sessions(session, owner, keep=keep)

    async def mark_authenticated(
        self, account_id: str, session_id: str, event: NewSecurityEvent
    ) -> datetime:
        """Record that a live session of an account proved its credentials now, appending
        event (about that session when it names none) in the same transaction, and return
        that time; NotFound (SESSION_NOT_FOUND) when it is not a live session of the account."""
        check = Violations()
        checked = checked_event(check, event)
        check_event_account(check, event, account_id)
        check.raise_if_any()
        owner = parse_id(account_id, reason=Reason.SESSION_NOT_FOUND, what="session")
        key = parse_id(session_id, reason=Reason.SESSION_NOT_FOUND, what="session")
        # Live as ListSessions has it: a logged-out (revoked) or idle-expired session has
        # nothing left to re-authenticate, though its end may be far off.
        has_live_token = exists().where(RefreshToken.family_id == LoginSession.id, live_token())
        async with self._database.transaction() as session:
            marked = await session.scalar(
                update(LoginSession)
                .where(
                    LoginSession.id == key,
                    LoginSession.account_id == owner,
                    LoginSession.ends_at > func.now(),
                    has_live_token,
                )
                .values(authenticated_at=func.now())
                .returning(LoginSession.authenticated_at)
                .execution_options(synchronize_session=False)
            )
            if marked is None:
                raise NotFound(message="session not found", reason=Reason.SESSION_NOT_FOUND)
            if checked.session_id is None:
                checked = replace(checked, session_id=key)
            await append_event(session, owner, checked)
        return marked


async def end_sessions(
    session: AsyncSession, account_id: uuid.UUID, *, keep: uuid.UUID | None = None
) -> int:
    """End every live session of an account but keep inside the caller's transaction and
    return how many ended."""
    # Read before the locks: a session that is not live now cannot come alive, and one a
    # login creates meanwhile starts after this call.
    has_live_token = exists().where(RefreshToken.family_id == LoginSession.id, live_token())
    query = select(LoginSession.id).where(
        LoginSession.account_id == account_id, LoginSession.ends_at > func.now(), has_live_token
    )
    if keep is not None:
        query = query.where(LoginSession.id != keep)
    family_ids = list(await session.scalars(query))
    await lock_families(session, family_ids)
    return await revoke_families(session, family_ids, account_id=account_id)
