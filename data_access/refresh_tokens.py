"""Refresh-token families: start one per login, rotate on every refresh, revoke on reuse or logout.

Only SHA-256 hashes are stored. A token is usable while it is neither consumed, revoked nor
expired, no token of its family is revoked and its session has not outlived its lifetime;
presenting a consumed token again means it leaked, so its whole family is revoked — except the
same rotation repeated within a short reuse window (two tabs refreshing at once): the caller
derives the successor from the presented token, so a repeat names the very successor stored the
first time, and gets it again.

Rotation and revocation of one family are serialised by a transaction-scoped advisory lock on
the family, taken before any row lock. A row lock alone is not enough under READ COMMITTED: a
revoking UPDATE that waits for a rotation re-checks only the rows it saw when it started, so
the successor that rotation inserts would stay live.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Text, cast, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.accounts import account_record
from data_access.database import Database, violated_constraint
from data_access.models import Account, RefreshToken
from data_access.records import Rotation
from data_access.validation import Violations, parse_id
from meshkit.errors import AlreadyExists, FailedPrecondition, NotFound
from meshkit.reasons import Reason

_TOKEN_HASH_CONSTRAINT = "uq_refresh_tokens_token_hash"
_ACCOUNT_CONSTRAINT = "fk_refresh_tokens_account_id_accounts"
# First key of the two-key advisory locks on families ("rtfm" in ASCII). Two-key locks live
# apart from the one-key ones of the sweeper and migrations, so the keys cannot collide.
_FAMILY_LOCK_SPACE = 0x7274666D


@dataclass(frozen=True)
class _Reused:
    """The presented token had been consumed before; its family is now revoked."""


@dataclass(frozen=True)
class _Policy:
    """How long a rotation may be repeated, and how long a session may live."""

    reuse_window: timedelta
    session_lifetime: timedelta | None


class RefreshTokenStore:
    """Stores refresh-token hashes and enforces single use within a family."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(self, account_id: str, token_hash: str, expires_at: datetime) -> uuid.UUID:
        """Store the first token of a new family and return the family id; NotFound
        (ACCOUNT_NOT_FOUND) when the account does not exist."""
        check = Violations()
        token_hash = check.sha256_hex("token_hash", token_hash)
        check.raise_if_any()
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        family_id = uuid.uuid4()
        async with self._database.transaction() as session:
            await _insert_token(
                session,
                account_id=owner,
                family_id=family_id,
                token_hash=token_hash,
                expires_at=expires_at,
                field="token_hash",
            )
        return family_id

    async def rotate(
        self,
        token_hash: str,
        new_token_hash: str,
        new_expires_at: datetime,
        *,
        reuse_window: timedelta = timedelta(0),
        session_lifetime: timedelta | None = None,
    ) -> Rotation:
        """Consume a token and store its successor in the same family.

        NotFound (REFRESH_TOKEN_INVALID) when the token is unknown, expired, revoked or its
        session is older than session_lifetime; FailedPrecondition (REFRESH_TOKEN_REUSED) when
        it was already consumed, after the whole family has been revoked for good — unless it
        was consumed at most reuse_window ago for this same successor, which is then returned
        again (Rotation.repeated).
        """
        check = Violations()
        token_hash = check.sha256_hex("token_hash", token_hash)
        new_token_hash = check.sha256_hex("new_token_hash", new_token_hash)
        if token_hash == new_token_hash:
            check.add("new_token_hash", "must differ from token_hash")
        if reuse_window < timedelta(0):
            check.add("reuse_window", "must not be negative")
        if session_lifetime is not None and session_lifetime <= timedelta(0):
            check.add("session_lifetime", "must be positive")
        check.raise_if_any()
        policy = _Policy(reuse_window, session_lifetime)
        async with self._database.transaction() as session:
            outcome = await _rotate(session, token_hash, new_token_hash, new_expires_at, policy)
        # Raised only now, after the block above committed the family's revocation.
        if isinstance(outcome, _Reused):
            raise FailedPrecondition(
                message="refresh token was already used; its family is revoked",
                reason=Reason.REFRESH_TOKEN_REUSED,
            )
        return outcome

    async def revoke_family(self, token_hash: str) -> None:
        """Revoke every token of the family a token belongs to; unknown tokens are ignored."""
        check = Violations()
        token_hash = check.sha256_hex("token_hash", token_hash)
        check.raise_if_any()
        async with self._database.transaction() as session:
            family_id = await _lock_family(session, token_hash)
            if family_id is not None:
                await _revoke(session, family_id)


async def _rotate(
    session: AsyncSession,
    token_hash: str,
    new_token_hash: str,
    new_expires_at: datetime,
    policy: _Policy,
) -> Rotation | _Reused:
    """Rotate inside the caller's transaction; the family stays locked until it ends."""
    # The family lock also serialises concurrent refreshes of one token: the second one waits,
    # then sees the token consumed: a repeat within the window, or a reuse.
    family_id = await _lock_family(session, token_hash)
    if family_id is None:
        raise _invalid()
    # Read only now, under the lock, so a revocation committed while this call waited is seen.
    # FOR UPDATE keeps the sweeper (which skips locked rows) off the presented row.
    family_revoked = (
        exists()
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_not(None))
        .correlate(None)
    )
    found = (
        await session.execute(
            select(RefreshToken, Account, func.now(), family_revoked)
            .join(Account, Account.id == RefreshToken.account_id)
            .where(RefreshToken.token_hash == token_hash)
            .with_for_update(of=RefreshToken)
        )
    ).one_or_none()
    if found is None:
        raise _invalid()
    token, account, now, revoked = found
    session_ends = (
        None
        if policy.session_lifetime is None
        else token.session_started_at + policy.session_lifetime
    )
    # Any revoked sibling means the family was logged out or caught reusing: none of it lives on.
    if revoked or token.expires_at <= now or (session_ends is not None and session_ends <= now):
        raise _invalid()
    if token.consumed_at is not None:
        if _repeats(token, new_token_hash, now, policy.reuse_window):
            successor = await session.scalar(
                select(RefreshToken.expires_at).where(RefreshToken.token_hash == new_token_hash)
            )
            if successor is not None:
                return Rotation(
                    account=account_record(account),
                    family_id=token.family_id,
                    expires_at=successor,
                    repeated=True,
                )
        await _revoke(session, token.family_id)
        return _Reused()
    token.consumed_at = now
    token.successor_hash = new_token_hash
    expires_at = new_expires_at if session_ends is None else min(new_expires_at, session_ends)
    await _insert_token(
        session,
        account_id=token.account_id,
        family_id=token.family_id,
        token_hash=new_token_hash,
        expires_at=expires_at,
        field="new_token_hash",
        session_started_at=token.session_started_at,
    )
    return Rotation(
        account=account_record(account), family_id=token.family_id, expires_at=expires_at
    )


def _repeats(token: RefreshToken, new_token_hash: str, now: datetime, window: timedelta) -> bool:
    """Whether this rotation repeats the one that consumed token, within the reuse window."""
    return (
        token.consumed_at is not None
        and token.successor_hash == new_token_hash
        and now - token.consumed_at <= window
    )


async def _insert_token(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    family_id: uuid.UUID,
    token_hash: str,
    expires_at: datetime,
    field: str,
    session_started_at: datetime | None = None,
) -> None:
    """Insert one token row (session_started_at: that of its family; None for a new login),
    turning broken constraints into the caller's errors."""
    values = {
        "id": uuid.uuid4(),
        "account_id": account_id,
        "family_id": family_id,
        "token_hash": token_hash,
        "expires_at": expires_at,
    }
    if session_started_at is not None:
        values["session_started_at"] = session_started_at
    try:
        await session.execute(insert(RefreshToken).values(**values))
    except IntegrityError as exc:
        constraint = violated_constraint(exc)
        if constraint == _ACCOUNT_CONSTRAINT:
            raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND) from None
        if constraint == _TOKEN_HASH_CONSTRAINT:
            # 256-bit random tokens do not collide; a repeated hash is a caller's bug.
            raise AlreadyExists(
                message="this refresh token hash is already stored",
                reason=Reason.REFRESH_TOKEN_EXISTS,
                metadata={"field": field},
            ) from None
        raise


async def _lock_family(session: AsyncSession, token_hash: str) -> uuid.UUID | None:
    """Lock the family of a token until the transaction ends and return its id; None when the
    token is unknown."""
    # Every transaction takes at most this one advisory lock, before any row lock, and then
    # locks rows of that family only: no two can wait for each other in a cycle. Families
    # whose hashes collide merely share a lock.
    found = (
        await session.execute(
            select(
                RefreshToken.family_id,
                func.pg_advisory_xact_lock(
                    _FAMILY_LOCK_SPACE, func.hashtext(cast(RefreshToken.family_id, Text))
                ),
            ).where(RefreshToken.token_hash == token_hash)
        )
    ).one_or_none()
    return None if found is None else found.family_id


async def _revoke(session: AsyncSession, family_id: uuid.UUID) -> None:
    """Mark every not yet revoked token of a family revoked; the caller holds the family lock."""
    # A statement run after the lock was granted sees every successor committed before it.
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .execution_options(synchronize_session=False)
    )


def _invalid() -> NotFound:
    """The one answer for unknown, expired and revoked tokens."""
    return NotFound(
        message="refresh token is invalid, expired or revoked", reason=Reason.REFRESH_TOKEN_INVALID
    )
