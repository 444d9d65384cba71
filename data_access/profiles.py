"""Profiles: read by account id or username, and changed field by field."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.changes import ChangeFeed, recorded_position
from data_access.database import Database, FastQuery, violated_constraint
from data_access.models import USERNAME_MAX, Account, Profile
from data_access.records import ProfileFields, ProfileRecord
from data_access.social_graph import approve_all_requests, lock_with_requesters
from data_access.validation import Violations, lookup_key, parse_id
from meshkit.errors import AlreadyExists, NotFound, ResourceExhausted
from meshkit.reasons import Reason

# update_time is the time of the change itself (clock_timestamp), not of its transaction's start
# (now()): concurrent writers of one profile wait for its row lock, and the one that writes last
# must show the newest time.

# Generous bounds that only keep absurd payloads out; user_svc enforces the product's limits.
DISPLAY_NAME_MAX = 1_000
BIO_MAX = 10_000
WEBSITE_MAX = 2_000
PRONOUNS_MAX = 1_000
_USERNAME_CONSTRAINT = "uq_accounts_username"


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

    async def update(self, account_id: str, fields: ProfileFields) -> ProfileRecord:
        """Change the given fields (None keeps a field) and return the profile; NotFound
        (PROFILE_NOT_FOUND) when the account does not exist. Making a private profile public
        approves its pending follow requests in the same transaction."""
        changes = _checked_changes(fields)
        key = parse_id(account_id, reason=Reason.PROFILE_NOT_FOUND, what="profile")
        position = None
        async with self._database.transaction() as session:
            if changes:
                if fields.private is False:
                    await lock_with_requesters(session, key)
                was_private = await session.scalar(
                    select(Profile.private).where(Profile.account_id == key).with_for_update()
                )
                if was_private is None:
                    raise _not_found()
                await session.execute(
                    update(Profile)
                    .where(Profile.account_id == key)
                    .values(**changes, updated_at=func.clock_timestamp())
                    .execution_options(synchronize_session=False)
                )
                if was_private and fields.private is False:
                    await approve_all_requests(session, key)
                position = await recorded_position(session)
            profile = await _one(session, key)
        # Acknowledged once the change is on its way to every cache, ahead of this answer: a
        # read that follows usually finds the new profile everywhere (and surely within the
        # caches' staleness bound).
        await self._feed.delivered(position)
        return profile

    async def change_username(
        self, account_id: str, username: str, *, cooldown: timedelta
    ) -> ProfileRecord:
        """Give the account a new (already validated, lower-case) username and return its
        profile; AlreadyExists (USERNAME_TAKEN) when another account has it; ResourceExhausted
        (USERNAME_CHANGE_TOO_SOON) within cooldown of the last change. The current name is
        accepted as a no-op."""
        check = Violations()
        check.text("username", username, max_chars=USERNAME_MAX)
        if cooldown < timedelta(0):
            check.add("cooldown", "must not be negative")
        check.raise_if_any()
        key = parse_id(account_id, reason=Reason.PROFILE_NOT_FOUND, what="profile")
        position = None
        try:
            async with self._database.transaction() as session:
                row = (await session.execute(_LOCK_ACCOUNT, {"id": key})).one_or_none()
                if row is None:
                    raise _not_found()
                if row.username != username:
                    if row.since_change is not None and row.since_change < cooldown.total_seconds():
                        raise _too_soon(cooldown.total_seconds() - row.since_change)
                    await session.execute(_RENAME, {"id": key, "username": username})
                    position = await recorded_position(session)
                profile = await _one(session, key)
        except IntegrityError as exc:
            if violated_constraint(exc) == _USERNAME_CONSTRAINT:
                raise AlreadyExists(
                    message="this username is taken", reason=Reason.USERNAME_TAKEN
                ) from None
            raise
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


async def drop_avatar(
    session: AsyncSession, account_id: uuid.UUID, image_id: uuid.UUID
) -> int | None:
    """Clear an account's avatar inside the caller's transaction when it is image_id (about to be
    deleted); return the position of the change, or None when the avatar was another."""
    changed = await session.scalar(
        update(Profile)
        .where(Profile.account_id == account_id, Profile.avatar_image_id == image_id)
        .values(avatar_image_id=None, updated_at=func.clock_timestamp())
        .returning(Profile.account_id)
        .execution_options(synchronize_session=False)
    )
    if changed is None:
        return None
    return await recorded_position(session)


def _checked_changes(fields: ProfileFields) -> dict[str, Any]:
    """The column values of the fields that are set; InvalidArgument for unstorable text."""
    check = Violations()
    changes: dict[str, Any] = {}
    limits = {
        "display_name": DISPLAY_NAME_MAX,
        "bio": BIO_MAX,
        "website": WEBSITE_MAX,
        "pronouns": PRONOUNS_MAX,
    }
    for name, max_chars in limits.items():
        value = getattr(fields, name)
        if value is not None:
            changes[name] = check.text(name, value, max_chars=max_chars, required=False)
    if fields.private is not None:
        changes["private"] = fields.private
    check.raise_if_any()
    return changes


def _too_soon(wait_seconds: float) -> ResourceExhausted:
    """The answer for a username change within the cooldown of the previous one."""
    seconds = max(1, math.ceil(wait_seconds))
    return ResourceExhausted(
        message=f"the username changed recently: try again in {seconds} seconds",
        reason=Reason.USERNAME_CHANGE_TOO_SOON,
        retry_after_seconds=seconds,
    )


# Built once: the hot path only binds the key. Columns are named like ProfileRecord's fields.
_PROFILE_COLUMNS = select(
    Profile.account_id,
    Account.username,
    Profile.display_name,
    Profile.bio,
    Profile.avatar_image_id,
    Account.created_at.label("account_created_at"),
    Profile.updated_at,
    Profile.website,
    Profile.pronouns,
    Profile.private,
    Profile.follower_count,
    Profile.following_count,
    Profile.post_count,
    Account.email,
).join(
    # A deactivated account's profile is hidden from everyone (lifecycle.py).
    Account,
    (Account.id == Profile.account_id) & Account.deactivated_at.is_(None),
)
_BY_ACCOUNT_ID = _PROFILE_COLUMNS.where(Profile.account_id == bindparam("key"))
_FAST_BY_ACCOUNT_ID = FastQuery.of(_BY_ACCOUNT_ID)
_FAST_BY_USERNAME = FastQuery.of(_PROFILE_COLUMNS.where(Account.username == bindparam("key")))
_LOCK_ACCOUNT = text(
    "SELECT username, "
    "CAST(extract(epoch FROM clock_timestamp() - username_changed_at) AS float8) AS since_change "
    "FROM accounts WHERE id = :id FOR UPDATE"
)
_RENAME = text(
    "UPDATE accounts SET username = :username, username_changed_at = clock_timestamp() "
    "WHERE id = :id"
)


async def _one(session: AsyncSession, key: uuid.UUID) -> ProfileRecord:
    """Read one profile by account id inside a transaction; NotFound when there is none."""
    row = (await session.execute(_BY_ACCOUNT_ID, {"key": key})).one_or_none()
    if row is None:
        raise _not_found()
    return ProfileRecord(**row._mapping)


def _not_found() -> NotFound:
    """The answer for a profile that does not exist."""
    return NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND)
