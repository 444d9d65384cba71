"""Profiles: read by account id or username, and changed field by field."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from data_access.changes import ChangeFeed, recorded_position
from data_access.database import Database, FastQuery
from data_access.models import USERNAME_MAX, Account, Profile
from data_access.records import ProfileRecord
from data_access.validation import Violations, lookup_key, parse_id
from meshkit.errors import NotFound
from meshkit.reasons import Reason

# update_time is the time of the change itself (clock_timestamp), not of its transaction's start
# (now()): concurrent writers of one profile wait for its row lock, and the one that writes last
# must show the newest time.

# Generous bounds that only keep absurd payloads out; user_svc enforces the product's limits.
DISPLAY_NAME_MAX = 1_000
BIO_MAX = 10_000


class ProfileStore:
    """Reads and changes profiles."""

    def __init__(self, database: Database, feed: ChangeFeed) -> None:
        self._database = database
        self._feed = feed

    async def by_account_id(self, account_id: str) -> ProfileRecord:
        """Return the profile of an account, or NotFound (PROFILE_NOT_FOUND)."""
        key = parse_id(account_id, reason=Reason.PROFILE_NOT_FOUND, what="profile")
        return await self._read(_FAST_BY_ACCOUNT_ID, key)

    async def by_username(self, username: str) -> ProfileRecord:
        """Return the profile with a username (any case), or NotFound (PROFILE_NOT_FOUND)."""
        key = lookup_key(username.strip(), max_chars=USERNAME_MAX)
        if key is None:
            raise _not_found()
        return await self._read(_FAST_BY_USERNAME, key)

    async def _read(self, query: FastQuery, key: uuid.UUID | str) -> ProfileRecord:
        """Run one profile lookup; NotFound when there is no such profile."""
        row = await self._database.fetch_one(query, {"key": key})
        if row is None:
            raise _not_found()
        return ProfileRecord(**row)

    async def update(
        self, account_id: str, *, display_name: str | None = None, bio: str | None = None
    ) -> ProfileRecord:
        """Change the given fields (None keeps a field) and return the profile; NotFound
        (PROFILE_NOT_FOUND) when the account does not exist."""
        check = Violations()
        changes: dict[str, Any] = {}
        if display_name is not None:
            changes["display_name"] = check.text(
                "display_name", display_name, max_chars=DISPLAY_NAME_MAX, required=False
            )
        if bio is not None:
            changes["bio"] = check.text("bio", bio, max_chars=BIO_MAX, required=False)
        check.raise_if_any()
        key = parse_id(account_id, reason=Reason.PROFILE_NOT_FOUND, what="profile")
        position = None
        async with self._database.transaction() as session:
            if changes:
                changed = await session.scalar(
                    update(Profile)
                    .where(Profile.account_id == key)
                    .values(**changes, updated_at=func.clock_timestamp())
                    .returning(Profile.account_id)
                    .execution_options(synchronize_session=False)
                )
                if changed is None:
                    raise _not_found()
                position = await recorded_position(session)
            profile = await _one(session, _BY_ACCOUNT_ID, key)
        # Acknowledged once the change is on its way to every cache, ahead of this answer: a
        # read that follows usually finds the new profile everywhere (and surely within the
        # caches' staleness bound).
        await self._feed.delivered(position)
        return profile


async def set_avatar(
    session: AsyncSession, account_id: uuid.UUID, image_id: uuid.UUID
) -> int | None:
    """Make image_id the avatar of account_id inside the caller's transaction and return the
    position of the change (for ChangeFeed.delivered); NotFound (PROFILE_NOT_FOUND) when the
    profile does not exist."""
    changed = await session.scalar(
        update(Profile)
        .where(Profile.account_id == account_id)
        .values(avatar_image_id=image_id, updated_at=func.clock_timestamp())
        .returning(Profile.account_id)
        .execution_options(synchronize_session=False)
    )
    if changed is None:
        raise _not_found()
    return await recorded_position(session)


# Built once: the hot path only binds the key. Columns are named like ProfileRecord's fields.
_PROFILE_COLUMNS = select(
    Profile.account_id,
    Account.username,
    Profile.display_name,
    Profile.bio,
    Profile.avatar_image_id,
    Account.created_at.label("account_created_at"),
    Profile.updated_at,
).join(Account, Account.id == Profile.account_id)
_ProfileQuery = Select[uuid.UUID, str, str, str, uuid.UUID | None, datetime, datetime]
_BY_ACCOUNT_ID = _PROFILE_COLUMNS.where(Profile.account_id == bindparam("key"))
_FAST_BY_ACCOUNT_ID = FastQuery.of(_BY_ACCOUNT_ID)
_FAST_BY_USERNAME = FastQuery.of(_PROFILE_COLUMNS.where(Account.username == bindparam("key")))


async def _one(
    executor: AsyncSession | AsyncConnection, query: _ProfileQuery, key: uuid.UUID | str
) -> ProfileRecord:
    """Run a profile query for one key; NotFound when there is no such profile."""
    row = (await executor.execute(query, {"key": key})).one_or_none()
    if row is None:
        raise _not_found()
    return ProfileRecord(**row._mapping)


def _not_found() -> NotFound:
    """The answer for a profile that does not exist."""
    return NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND)
