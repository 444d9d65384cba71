"""Tables of meshgram, as SQLAlchemy declarative models. Migrations must match this module."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
    text,
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
    email_verified_at: Mapped[datetime | None]
    """When the owner proved they read mail at `email`; None while unproved."""
    password_changed_at: Mapped[datetime | None]
    """When the password was last changed or reset (not merely re-hashed)."""
    username_changed_at: Mapped[datetime | None]
    """When the username last changed; None when it is the one chosen at sign-up."""
    role: Mapped[str] = mapped_column(Text, server_default="user")
    """"user" or "admin"."""
    blocked_till: Mapped[datetime | None]
    """An admin blocked the account until then: no login, no refresh, no session."""
    blocked_reason: Mapped[str] = mapped_column(Text, server_default="")
    deactivated_at: Mapped[datetime | None]
    """The owner asked to delete the account: hidden and signed out since, restorable by a
    login until delete_after."""
    delete_after: Mapped[datetime | None]
    """When the sweeper deletes the deactivated account for good."""

    __table_args__ = (
        CheckConstraint("role IN ('user', 'admin')", name="role_known"),
        # The sweeper's question: which blocks are over.
        Index(
            "ix_accounts_blocked_till",
            "blocked_till",
            postgresql_where=text("blocked_till IS NOT NULL"),
        ),
        # The sweeper's question: which deletions are due.
        Index(
            "ix_accounts_delete_after",
            "delete_after",
            postgresql_where=text("delete_after IS NOT NULL"),
        ),
    )


class DeletedAccount(Base):
    """What remains of an account deleted for good: when it existed, nothing about whom."""

    __tablename__ = "deleted_accounts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    """The former account id (random, and no longer found in any other table)."""
    created_at: Mapped[datetime]
    deactivated_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime] = mapped_column(server_default=func.now())


class BlobCollection(Base):
    """A blob that may have lost its last image (its images' account was deleted for good),
    queued for storage_svc's collector, which deletes it unless an image still names it."""

    __tablename__ = "blob_collections"

    sha256: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), primary_key=True)
    queued_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)
    claimed_until: Mapped[datetime | None]
    """A collector is at work on it until then; after that another may claim it."""


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
    placeholder: Mapped[str] = mapped_column(Text, server_default="")
    """Blurhash of the picture."""
    original_kept: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    """The uploaded bytes are kept in the blob store under sha256 (served to the owner only)."""
    stored_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """Bytes in the blob store on the owner's account: renditions plus the original if kept."""
    position: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    """Order of the upload; list cursors point at it."""


class ImageRendition(Base):
    """One served file of an image: a variant (a size) in one format, re-encoded and free of
    metadata; the bytes live in the blob store under sha256, shared by every rendition with the
    same bytes."""

    __tablename__ = "image_renditions"
    __table_args__ = (
        CheckConstraint("size_bytes > 0", name="size_positive"),
        CheckConstraint("width > 0 AND height > 0", name="dimensions_positive"),
    )

    image_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    variant: Mapped[str] = mapped_column(Text, primary_key=True)
    format: Mapped[str] = mapped_column(Text, primary_key=True)
    content_type: Mapped[str] = mapped_column(String(CONTENT_TYPE_MAX))
    sha256: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)


class MediaUsage(Base):
    """Bytes an account's images take in the blob store, kept with every image change in its
    transaction so a quota holds under concurrent uploads."""

    __tablename__ = "media_usage"
    __table_args__ = (CheckConstraint("used_bytes >= 0", name="used_not_negative"),)

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    used_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0")


class Profile(Base):
    """The public face of an account; created empty together with the account."""

    __tablename__ = "profiles"
    __table_args__ = (
        CheckConstraint(
            "follower_count >= 0 AND following_count >= 0 AND post_count >= 0",
            name="counts_not_negative",
        ),
    )

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
    website: Mapped[str] = mapped_column(Text, server_default="")
    pronouns: Mapped[str] = mapped_column(Text, server_default="")
    private: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    """Only approved followers see the account's content; follows of it are requests."""
    follower_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """Active follows of this account, kept by every follow change in its transaction."""
    following_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    post_count: Mapped[int] = mapped_column(BigInteger, server_default="0")


# Search (social_graph.py): byte-order ("C") indexes serve both a prefix range (LIKE 'ab%') and
# its order, whatever the database's collation, so a page reads a page of index entries.
Index("ix_accounts_username_search", Account.username.collate("C"))
Index(
    "ix_profiles_display_name_search",
    func.lower(Profile.display_name).collate("C"),
    Profile.account_id,
)
# Alembic cannot read an index column's collation back from the database; the schema test
# compares these by their definitions instead.
COLLATED_INDEXES = {
    "ix_accounts_username_search": 'ON public.accounts USING btree (username COLLATE "C")',
    "ix_profiles_display_name_search": (
        'ON public.profiles USING btree (lower(display_name) COLLATE "C", account_id)'
    ),
}


class Follow(Base):
    """One account following another, or asking to (a private account approves)."""

    __tablename__ = "follows"
    __table_args__ = (
        CheckConstraint("follower_id <> followed_id", name="not_self"),
        CheckConstraint("status IN ('active', 'pending')", name="status_known"),
        # An account's followers or requests, newest first, a page at a time.
        Index(None, "followed_id", "status", "position"),
        # The accounts an account follows, newest first.
        Index(None, "follower_id", "status", "position"),
    )

    follower_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    followed_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    """Order of the follow (renewed on approval); list cursors point at it."""
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Block(Base):
    """One account blocking another: no follows between them, each hidden from the other."""

    __tablename__ = "blocks"
    __table_args__ = (
        CheckConstraint("blocker_id <> blocked_id", name="not_self"),
        # Whether someone blocks a given account (the other direction of the primary key).
        Index(None, "blocked_id", "blocker_id"),
        # An account's blocks, newest first.
        Index(None, "blocker_id", "position"),
    )

    blocker_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    blocked_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class LoginSession(Base):
    """One login of an account: its absolute end and its device; the id is its token family's."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    """When the login happened."""
    ends_at: Mapped[datetime]
    """When the session ends, however often it is refreshed."""
    remembered: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    user_agent: Mapped[str] = mapped_column(Text, server_default="")
    client_ip: Mapped[str] = mapped_column(Text, server_default="")
    """The client's address as the edge saw it; empty when unknown."""
    last_used_at: Mapped[datetime] = mapped_column(server_default=func.now())
    authenticated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    """When the session last proved its credentials: its login or latest re-authentication."""


class RefreshToken(Base):
    """The hash of one refresh token; every login starts a family, every refresh extends it."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    family_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    """The session (login) the token belongs to."""
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    consumed_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    successor_hash: Mapped[str | None] = mapped_column(String(TOKEN_HASH_LENGTH))
    """Hash of the token this one was exchanged for, once consumed."""


class AccountToken(Base):
    """A single-use token mailed to an address: an email verification, a password reset, or the
    change of an account's email to the address it was mailed to."""

    __tablename__ = "account_tokens"
    __table_args__ = (
        CheckConstraint(
            "purpose IN ('verify_email', 'reset_password', 'change_email')", name="purpose_known"
        ),
        # The cooldown check: the newest token of a purpose for an account.
        Index(None, "account_id", "purpose", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX))
    """The address the token was mailed to; a verification is void once the account's differs."""
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class OutboxMail(Base):
    """A mail queued by the write that caused it, until the sender delivers it or gives up."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The sender's question: what is due and unfinished.
        Index(
            None,
            "next_attempt_at",
            postgresql_where=text("sent_at IS NULL AND given_up_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The encrypted mail; erased once sent or given up."""
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    """Failed delivery attempts so far."""
    claimed_by: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    given_up_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, server_default="")


class Lease(Base):
    """A named role that one replica at a time holds until expires_at (the mail sender)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    holder: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime]


class LoginAttempt(Base):
    """Failed logins counted against one key: an account from one client, an account, a client."""

    __tablename__ = "login_attempts"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(index=True)


class RateWindow(Base):
    """Hits counted against one key of the edge's shared limits in its current fixed window
    (rate_windows.py)."""

    __tablename__ = "rate_windows"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    hits: Mapped[int] = mapped_column(BigInteger)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime] = mapped_column(index=True)


class MailRequest(Base):
    """Requests for a mailed token (verification, reset) counted per address, registered or not:
    each request writes here, so that it costs the same whether or not a mail goes out."""

    __tablename__ = "mail_requests"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    """The purpose and the SHA-256 of the address ("reset_password:<hex>")."""
    requests: Mapped[int] = mapped_column(Integer)
    last_request_at: Mapped[datetime] = mapped_column(index=True)


class MfaFactor(Base):
    """An account's TOTP factor (secret sealed by auth_svc) and its enrolment in progress."""

    __tablename__ = "mfa_factors"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The confirmed secret; None while MFA is off."""
    enabled_at: Mapped[datetime | None]
    last_used_step: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """The latest TOTP time step used: codes of it and earlier ones are refused (no replay)."""
    pending_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    pending_started_at: Mapped[datetime | None]


class RecoveryCode(Base):
    """The hash of one single-use MFA recovery code."""

    __tablename__ = "recovery_codes"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    code_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    used_at: Mapped[datetime | None]


class MfaChallenge(Base):
    """A login whose password was right and whose second factor is still owed."""

    __tablename__ = "mfa_challenges"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    remembered: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    """Wrong codes tried so far."""
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


SECURITY_EVENT_KINDS = (
    "login_succeeded",
    "login_failed",
    "login_locked",
    "password_changed",
    "password_reset",
    "mfa_enabled",
    "mfa_disabled",
    "recovery_codes_regenerated",
    "recovery_code_used",
    "refresh_token_reused",
    "sessions_ended",
    "reauthenticated",
    "email_verified",
    "email_changed",
    "account_deactivated",
    "account_restored",
)


class SecurityEvent(Base):
    """One entry of an account's security log; rows are never updated (a trigger refuses)."""

    __tablename__ = "security_events"
    __table_args__ = (
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{kind}'" for kind in SECURITY_EVENT_KINDS) + ")",
            name="kind_known",
        ),
        # A user's log, newest first, a page at a time.
        Index(None, "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)
    user_agent: Mapped[str] = mapped_column(Text, server_default="")
    client_ip: Mapped[str] = mapped_column(Text, server_default="")
    session_id: Mapped[uuid.UUID | None]
    detail: Mapped[str] = mapped_column(Text, server_default="")


AUDIT_ACTIONS = (
    "account_viewed",
    "account_blocked",
    "account_unblocked",
    "block_expired",
    "role_granted",
    "role_revoked",
    "image_deleted",
)


class AuditEvent(Base):
    """One action of an admin (or of the system on an admin's behalf, such as a block that
    expired); rows are never updated (a trigger refuses)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        CheckConstraint(
            "action IN (" + ", ".join(f"'{action}'" for action in AUDIT_ACTIONS) + ")",
            name="action_known",
        ),
        # An account's entries, newest first.
        Index(None, "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    actor_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), index=True
    )
    """The admin who acted; None for the system (the sweeper, the operator's command) and once
    the admin's account is gone."""
    action: Mapped[str] = mapped_column(Text)
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    """The account acted on; None once it is gone (the entry keeps no personal data)."""
    reason: Mapped[str] = mapped_column(Text, server_default="")
    blocked_till: Mapped[datetime | None]
    """For a block: until when."""


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
