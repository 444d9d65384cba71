"""Checks on values arriving from callers, so bad input is answered as such and never reaches
PostgreSQL as an error (which would surface as INTERNAL)."""

from __future__ import annotations

import ipaddress
import re
import uuid
from datetime import timedelta

from data_access.records import Device, Mail, NewToken
from meshkit.errors import FieldViolation, NotFound, invalid
from meshkit.reasons import Reason

_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
USER_AGENT_MAX = 512
# The longest textual IPv6 address with a zone is well below this.
CLIENT_IP_MAX = 64
MAIL_KIND_MAX = 64
SEALED_MAIL_MAX_BYTES = 256 * 1024


class Violations:
    """Collects every problem of one request so the caller learns them all at once."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def text(self, field: str, value: str, *, max_chars: int, required: bool = True) -> str:
        """Return value when it is storable text of at most max_chars (non-empty if required)."""
        if required and not value.strip():
            self._items.append(FieldViolation(field, "is required"))
        elif len(value) > max_chars:
            self._items.append(FieldViolation(field, f"must be at most {max_chars} characters"))
        elif "\x00" in value:
            # PostgreSQL text cannot hold NUL characters.
            self._items.append(FieldViolation(field, "must not contain NUL characters"))
        return value

    def sha256_hex(self, field: str, value: str) -> str:
        """Return value lower-cased when it is a hex SHA-256 digest (64 hex digits)."""
        lowered = value.lower()
        if not _HEX_SHA256.fullmatch(lowered):
            self._items.append(FieldViolation(field, "must be 64 hex digits (a SHA-256 digest)"))
        return lowered

    def positive(self, field: str, value: int) -> int:
        """Return value when it is greater than zero."""
        if value <= 0:
            self._items.append(FieldViolation(field, "must be greater than zero"))
        return value

    def in_range(self, field: str, value: int, low: int, high: int) -> int:
        """Return value when low <= value <= high."""
        if not low <= value <= high:
            self._items.append(FieldViolation(field, f"must be between {low} and {high}"))
        return value

    def duration(self, field: str, value: timedelta, low: timedelta, high: timedelta) -> timedelta:
        """Return value when low <= value <= high."""
        if not low <= value <= high:
            self._items.append(
                FieldViolation(field, f"must be between {_seconds(low)} and {_seconds(high)}")
            )
        return value

    def device(self, field: str, device: Device) -> Device:
        """Return device with its IP address in canonical form, when its user agent is storable
        text of at most USER_AGENT_MAX characters and its IP address empty or valid."""
        self.text(
            f"{field}.user_agent", device.user_agent, max_chars=USER_AGENT_MAX, required=False
        )
        client_ip = _canonical_ip(device.client_ip) if device.client_ip else ""
        if client_ip is None:
            self._items.append(FieldViolation(f"{field}.client_ip", "must be an IP address"))
            client_ip = ""
        return Device(user_agent=device.user_agent, client_ip=client_ip)

    def mail(self, field: str, mail: Mail | None) -> Mail | None:
        """Return mail when it has a kind (at most MAIL_KIND_MAX characters) and sealed content
        of at most SEALED_MAIL_MAX_BYTES; None is accepted."""
        if mail is None:
            return None
        self.text(f"{field}.kind", mail.kind, max_chars=MAIL_KIND_MAX)
        if not mail.sealed:
            self._items.append(FieldViolation(f"{field}.sealed", "is required"))
        elif len(mail.sealed) > SEALED_MAIL_MAX_BYTES:
            self._items.append(
                FieldViolation(f"{field}.sealed", f"must be at most {SEALED_MAIL_MAX_BYTES} bytes")
            )
        return mail

    def token(self, field: str, token: NewToken | None) -> NewToken | None:
        """Return token with its hash lower-cased when it is a hex SHA-256 digest; None is
        accepted."""
        if token is None:
            return None
        return NewToken(self.sha256_hex(f"{field}.token_hash", token.token_hash), token.expires_at)

    def optional_id(self, field: str, value: str) -> uuid.UUID | None:
        """Return value as a UUID, or None when it is empty."""
        if not value:
            return None
        try:
            return uuid.UUID(value)
        except ValueError:
            self._items.append(FieldViolation(field, "must be a UUID or empty"))
            return None

    def add(self, field: str, description: str) -> None:
        """Record a problem found by the caller's own check."""
        self._items.append(FieldViolation(field, description))

    def page(self, page_size: int, before: int, *, maximum: int, before_field: str) -> None:
        """Record the problems of a keyset page request: a size outside 1..maximum, a negative
        position to continue below (0 means from the newest)."""
        if not 1 <= page_size <= maximum:
            self.add("page_size", f"must be 1 to {maximum}")
        if before < 0:
            self.add(before_field, "must not be negative")

    def raise_if_any(self) -> None:
        """Raise InvalidArgument listing every collected violation, if there is one."""
        if self._items:
            raise invalid(self._items)


def parse_id(value: str, *, reason: Reason, what: str) -> uuid.UUID:
    """Return value as a UUID; a malformed id names nothing, so it is NotFound with reason."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(message=f"{what} not found", reason=reason) from None


def _canonical_ip(value: str) -> str | None:
    """Return an IP address in canonical form, or None when value is not one."""
    if len(value) > CLIENT_IP_MAX:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _seconds(value: timedelta) -> str:
    """Render a duration bound for a message ("600s")."""
    return f"{value.total_seconds():g}s"


def lookup_key(value: str, *, max_chars: int) -> str | None:
    """Return value lower-cased for an exact lookup, or None when nothing could match it."""
    if not value or len(value) > max_chars or "\x00" in value:
        return None
    return value.lower()
