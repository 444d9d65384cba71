"""Refresh-token families: start one per login, rotate on every refresh, revoke on reuse or logout.

Only SHA-256 hashes are stored. A token is usable while it is neither consumed, revoked nor
expired, no token of its family is revoked and its session has not reached its end (the
sessions row, whose id is the family's); presenting a consumed token again means it leaked, so
its whole family is revoked — except the same rotation repeated within a short reuse window (two
tabs refreshing at once): the caller derives the successor from the presented token, so a
repeat names the very successor stored the first time, and gets it again.

Every change of a family happens under its advisory lock (families.py), taken before any row
lock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Text, bindparam, exists, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Uuid

from data_access.accounts import account_record
from data_access.database import Database, violated_constraint
from data_access.families import lock_family_of_token, revoke_families
from data_access.lifecycle import admit_login
from data_access.models import Account, LoginSession, RefreshToken
from data_access.records import Device, NewSession, Rotation, StartedSession
from data_access.security_events import CheckedEvent, append_event
from data_access.validation import Violations, parse_id
from meshkit.errors import AlreadyExists, FailedPrecondition, NotFound
from meshkit.reasons import Reason

# The common rotation (a live token presented once) in one round trip, under the family lock the
# caller holds: consume the presented token, insert its successor (expiring at the session's end
# at the latest), record the session's use, and return what Rotation needs. No row comes back
# when the token is anything but live; _rotate then finds out why, statement by statement. The
# conditions are live_token() and a live session, as the slow path checks them.
_ROTATE_LIVE = text(
    """
    WITH presented AS (
        SELECT t.id, t.account_id, s.created_at AS started_at, s.ends_at, s.remembered,
               s.authenticated_at
        FROM refresh_tokens AS t JOIN sessions AS s ON s.id = t.family_id
        WHERE t.token_hash = :token_hash AND t.family_id = :family_id
          AND t.consumed_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > now()
          AND s.ends_at > now()
          AND NOT EXISTS (
              SELECT 1 FROM refresh_tokens AS r
              WHERE r.family_id = :family_id AND r.revoked_at IS NOT NULL
          )
        FOR UPDATE OF t
    ), consumed AS (
        UPDATE refresh_tokens SET consumed_at = now(), successor_hash = :new_token_hash
        FROM presented WHERE refresh_tokens.id = presented.id
        RETURNING presented.*
    ), successor AS (
        INSERT INTO refresh_tokens (id, account_id, family_id, token_hash, expires_at)
        SELECT :new_id, account_id, :family_id, :new_token_hash, LEAST(:new_expires_at, ends_at)
        FROM consumed
        RETURNING expires_at
    ), used AS (
        UPDATE sessions SET last_used_at = now(),
            user_agent = COALESCE(:user_agent, user_agent),
            client_ip = COALESCE(:client_ip, client_ip)
        WHERE id = :family_id AND EXISTS (SELECT 1 FROM consumed)
    )
    SELECT a.id, a.email, a.username, a.created_at, a.email_verified_at,
           c.started_at, c.remembered, c.authenticated_at,
           (SELECT expires_at FROM successor) AS expires_at
    FROM consumed AS c JOIN accounts AS a ON a.id = c.account_id
    """
).bindparams(
    bindparam("family_id", type_=Uuid()),
    bindparam("new_id", type_=Uuid()),
    bindparam("new_expires_at", type_=DateTime(timezone=True)),
    bindparam("user_agent", type_=Text()),
    bindparam("client_ip", type_=Text()),
)

_TOKEN_HASH_CONSTRAINT = "uq_refresh_tokens_token_hash"
_ACCOUNT_CONSTRAINT = "fk_sessions_account_id_accounts"


@dataclass(frozen=True)
class _Reused:
    """The presented token had been consumed before; its family is now revoked."""


@dataclass(frozen=True)
class _Successor:
    """What a rotation stores, and for how long a repeat of it is accepted."""

    token_hash: str
    expires_at: datetime
    reuse_window: timedelta
    device: Device | None


class RefreshTokenStore:
    """Stores refresh-token hashes and enforces single use within a family."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(self, login: NewSession) -> StartedSession:
        """Store a session and the first token of its family (expiring at the session's end
        at the latest) in one transaction; NotFound (ACCOUNT_NOT_FOUND) when the account does
        not exist."""
        check = Violations()
        login = checked_login(check, login)
        check.raise_if_any()
        owner = parse_id(login.account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            return await start_session(session, owner, login)

    async def rotate(
        self,
        token_hash: str,
        new_token_hash: str,
        new_expires_at: datetime,
        *,
        reuse_window: timedelta = timedelta(0),
        device: Device | None = None,
    ) -> Rotation:
        """Consume a token and store its successor (expiring at the session's end at the
        latest) in the same family, recording the session's use (and device, when given).

        NotFound (REFRESH_TOKEN_INVALID) when the token is unknown, expired, revoked or its
        session has ended; FailedPrecondition (REFRESH_TOKEN_REUSED) when it was already
        consumed, after the whole family has been revoked for good — unless it was consumed at
        most reuse_window ago for this same successor, which is then returned again
        (Rotation.repeated).
        """
        check = Violations()
        token_hash = check.sha256_hex("token_hash", token_hash)
        new_token_hash = check.sha256_hex("new_token_hash", new_token_hash)
        if token_hash == new_token_hash:
            check.add("new_token_hash", "must differ from token_hash")
        if reuse_window < timedelta(0):
            check.add("reuse_window", "must not be negative")
        if device is not None:
            device = check.device("device", device)
        check.raise_if_any()
        successor = _Successor(new_token_hash, new_expires_at, reuse_window, device)
        async with self._database.transaction() as session:
            outcome = await _rotate(session, token_hash, successor)
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
            family_id = await lock_family_of_token(session, token_hash)
            if family_id is not None:
                await revoke_families(session, [family_id])


def checked_login(check: Violations, login: NewSession, *, prefix: str = "") -> NewSession:
    """Return login with its token hash and device in canonical form, recording its problems
    in check (fields named under prefix, such as "session.")."""
    return replace(
        login,
        token_hash=check.sha256_hex(f"{prefix}token_hash", login.token_hash),
        device=check.device(f"{prefix}device", login.device),
    )


async def start_session(
    session: AsyncSession, owner: uuid.UUID, login: NewSession, *, prefix: str = ""
) -> StartedSession:
    """Store a session of owner and the first token of its family (a login checked by
    checked_login) inside the caller's transaction; NotFound (ACCOUNT_NOT_FOUND) when the
    account does not exist or its deletion is due; PermissionDenied (ACCOUNT_BLOCKED) while an
    admin blocks it. A deactivated account is restored (lifecycle.admit_login)."""
    await admit_login(session, owner, login.device)
    session_id = uuid.uuid4()
    try:
        inserted = await session.execute(
            insert(LoginSession)
            .values(
                id=session_id,
                account_id=owner,
                ends_at=login.ends_at,
                remembered=login.remembered,
                user_agent=login.device.user_agent,
                client_ip=login.device.client_ip,
            )
            .returning(LoginSession.created_at)
        )
    except IntegrityError as exc:
        if violated_constraint(exc) == _ACCOUNT_CONSTRAINT:
            raise _account_not_found() from None
        raise
    started = inserted.scalar_one()
    await _insert_token(
        session,
        account_id=owner,
        family_id=session_id,
        token_hash=login.token_hash,
        expires_at=min(login.expires_at, login.ends_at),
        field=f"{prefix}token_hash",
    )
    return StartedSession(id=session_id, created_at=started)


async def _rotate(
    session: AsyncSession, token_hash: str, successor: _Successor
) -> Rotation | _Reused:
    """Rotate inside the caller's transaction; the family stays locked until it ends."""
    # The family lock also serialises concurrent refreshes of one token: the second one waits,
    # then sees the token consumed: a repeat within the window, or a reuse.
    family_id = await lock_family_of_token(session, token_hash)
    if family_id is None:
        raise _invalid()
    rotated = await _rotate_live(session, token_hash, family_id, successor)
    if rotated is not None:
        return rotated
    # Read only now, under the lock, so a revocation committed while this call waited is seen.
    # FOR UPDATE keeps the sweeper (which skips locked rows) off the presented row.
    family_revoked = (
        exists()
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_not(None))
        .correlate(None)
    )
    found = (
        await session.execute(
            select(
                RefreshToken,
                Account,
                LoginSession.created_at,
                LoginSession.ends_at,
                LoginSession.remembered,
                LoginSession.authenticated_at,
                func.now(),
                family_revoked,
            )
            .join(Account, Account.id == RefreshToken.account_id)
            .join(LoginSession, LoginSession.id == RefreshToken.family_id)
            .where(RefreshToken.token_hash == token_hash)
            .with_for_update(of=RefreshToken)
        )
    ).one_or_none()
    if found is None:
        raise _invalid()
    token, account, started_at, ends_at, remembered, authenticated_at, now, revoked = found
    # Any revoked sibling means the family was logged out or caught reusing: none of it lives on.
    if revoked or token.expires_at <= now or ends_at <= now:
        raise _invalid()
    if token.consumed_at is not None:
        if _repeats(token, successor, now):
            expires_at = await session.scalar(
                select(RefreshToken.expires_at).where(
                    RefreshToken.token_hash == successor.token_hash
                )
            )
            if expires_at is not None:
                await _record_use(session, family_id, successor.device)
                return Rotation(
                    account=account_record(account),
                    family_id=family_id,
                    expires_at=expires_at,
                    session_started_at=started_at,
                    authenticated_at=authenticated_at,
                    remembered=remembered,
                    repeated=True,
                )
        await revoke_families(session, [family_id])
        # The owner's security log says so, in the transaction that ended the session.
        await append_event(
            session,
            account.id,
            CheckedEvent(
                kind="refresh_token_reused",
                device=successor.device or Device(),
                session_id=family_id,
                detail="a used refresh token was presented again; its session was ended",
            ),
        )
        return _Reused()
    token.consumed_at = now
    token.successor_hash = successor.token_hash
    expires_at = min(successor.expires_at, ends_at)
    await _insert_token(
        session,
        account_id=token.account_id,
        family_id=family_id,
        token_hash=successor.token_hash,
        expires_at=expires_at,
        field="new_token_hash",
    )
    await _record_use(session, family_id, successor.device)
    return Rotation(
        account=account_record(account),
        family_id=family_id,
        expires_at=expires_at,
        session_started_at=started_at,
        authenticated_at=authenticated_at,
        remembered=remembered,
    )


async def _rotate_live(
    session: AsyncSession, token_hash: str, family_id: uuid.UUID, successor: _Successor
) -> Rotation | None:
    """Rotate a live token in one statement (the family locked); None when it is not live."""
    device = successor.device
    try:
        row = (
            await session.execute(
                _ROTATE_LIVE,
                {
                    "token_hash": token_hash,
                    "family_id": family_id,
                    "new_id": uuid.uuid4(),
                    "new_token_hash": successor.token_hash,
                    "new_expires_at": successor.expires_at,
                    "user_agent": None if device is None else device.user_agent,
                    "client_ip": None if device is None else device.client_ip,
                },
            )
        ).one_or_none()
    except IntegrityError as exc:
        raise _refused_successor(exc) from None
    if row is None:
        return None
    return Rotation(
        account=account_record(row),
        family_id=family_id,
        expires_at=row.expires_at,
        session_started_at=row.started_at,
        authenticated_at=row.authenticated_at,
        remembered=row.remembered,
    )


def _repeats(token: RefreshToken, successor: _Successor, now: datetime) -> bool:
    """Whether this rotation repeats the one that consumed token, within the reuse window."""
    return (
        token.consumed_at is not None
        and token.successor_hash == successor.token_hash
        and now - token.consumed_at <= successor.reuse_window
    )


async def _record_use(session: AsyncSession, family_id: uuid.UUID, device: Device | None) -> None:
    """Record that the session was just refreshed, from device when it is known."""
    values: dict[str, object] = {"last_used_at": func.now()}
    if device is not None:
        values.update(user_agent=device.user_agent, client_ip=device.client_ip)
    await session.execute(
        update(LoginSession)
        .where(LoginSession.id == family_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def _insert_token(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    family_id: uuid.UUID,
    token_hash: str,
    expires_at: datetime,
    field: str,
) -> None:
    """Insert one token row, turning a repeated hash into the caller's error."""
    try:
        await session.execute(
            insert(RefreshToken).values(
                id=uuid.uuid4(),
                account_id=account_id,
                family_id=family_id,
                token_hash=token_hash,
                expires_at=expires_at,
            )
        )
    except IntegrityError as exc:
        raise _refused_successor(exc, field) from None


def _refused_successor(error: IntegrityError, field: str = "new_token_hash") -> Exception:
    """What a broken rule of a new token row means: its hash is stored already (AlreadyExists:
    256-bit random tokens do not collide, a repeated hash is a caller's bug), or the error
    itself."""
    if violated_constraint(error) == _TOKEN_HASH_CONSTRAINT:
        return AlreadyExists(
            message="this refresh token hash is already stored",
            reason=Reason.REFRESH_TOKEN_EXISTS,
            metadata={"field": field},
        )
    return error


def _account_not_found() -> NotFound:
    """The answer for a login of an account that does not exist."""
    return NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)


def _invalid() -> NotFound:
    """The one answer for unknown, expired and revoked tokens."""
    return NotFound(
        message="refresh token is invalid, expired or revoked", reason=Reason.REFRESH_TOKEN_INVALID
    )
