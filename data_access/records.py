"""What the repositories return: plain immutable records, free of SQLAlchemy and protobuf."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True)
class AccountRecord:
    """An account as stored (without its password hash)."""

    id: uuid.UUID
    email: str
    username: str
    created_at: datetime
    email_verified: bool = False
    """The owner proved they read mail at `email`."""


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
    session_started_at: datetime
    """When the login that started the family (the session) happened."""
    authenticated_at: datetime
    """When the session last proved its credentials: its login or latest re-authentication."""
    remembered: bool = False
    """Whether the session's user asked to stay signed in."""
    repeated: bool = False
    """The same rotation was repeated within the reuse window: nothing new was stored."""


@dataclass(frozen=True)
class Device:
    """What a session records of the device that uses it."""

    user_agent: str = ""
    client_ip: str = ""
    """The client's IP address as the edge saw it; empty when unknown."""


@dataclass(frozen=True)
class NewSession:
    """A login to store: its first refresh token and what the session records."""

    account_id: str
    token_hash: str
    expires_at: datetime
    """When the first token stops being valid (capped at ends_at)."""
    ends_at: datetime
    """When the session ends, however often it is refreshed."""
    remembered: bool = False
    device: Device = field(default_factory=Device)


@dataclass(frozen=True)
class StartedSession:
    """A stored login: its id (its token family's) and when it started."""

    id: uuid.UUID
    created_at: datetime


@dataclass(frozen=True)
class SessionRecord:
    """A live session as listed to its account."""

    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    """When it ends unless refreshed: its live token's expiry or its absolute end, if sooner."""
    remembered: bool
    device: Device


class TokenPurpose(StrEnum):
    """What a single-use mailed token proves; the values are stored."""

    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"
    CHANGE_EMAIL = "change_email"


@dataclass(frozen=True)
class NewToken:
    """A single-use token to store: the hash of what was mailed, and its expiry."""

    token_hash: str
    expires_at: datetime


@dataclass(frozen=True)
class Mail:
    """A rendered mail, sealed by the service that queues it."""

    kind: str
    """Template name, in clear for logs."""
    sealed: bytes


@dataclass(frozen=True)
class QueuedMail:
    """A mail of the outbox handed to the sender."""

    id: int
    mail: Mail
    attempts: int
    """Failed delivery attempts before this one."""
    created_at: datetime


@dataclass(frozen=True)
class MailClaim:
    """The answer to a claim: whether the sender holds the lease, and the mails it got."""

    holds_lease: bool
    mails: tuple[QueuedMail, ...] = ()


@dataclass(frozen=True)
class Sent:
    """The mail reached the SMTP server."""


@dataclass(frozen=True)
class Retry:
    """Delivery failed; try again at `at`."""

    at: datetime


@dataclass(frozen=True)
class GivenUp:
    """Delivery failed for good."""


MailOutcome = Sent | Retry | GivenUp


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
    website: str = ""
    pronouns: str = ""
    private: bool = False
    follower_count: int = 0
    following_count: int = 0
    post_count: int = 0
    email: str = ""
    """The account's address; private, for its owner's eyes only (user_svc decides)."""


@dataclass(frozen=True)
class ProfileFields:
    """New values of a profile's editable fields; None keeps a field as it is."""

    display_name: str | None = None
    bio: str | None = None
    website: str | None = None
    pronouns: str | None = None
    private: bool | None = None


@dataclass(frozen=True)
class Relationship:
    """How a viewer and an account relate, both ways."""

    following: bool = False
    followed_by: bool = False
    requested: bool = False
    requested_by: bool = False
    blocking: bool = False
    blocked_by: bool = False


class FollowList(StrEnum):
    """Which list of an account ListFollows reads."""

    FOLLOWERS = "followers"
    FOLLOWING = "following"
    REQUESTS = "requests"


@dataclass(frozen=True)
class ProfileSummary:
    """What a list shows of a profile."""

    account_id: uuid.UUID
    username: str
    display_name: str
    avatar_image_id: uuid.UUID | None
    private: bool


@dataclass(frozen=True)
class Listed:
    """One list entry and the position to continue after it."""

    profile: ProfileSummary
    position: int


@dataclass(frozen=True)
class ListedPage:
    """One page of a list, newest first, and whether older entries remain."""

    entries: Sequence[Listed]
    more: bool


@dataclass(frozen=True)
class SearchPosition:
    """Where a search result stands: its rank group, then its key in that group (the username,
    or the lower-case display name), then its account id."""

    rank: int
    key: str
    account_id: uuid.UUID


@dataclass(frozen=True)
class Found:
    """One search result."""

    profile: ProfileSummary
    position: SearchPosition


@dataclass(frozen=True)
class SearchPage:
    """One page of search results and whether more follow."""

    results: Sequence[Found]
    more: bool


@dataclass(frozen=True)
class Rendition:
    """One served file of an image: a variant in one format."""

    variant: str
    format: str
    content_type: str
    sha256: str
    size_bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class NewImage:
    """Metadata of an image to record; the store assigns id, creation time and position."""

    owner_id: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str
    placeholder: str = ""
    original_kept: bool = False
    renditions: tuple[Rendition, ...] = ()


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
    placeholder: str = ""
    original_kept: bool = False
    stored_bytes: int = 0
    position: int = 0
    renditions: tuple[Rendition, ...] = ()


@dataclass(frozen=True)
class ImageAccess:
    """An image and the facts that decide who may see it."""

    image: ImageRecord
    owner_private: bool
    owner_hidden: bool
    viewer_follows: bool
    blocked: bool
    viewer_admin: bool


@dataclass(frozen=True)
class TakenEmailMail:
    """The notice a sign-up with a taken email queues for that email's owner, and the least
    time between two of them to one account."""

    mail: Mail
    cooldown: timedelta


@dataclass(frozen=True)
class LoginAttemptCounter:
    """The failed logins counted against one key."""

    key: str
    failures: int = 0
    """Failures since the counter last started; 0 when none, or when the last is too old."""
    last_failure_at: datetime | None = None
    """When the latest failure was counted; None when failures is 0."""


@dataclass(frozen=True)
class MfaRecord:
    """An account's TOTP factor, its enrolment in progress and its unused recovery codes."""

    enabled: bool = False
    secret_sealed: bytes = b""
    """The confirmed secret, sealed by auth_svc; empty while MFA is off."""
    last_used_step: int = 0
    """The latest TOTP time step used: codes of it and of earlier ones are refused."""
    enabled_at: datetime | None = None
    recovery_codes_left: int = 0
    pending_secret_sealed: bytes = b""
    """The secret of an enrolment started and not confirmed; empty when none."""
    pending_started_at: datetime | None = None


@dataclass(frozen=True)
class TotpStep:
    """A checked TOTP code: the time step it matched."""

    step: int


@dataclass(frozen=True)
class RecoveryCodeUse:
    """A recovery code to use up: the SHA-256 (hex) of what the user typed."""

    code_hash: str


MfaCode = TotpStep | RecoveryCodeUse


@dataclass(frozen=True)
class NewSecurityEvent:
    """An entry to append to an account's security log."""

    kind: str
    """One of models.SECURITY_EVENT_KINDS; empty when the caller named none."""
    account_id: str = ""
    device: Device = field(default_factory=Device)
    session_id: str = ""
    """The session concerned; empty: none."""
    detail: str = ""


@dataclass(frozen=True)
class SecurityEventRecord:
    """One entry of an account's security log as stored."""

    id: int
    kind: str
    created_at: datetime
    device: Device
    session_id: uuid.UUID | None
    detail: str


@dataclass(frozen=True)
class SecurityEventPage:
    """A page of an account's security log, newest first, and whether older entries exist."""

    events: tuple[SecurityEventRecord, ...]
    more: bool


@dataclass(frozen=True)
class RecordedEvent:
    """What recording a security event did."""

    recorded: bool
    """False when the account does not exist: nothing was stored."""
    mailed: bool = False


@dataclass(frozen=True)
class ChallengeUse:
    """An MFA login challenge to complete: its hash, expiry, the sealed secret its code was
    checked against, and the failure counters its success clears."""

    token_hash: str
    expires_at: datetime
    secret_sealed: bytes
    clear_keys: Sequence[str] = ()


@dataclass(frozen=True)
class CompletedChallenge:
    """The session an MFA challenge started, and the recovery codes still unused."""

    session: StartedSession
    recovery_codes_left: int
