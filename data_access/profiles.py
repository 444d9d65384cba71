"""Profiles: read by account id or username, and changed field by field."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.database import Database
from data_access.models import USERNAME_MAX, Account, Profile
from data_access.records import ProfileRecord
from data_access.validation import Violations, lookup_key, parse_id
from meshkit.errors import NotFound
from meshkit.reasons import Reason

# Generous bounds that only keep absurd payloads out; user_svc enforces the product's limits.
DISPLAY_NAME_MAX = 1_000
BIO_MAX = 10_000


class ProfileStore:
    """Reads and changes profiles."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def by_account_id(self, account_id: str) -> ProfileRecord:
        """Return the profile of an account, or NotFound (PROFILE_NOT_FOUND)."""
        key = parse_id(account_id, reason=Reason.PROFILE_NOT_FOUND, what="profile")
        async with self._database.read() as session:
            return await _one(session, _profiles().where(Profile.account_id == key))

    async def by_username(self, username: str) -> ProfileRecord:
        """Return the profile with a username (any case), or NotFound (PROFILE_NOT_FOUND)."""
        key = lookup_key(username.strip(), max_chars=USERNAME_MAX)
        if key is None:
            raise _not_found()
        async with self._database.read() as session:
            return await _one(session, _profiles().where(Account.username == key))

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
        async with self._database.transaction() as session:
            if changes:
                changed = await session.scalar(
                    update(Profile)
                    .where(Profile.account_id == key)
                    .values(**changes, updated_at=func.now())
                    .returning(Profile.account_id)
                    .execution_options(synchronize_session=False)
                )
                if changed is None:
                    raise _not_found()
            return await _one(session, _profiles().where(Profile.account_id == key))


async def set_avatar(session: AsyncSession, account_id: uuid.UUID, image_id: uuid.UUID) -> None:
    """Make image_id the avatar of account_id inside the caller's transaction; NotFound
    (PROFILE_NOT_FOUND) when the profile does not exist."""
    changed = await session.scalar(
        update(Profile)
        .where(Profile.account_id == account_id)
        .values(avatar_image_id=image_id, updated_at=func.now())
        .returning(Profile.account_id)
        .execution_options(synchronize_session=False)
    )
    if changed is None:
        raise _not_found()


def _profiles() -> Select[Profile, str, datetime]:
    """Profiles joined with the username and creation time of their accounts."""
    return select(Profile, Account.username, Account.created_at).join(
        Account, Account.id == Profile.account_id
    )


async def _one(session: AsyncSession, query: Select[Profile, str, datetime]) -> ProfileRecord:
    """Run a profile query expecting one row; NotFound when there is none."""
    row = (await session.execute(query)).one_or_none()
    if row is None:
        raise _not_found()
    profile, username, account_created_at = row
    return ProfileRecord(
        account_id=profile.account_id,
        username=username,
        display_name=profile.display_name,
        bio=profile.bio,
        avatar_image_id=profile.avatar_image_id,
        account_created_at=account_created_at,
        updated_at=profile.updated_at,
    )


def _not_found() -> NotFound:
    """The answer for a profile that does not exist."""
    return NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND)
