"""Tables of meshgram, as SQLAlchemy declarative models. Migrations must match this module."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints let repositories tell which rule a write broke (EMAIL_TAKEN vs
# USERNAME_TAKEN) and keep migrations reproducible.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

EMAIL_MAX = 320
USERNAME_MAX = 64
PASSWORD_HASH_MAX = 1024
TOKEN_HASH_LENGTH = 64
CONTENT_TYPE_MAX = 255


class Base(DeclarativeBase):
    """Declarative base: named constraints and timezone-aware timestamps everywhere."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


class Account(Base):
    """A person who can log in; email and username are stored lower-case and unique."""

    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX), unique=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX), unique=True)
    password_hash: Mapped[str] = mapped_column(String(PASSWORD_HASH_MAX))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Image(Base):
    """Metadata of an uploaded image; the bytes live in the blob store under sha256."""

    __tablename__ = "images"
    __table_args__ = (
        CheckConstraint("size_bytes > 0", name="size_positive"),
        CheckConstraint("width > 0 AND height > 0", name="dimensions_positive"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    content_type: Mapped[str] = mapped_column(String(CONTENT_TYPE_MAX))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), index=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Profile(Base):
    """The public face of an account; created empty together with the account."""

    __tablename__ = "profiles"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    display_name: Mapped[str] = mapped_column(Text, server_default="")
    bio: Mapped[str] = mapped_column(Text, server_default="")
    avatar_image_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class RefreshToken(Base):
    """The hash of one refresh token; every login starts a family, every refresh extends it."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    consumed_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    successor_hash: Mapped[str | None] = mapped_column(String(TOKEN_HASH_LENGTH))
    """Hash of the token this one was exchanged for, once consumed."""
    session_started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    """When the login that started the family happened, the same on every token of it."""


class ChangeLog(Base):
    """One committed change of a record that services cache, in the order it was recorded.

    Rows are written by triggers (migration 0002) in the same transaction as the change, so no
    write path can forget them; the change feed replays them to subscribers that reconnect.
    """

    __tablename__ = "change_log"

    position: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp(), index=True)
