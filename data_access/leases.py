"""Leases: a named role that one replica at a time holds until it expires (the mail sender).

A lease is one row. Taking it is one upsert that succeeds only when the row is free, expired or
already the taker's; PostgreSQL's row lock makes two takers wait for each other and the second
re-check the row the first wrote, so at most one of them holds the lease. Expired leases are
taken over, never swept.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Interval, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.models import Lease


async def take_lease(session: AsyncSession, name: str, holder: str, duration: timedelta) -> bool:
    """Take or renew the lease `name` for holder until now + duration, unless someone else
    holds it unexpired; return whether holder holds it now."""
    expires_at = func.now() + bindparam("duration", duration, type_=Interval())
    statement = insert(Lease).values(name=name, holder=holder, expires_at=expires_at)
    taken = await session.scalar(
        statement.on_conflict_do_update(
            index_elements=[Lease.name],
            set_={"holder": statement.excluded.holder, "expires_at": statement.excluded.expires_at},
            where=(Lease.holder == statement.excluded.holder) | (Lease.expires_at <= func.now()),
        ).returning(Lease.name)
    )
    return taken is not None


async def hold_lease(session: AsyncSession, name: str, holder: str) -> bool:
    """Return whether holder is the last to have taken the lease `name`, keeping it from being
    taken over until the transaction ends."""
    current = await session.scalar(
        select(Lease.holder).where(Lease.name == name).with_for_update(read=True)
    )
    return current == holder
