"""What the repositories return: plain immutable records, free of SQLAlchemy and protobuf."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class AccountRecord:
    """An account as stored (without its password hash)."""

    id: uuid.UUID
    email: str
    username: str
    created_at: datetime


@dataclass(frozen=True)
class Credentials:
    """An account with the password hash a login checks."""

    account: AccountRecord
    password_hash: str


@dataclass(frozen=True)
class Rotation:
    """The outcome of a refresh-token rotation: whose family it was, and its successor's expiry."""

    account: AccountRecord
    family_id: uuid.UUID
    expires_at: datetime
    repeated: bool = False
    """The same rotation was repeated within the reuse window: nothing new was stored."""


@dataclass(frozen=True)
class ProfileRecord:
    """A profile joined with its account's username and creation time."""

    account_id: uuid.UUID
    username: str
    display_name: str
    bio: str
    avatar_image_id: uuid.UUID | None
    account_created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NewImage:
    """Metadata of an image to record; the store assigns id and creation time."""

    owner_id: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class ImageRecord:
    """An image's metadata as stored."""

    id: uuid.UUID
    owner_id: uuid.UUID
    content_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str
    created_at: datetime
