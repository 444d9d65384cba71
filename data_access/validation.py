"""Checks on values arriving from callers, so bad input is answered as such and never reaches
PostgreSQL as an error (which would surface as INTERNAL)."""

from __future__ import annotations

import re
import uuid

from meshkit.errors import FieldViolation, NotFound, invalid
from meshkit.reasons import Reason

_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


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

    def add(self, field: str, description: str) -> None:
        """Record a problem found by the caller's own check."""
        self._items.append(FieldViolation(field, description))

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


def lookup_key(value: str, *, max_chars: int) -> str | None:
    """Return value lower-cased for an exact lookup, or None when nothing could match it."""
    if not value or len(value) > max_chars or "\x00" in value:
        return None
    return value.lower()
