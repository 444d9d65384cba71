"""What auth_svc's account defences keep, and the store they keep it in (data_access's
AccountSecurityService): failed-login counters, the TOTP factor and its recovery codes, the use
of login challenges, re-authentication times and the security log. Free of grpc and protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Protocol

from auth_svc.accounts import Device, NewSession, SealedMail, SessionStart


class EventKind(Enum):
    """What happened to an account, as its security log says."""

    LOGIN_SUCCEEDED = "login_succeeded"
    LOGIN_FAILED = "login_failed"
    LOGIN_LOCKED = "login_locked"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET = "password_reset"
    MFA_ENABLED = "mfa_enabled"
    MFA_DISABLED = "mfa_disabled"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"
    RECOVERY_CODE_USED = "recovery_code_used"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"
    SESSIONS_ENDED = "sessions_ended"
    REAUTHENTICATED = "reauthenticated"
    EMAIL_VERIFIED = "email_verified"
    EMAIL_CHANGED = "email_changed"
    ACCOUNT_DEACTIVATED = "account_deactivated"
    ACCOUNT_RESTORED = "account_restored"


@dataclass(frozen=True)
class NewEvent:
    """An event to append to an account's security log."""

    account_id: str
    kind: EventKind
    device: Device = field(default_factory=Device)
    session_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Event:
    """A stored entry of the security log."""

    id: int
    kind: EventKind
    created_at: datetime
    device: Device
    session_id: str
    detail: str


@dataclass(frozen=True)
class EventPage:
    """A page of the security log, newest first, and whether older entries exist."""

    events: list[Event]
    more: bool


@dataclass(frozen=True)
class Counter:
    """Failed logins counted against one key since it last started counting."""

    key: str
    failures: int
    last_failure_at: datetime | None


@dataclass(frozen=True)
class MfaState:
    """An account's second factor as stored: the sealed TOTP secret (None while off), the last
    used time step, recovery codes left and an unconfirmed enrolment."""

    secret_sealed: bytes | None
    last_used_step: int
    enabled_at: datetime | None
    recovery_codes_left: int
    pending_secret_sealed: bytes | None = None
    pending_started_at: datetime | None = None

    @property
    def enabled(self) -> bool:
        """Whether logins need a second factor."""
        return self.secret_sealed is not None


@dataclass(frozen=True)
class UsedCode:
    """A checked second factor to use up: a TOTP time step, or a recovery code's hash."""

    step: int | None = None
    recovery_code_hash: str | None = None


@dataclass(frozen=True)
class ChallengeUse:
    """A login challenge to complete: its hash and expiry, the sealed secret its code was
    checked against, and the failure counters its success clears."""

    token_hash: str
    expires_at: datetime
    secret_sealed: bytes
    clear_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Enablement:
    """A confirmed enrolment to turn into the account's factor."""

    pending_secret_sealed: bytes
    used_step: int
    recovery_code_hashes: list[str]
    enrollment_ttl_seconds: int
    mail: SealedMail | None


class SecurityStore(Protocol):
    """The persistence the account defences need (data_access's AccountSecurityService)."""

    async def login_attempts(self, keys: list[str], reset_after_seconds: int) -> list[Counter]:
        """Return the counters of keys, in order (zero when unknown or stale)."""
        ...

    async def record_login_failure(
        self, keys: list[str], reset_after_seconds: int
    ) -> list[Counter]:
        """Count a failure on every key and return the counters after it, in order."""
        ...

    async def clear_login_attempts(self, keys: list[str]) -> None:
        """Forget the counters of keys."""
        ...

    async def mfa(self, account_id: str) -> MfaState:
        """Return the account's factor; NotFound (ACCOUNT_NOT_FOUND) for an unknown account."""
        ...

    async def start_mfa_enrollment(self, account_id: str, pending_secret_sealed: bytes) -> None:
        """Store a pending secret; FailedPrecondition (MFA_ALREADY_ENABLED) when MFA is on."""
        ...

    async def enable_mfa(self, event: NewEvent, enablement: Enablement) -> None:
        """Turn the pending secret into the factor with new recovery codes; FailedPrecondition
        (MFA_ALREADY_ENABLED), NotFound (MFA_ENROLLMENT_NOT_FOUND)."""
        ...

    async def disable_mfa(self, event: NewEvent, mail: SealedMail | None) -> None:
        """Remove the factor and recovery codes; FailedPrecondition (MFA_NOT_ENABLED)."""
        ...

    async def replace_recovery_codes(self, event: NewEvent, code_hashes: list[str]) -> None:
        """Replace every recovery code; FailedPrecondition (MFA_NOT_ENABLED)."""
        ...

    async def use_mfa_code(self, account_id: str, code: UsedCode) -> int:
        """Use a step or a recovery code and return the codes left; FailedPrecondition
        (MFA_CODE_INVALID) when used before, (MFA_NOT_ENABLED) when MFA is off."""
        ...

    async def fail_mfa_challenge(
        self, token_hash: str, account_id: str, expires_at: datetime, max_attempts: int
    ) -> int:
        """Count a wrong code against an account's challenge and return the attempts left;
        NotFound (MFA_CHALLENGE_INVALID) when it is used or used up."""
        ...

    async def complete_mfa_challenge(
        self, challenge: ChallengeUse, code: UsedCode, account_id: str, session: NewSession
    ) -> tuple[SessionStart, int]:
        """Use the challenge and its code and start the session; return it and the recovery
        codes left. NotFound (MFA_CHALLENGE_INVALID), FailedPrecondition (MFA_CODE_INVALID)."""
        ...

    async def mark_session_authenticated(self, event: NewEvent) -> datetime:
        """Record that the event's session proved its credentials now and return that time;
        NotFound (SESSION_NOT_FOUND) when it is not a live session of the account."""
        ...

    async def record_event(
        self, event: NewEvent, mail: SealedMail | None = None, *, only_new_device: bool = False
    ) -> bool:
        """Append an event (and queue its mail, for a login only from a new device); return
        whether the mail was queued."""
        ...

    async def list_events(self, account_id: str, page_size: int, before_id: int) -> EventPage:
        """Return a page of an account's events older than before_id (0: the newest)."""
        ...
