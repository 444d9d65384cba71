"""Account rules (email, username, password) and the account store that auth_svc depends on.

Registration checks every field and reports all violations at once, with field names matching
the proto (email, username, password), so a client can mark every bad input in one round trip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from email_validator import EmailNotValidError, validate_email

from auth_svc import passwords
from meshkit.errors import FieldViolation, invalid

EMAIL_MAX_LENGTH = 254
USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 30
_USERNAME_CHARS = re.compile(r"[a-z0-9._]+")


@dataclass(frozen=True)
class Account:
    """An account as the store returns it (email and username already normalised)."""

    id: str
    email: str
    username: str


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

    async def create_account(self, email: str, username: str, password_hash: str) -> Account:
        """Create an account; AlreadyExists (EMAIL_TAKEN / USERNAME_TAKEN) when either is used."""
        ...

    async def get_credentials(self, email: str) -> StoredCredentials | None:
        """Return the account and password hash for a normalised email, or None."""
        ...

    async def create_refresh_token(
        self, account_id: str, token_hash: str, expires_at: datetime
    ) -> str:
        """Store the first refresh token of a new family and return the family id."""
        ...

    async def rotate_refresh_token(
        self,
        token_hash: str,
        new_token_hash: str,
        new_expires_at: datetime,
        *,
        reuse_window_seconds: float = 0.0,
        session_lifetime_seconds: int | None = None,
    ) -> Rotated:
        """Consume a token and store its successor; the same rotation repeated within the
        reuse window succeeds again. NotFound when invalid, expired or past the session's
        lifetime; FailedPrecondition when already consumed (the family is then revoked)."""
        ...

    async def revoke_refresh_token(self, token_hash: str) -> None:
        """Revoke the family of a token; unknown tokens are not an error."""
        ...

    async def replace_password_hash(self, account_id: str, old_hash: str, new_hash: str) -> bool:
        """Set new_hash if the account's hash is still old_hash; return whether it was set."""
        ...


@dataclass(frozen=True)
class Rotated:
    """A refresh token exchanged for its successor: whose, and until when the successor lives."""

    account: Account
    expires_at: datetime


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


def normalise_username(raw: str) -> str:
    """Return the lower-case username or raise ValueError with a readable reason."""
    username = raw.strip()
    if not username:
        raise ValueError("is required")
    # Checked before lower-casing: str.lower maps some non-ASCII letters (e.g. the Kelvin sign)
    # to ASCII ones, and a handle must be exactly what the user typed, modulo case.
    if not username.isascii() or not _USERNAME_CHARS.fullmatch(username.lower()):
        raise ValueError('may contain only letters a-z, digits 0-9, "." and "_"')
    username = username.lower()
    if not USERNAME_MIN_LENGTH <= len(username) <= USERNAME_MAX_LENGTH:
        raise ValueError(f"must be {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} characters long")
    if username.startswith(".") or username.endswith("."):
        raise ValueError('must not start or end with "."')
    if ".." in username:
        raise ValueError('must not contain ".."')
    return username


def validate_registration(email: str, username: str, password: str) -> Registration:
    """Return the normalised registration or raise InvalidArgument listing every bad field."""
    violations: list[FieldViolation] = []
    normal_email = normal_username = ""
    try:
        normal_email = normalise_email(email)
    except ValueError as exc:
        violations.append(FieldViolation("email", str(exc)))
    try:
        normal_username = normalise_username(username)
    except ValueError as exc:
        violations.append(FieldViolation("username", str(exc)))
    violations.extend(passwords.policy_violations(password))
    if violations:
        raise invalid(violations)
    return Registration(email=normal_email, username=normal_username, password=password)


def login_email(raw: str) -> str | None:
    """Return the normalised email to look up at login, or None when it cannot be an account's."""
    try:
        return normalise_email(raw)
    except ValueError:
        return None
