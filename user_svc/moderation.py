"""Moderation as user_svc serves it to admins: an account's status, blocks until a time, the
audit log. Whether the caller is an admin is decided by data_access from the caller's stored
role in each call's own transaction, not from a token claim, so a revoked role takes effect at
once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from meshkit.errors import FieldViolation, invalid
from meshkit.page_tokens import (
    decode_page_token,
    encode_page_token,
    page_size,
    position_part,
    scope_of,
)
from user_svc.profiles import normalise_username

REASON_MAX_CHARS = 500
LONGEST_BLOCK = timedelta(days=365 * 100)
AUDIT_PAGE_SIZE = 50
AUDIT_PAGE_MAX = 100


@dataclass(frozen=True)
class AccountStatus:
    """What admins see of an account."""

    account_id: str
    username: str
    email: str
    role: str
    create_time: datetime
    email_verified: bool
    blocked_till: datetime | None
    blocked_reason: str


@dataclass(frozen=True)
class AuditEntry:
    """One admin action."""

    id: int
    create_time: datetime
    actor_username: str
    action: str
    account_username: str
    reason: str
    blocked_till: datetime | None


@dataclass(frozen=True)
class AuditPage:
    """A page of the audit log and the token of the next one (empty on the last)."""

    entries: Sequence[AuditEntry]
    next_page_token: str


class ModerationStore(Protocol):
    """Where admin actions are carried out and audited (data_access's ModerationService)."""

    async def status(self, actor_id: str, username: str) -> AccountStatus:
        """Return an account's status; PermissionDenied (ADMIN_REQUIRED) for a non-admin."""
        ...

    async def block(
        self, actor_id: str, username: str, *, until: datetime, reason: str
    ) -> AccountStatus:
        """Block an account until a time and end its sessions."""
        ...

    async def unblock(self, actor_id: str, username: str, *, reason: str) -> AccountStatus:
        """Lift an account's block."""
        ...

    async def audit_log(
        self, actor_id: str, *, username: str, size: int, before_id: int
    ) -> tuple[list[AuditEntry], bool]:
        """Return a page of the audit log, newest first, and whether more remain."""
        ...


class ModerationService:
    """The admin use cases, independent of gRPC."""

    def __init__(self, store: ModerationStore) -> None:
        self._store = store

    async def status(self, actor_id: str, username: str) -> AccountStatus:
        """Return an account's status to an admin."""
        return await self._store.status(actor_id, normalise_username(username))

    async def block(
        self,
        actor_id: str,
        username: str,
        *,
        until: datetime | None,
        reason: str,
        now: datetime | None = None,
    ) -> AccountStatus:
        """Block an account until a time (in the future, at most LONGEST_BLOCK ahead) with a
        reason (1 to REASON_MAX_CHARS characters)."""
        current = now or datetime.now(UTC)
        violations = []
        if until is None:
            violations.append(FieldViolation("until", "is required"))
        elif until <= current:
            violations.append(FieldViolation("until", "must be in the future"))
        elif until - current > LONGEST_BLOCK:
            violations.append(FieldViolation("until", "must be at most 36500 days ahead"))
        cleaned = _reason(reason, required=True, violations=violations)
        name = normalise_username(username)
        if violations or until is None:
            raise invalid(violations)
        return await self._store.block(actor_id, name, until=until, reason=cleaned)

    async def unblock(self, actor_id: str, username: str, *, reason: str) -> AccountStatus:
        """Lift an account's block; the reason is optional."""
        violations: list[FieldViolation] = []
        cleaned = _reason(reason, required=False, violations=violations)
        if violations:
            raise invalid(violations)
        return await self._store.unblock(actor_id, normalise_username(username), reason=cleaned)

    async def audit_log(self, actor_id: str, *, username: str, size: int, token: str) -> AuditPage:
        """Return a page of the audit log (of one account when username is set)."""
        name = normalise_username(username) if username else ""
        scope = scope_of("audit", name)
        before = position_part(decode_page_token(token, scope), 0) if token else 0
        entries, more = await self._store.audit_log(
            actor_id,
            username=name,
            size=page_size(size, default=AUDIT_PAGE_SIZE, maximum=AUDIT_PAGE_MAX),
            before_id=before,
        )
        following = encode_page_token(scope, entries[-1].id) if more and entries else ""
        return AuditPage(entries, following)


def _reason(raw: str, *, required: bool, violations: list[FieldViolation]) -> str:
    """The trimmed reason; its problems are appended to violations."""
    value = raw.strip()
    if required and not value:
        violations.append(FieldViolation("reason", "is required"))
    elif len(value) > REASON_MAX_CHARS:
        violations.append(
            FieldViolation("reason", f"must be at most {REASON_MAX_CHARS} characters")
        )
    elif any(not ch.isprintable() and ch != "\n" for ch in value):
        violations.append(FieldViolation("reason", "must not contain control characters"))
    return value
