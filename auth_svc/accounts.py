"""Account rules (email, username, password) and the account store that auth_svc depends on.

Registration checks every field and reports all violations at once, with field names matching
the proto (email, username, password), so a client can mark every bad input in one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

from email_validator import EmailNotValidError, validate_email

from auth_svc import passwords
from meshkit.errors import FieldViolation, invalid
from meshkit.usernames import new_username

EMAIL_MAX_LENGTH = 254


@dataclass(frozen=True)
class Account:
    """An account as the store returns it (email and username already normalised)."""

    id: str
    email: str
    username: str
    email_verified: bool = False


@dataclass(frozen=True)
class SealedMail:
    """A rendered mail encrypted for the outbox: only auth_svc can read it back."""

    kind: str
    sealed: bytes


@dataclass(frozen=True)
class Device:
    """What a session records of the client that logs in or refreshes."""

    user_agent: str = ""
    client_ip: str = ""


@dataclass(frozen=True)
class NewSession:
    """A login to store: its first refresh token and what the session should remember."""

    token_hash: str
    expires_at: datetime
    ends_at: datetime
    """Absolute end of the session, whatever its refreshes."""
    remembered: bool
    device: Device


@dataclass(frozen=True)
class SessionStart:
    """A stored login: the session's id and when it started."""

    session_id: str
    started_at: datetime


@dataclass(frozen=True)
class SessionInfo:
    """A live session as a user sees it in their list of devices."""

    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    remembered: bool
    device: Device


class TokenPurpose(Enum):
    """What a single-use mailed token proves."""

    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"
    CHANGE_EMAIL = "change_email"


class MailKind(Enum):
    """The mails auth_svc sends; each has a plain-text and an HTML template."""

    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"
    PASSWORD_CHANGED = "password_changed"
    SIGNUP_ATTEMPT = "signup_attempt"
    MFA_ENABLED = "mfa_enabled"
    MFA_DISABLED = "mfa_disabled"
    NEW_DEVICE_LOGIN = "new_device_login"
    CONFIRM_EMAIL_CHANGE = "confirm_email_change"
    EMAIL_CHANGE_REQUESTED = "email_change_requested"
    EMAIL_CHANGED = "email_changed"


class Mailer(Protocol):
    """Renders and seals mails for the outbox, and wakes the sender once one is queued."""

    def compose(
        self, kind: MailKind, to: str, *, token: str = "", device: str = "", new_email: str = ""
    ) -> SealedMail:
        """Return the sealed mail of that kind for the address; token goes into its link."""
        ...

    def queued(self) -> None:
        """Tell the sender a mail was just queued, so it goes out without waiting for a poll."""
        ...


@dataclass(frozen=True)
class TakenNotice:
    """The mail a sign-up with a registered email sends that email's owner, at most once per
    cooldown."""

    mail: SealedMail
    cooldown_seconds: float


@dataclass(frozen=True)
class MailedToken:
    """A single-use token to store with the mail that carries it."""

    token_hash: str
    expires_at: datetime
    mail: SealedMail


@dataclass(frozen=True)
class StoredCredentials:
    """What a login needs: the account and its password hash."""

    account: Account
    password_hash: str


@dataclass(frozen=True)
class Registration:
    """A validated registration: normalised email and username, and the password to hash."""

    email: str
    username: str
    password: str


class AccountStore(Protocol):
    """The account store (data_access's AccountStoreService); its errors are meshkit.errors."""

    async def create_account(
        self,
        email: str,
        username: str,
        password_hash: str,
        verification: MailedToken | None,
        if_email_taken: TakenNotice | None = None,
    ) -> Account:
        """Create an account (with its verification token and mail, atomically); AlreadyExists
        USERNAME_TAKEN when the username is used, else EMAIL_TAKEN when the email is, after
        queueing if_email_taken's notice for the email's owner (at most once per cooldown)."""
        ...

    async def get_credentials(self, email: str) -> StoredCredentials | None:
        """Return the account and password hash for a normalised email, or None."""
        ...

    async def get_credentials_by_id(self, account_id: str) -> StoredCredentials | None:
        """Return the account and password hash for an account id, or None."""
        ...

    async def create_session(self, account_id: str, session: NewSession) -> SessionStart:
        """Store a new login (its session and first refresh token) and return its id."""
        ...

    async def rotate_refresh_token(
        self,
        token_hash: str,
        new_token_hash: str,
        new_expires_at: datetime,
        *,
        reuse_window_seconds: float = 0.0,
        device: Device | None = None,
    ) -> Rotated:
        """Consume a token and store its successor; the same rotation repeated within the
        reuse window succeeds again. NotFound when invalid, expired or past the session's end;
        FailedPrecondition when already consumed (the family is then revoked)."""
        ...

    async def revoke_refresh_token(self, token_hash: str) -> None:
        """Revoke the family of a token; unknown tokens are not an error."""
        ...

    async def replace_password_hash(self, account_id: str, old_hash: str, new_hash: str) -> bool:
        """Re-hash: set new_hash if the account's hash is still old_hash; return whether it was."""
        ...

    async def change_password_hash(
        self, account_id: str, old_hash: str, new_hash: str, change: PasswordChange
    ) -> int | None:
        """Set a new password's hash if the account's hash is still old_hash, ending every other
        session and queueing the mail with it; return how many sessions ended, or None when
        the hash had changed meanwhile (nothing was done)."""
        ...

    async def issue_account_token(
        self, email: str, purpose: TokenPurpose, token: MailedToken, cooldown_seconds: float
    ) -> None:
        """Store a token and its mail for the account of email, if there is one that may get
        it now; answers alike in every case."""
        ...

    async def request_email_change(
        self,
        account_id: str,
        new_email: str,
        token: MailedToken,
        notice: SealedMail | None,
        cooldown_seconds: float,
    ) -> None:
        """Store a token that moves the account to new_email, queueing its mail and the notice
        to the current address; nothing within the cooldown. NotFound (ACCOUNT_NOT_FOUND)."""
        ...

    async def lookup_account_token(self, token_hash: str, purpose: TokenPurpose) -> Account:
        """Return the account of a usable token; NotFound (ACCOUNT_TOKEN_INVALID) otherwise."""
        ...

    async def use_account_token(
        self,
        token_hash: str,
        purpose: TokenPurpose,
        *,
        new_password_hash: str = "",
        mail: SealedMail | None = None,
    ) -> Account:
        """Use a token up and apply what it proves; NotFound (ACCOUNT_TOKEN_INVALID) when it is
        not usable."""
        ...

    async def list_sessions(self, account_id: str) -> list[SessionInfo]:
        """Return the live sessions of an account, most recently used first."""
        ...

    async def revoke_sessions(
        self, account_id: str, *, session_id: str | None = None, all_except: str | None = None
    ) -> int:
        """End one session (NotFound SESSION_NOT_FOUND unless live and the account's) or every
        session but all_except; return how many ended."""
        ...


@dataclass(frozen=True)
class PasswordChange:
    """A new password (not a re-hash): the session that stays, and the notice to mail."""

    keep_session_id: str
    mail: SealedMail | None


@dataclass(frozen=True)
class Rotated:
    """A refresh token exchanged for its successor: whose, and until when the successor lives."""

    account: Account
    expires_at: datetime
    session_id: str
    auth_time: datetime
    """When the session last proved its credentials (its login or a re-authentication)."""
    remembered: bool


def normalise_email(raw: str) -> str:
    """Return the normalised (lower-case) email or raise ValueError with a readable reason."""
    candidate = raw.strip()
    if not candidate:
        raise ValueError("is required")
    try:
        checked = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        # The reason may list thousands of offending characters; meshkit.grpc_errors bounds
        # what any error carries to the client.
        raise ValueError(str(exc)) from None
    email = checked.normalized.lower()
    if len(email) > EMAIL_MAX_LENGTH:
        raise ValueError(f"must be at most {EMAIL_MAX_LENGTH} characters long")
    return email


def validate_registration(
    email: str, username: str, password: str, *, min_score: int = passwords.DEFAULT_MIN_SCORE
) -> Registration:
    """Return the normalised registration or raise InvalidArgument listing every bad field
    (the password judged with the email and username as words a guesser would try)."""
    violations: list[FieldViolation] = []
    normal_email = normal_username = ""
    try:
        normal_email = normalise_email(email)
    except ValueError as exc:
        violations.append(FieldViolation("email", str(exc)))
    try:
        normal_username = new_username(username)
    except ValueError as exc:
        violations.append(FieldViolation("username", str(exc)))
    violations.extend(
        passwords.policy_violations(
            password,
            user_inputs=(normal_email or email, normal_username or username),
            min_score=min_score,
        )
    )
    if violations:
        raise invalid(violations)
    return Registration(email=normal_email, username=normal_username, password=password)


def login_email(raw: str) -> str | None:
    """Return the normalised email to look up at login, or None when it cannot be an account's."""
    try:
        return normalise_email(raw)
    except ValueError:
        return None
