"""Refresh-token families (one per session): their advisory locks, their liveness, their end.

Rotation and revocation of one family are serialised by a transaction-scoped advisory lock on
the family, taken before any row lock of its session or tokens. A row lock alone is not enough
under READ COMMITTED: a revoking UPDATE that waits for a rotation re-checks only the rows it saw
when it started, so the successor that rotation inserts would stay live.

A transaction that ends several families takes all their locks in one statement, in ascending
key order, before it touches their rows; one that rotates takes a single family's lock. So no two
transactions wait for each other's family locks in a cycle, and none waits for a family lock
while holding a row of a family. Families whose keys collide merely share a lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import ColumnElement, Text, bindparam, cast, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Uuid

from data_access.models import LoginSession, RefreshToken

# First key of the two-key advisory locks on families ("rtfm" in ASCII). Two-key locks live
# apart from the one-key ones of the sweeper and migrations, so the keys cannot collide.
FAMILY_LOCK_SPACE = 0x7274666D

# PostgreSQL evaluates a select list holding a volatile function after ORDER BY, row by row in
# the sorted order: the locks are taken in ascending key order.
_LOCK_FAMILIES = text(
    "SELECT pg_advisory_xact_lock(:space, k) FROM ("
    "SELECT DISTINCT hashtext(CAST(f AS text)) AS k FROM unnest(:families) AS f"
    ") AS keys ORDER BY k"
).bindparams(bindparam("families", type_=ARRAY(Uuid())), space=FAMILY_LOCK_SPACE)


def live_token() -> ColumnElement[bool]:
    """The condition of a refresh token that can still be rotated (its session aside)."""
    return RefreshToken.revoked_at.is_(None) & _unspent()


def _unspent() -> ColumnElement[bool]:
    """The condition of a refresh token that is neither consumed nor expired."""
    return RefreshToken.consumed_at.is_(None) & (RefreshToken.expires_at > func.now())


async def lock_family_of_token(session: AsyncSession, token_hash: str) -> uuid.UUID | None:
    """Lock the family of a token until the transaction ends and return its id; None when the
    token is unknown."""
    found = (
        await session.execute(
            select(
                RefreshToken.family_id,
                func.pg_advisory_xact_lock(
                    FAMILY_LOCK_SPACE, func.hashtext(cast(RefreshToken.family_id, Text))
                ),
            ).where(RefreshToken.token_hash == token_hash)
        )
    ).one_or_none()
    return None if found is None else found.family_id


async def lock_families(session: AsyncSession, family_ids: Collection[uuid.UUID]) -> None:
    """Lock several families until the transaction ends, in the one order all callers share."""
    if family_ids:
        await session.execute(_LOCK_FAMILIES, {"families": list(family_ids)})


async def revoke_families(
    session: AsyncSession,
    family_ids: Collection[uuid.UUID],
    *,
    account_id: uuid.UUID | None = None,
) -> int:
    """Revoke every not yet revoked token of the families (whose locks the caller holds) whose
    sessions have not ended (and belong to account_id, when given); return how many of them
    were live sessions."""
    if not family_ids:
        return 0
    conditions = [
        RefreshToken.family_id.in_(family_ids),
        RefreshToken.revoked_at.is_(None),
        LoginSession.id == RefreshToken.family_id,
        LoginSession.ends_at > func.now(),
    ]
    if account_id is not None:
        conditions.append(LoginSession.account_id == account_id)
    # A statement run after the locks were granted sees every successor committed before them.
    # Tokens of ended sessions are dead already, and left alone: the sweeper may be deleting
    # them (sweeper.py).
    revoked = await session.execute(
        update(RefreshToken)
        .where(*conditions)
        .values(revoked_at=func.now())
        .returning(
            RefreshToken.family_id,
            # RETURNING sees the revoked row; WHERE made sure it was not revoked before.
            _unspent().label("live"),
        )
        .execution_options(synchronize_session=False)
    )
    return len({row.family_id for row in revoked if row.live})
