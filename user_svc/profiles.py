"""Profile rules: who may read what, which fields may change and what values they accept."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from meshkit.errors import FieldViolation, invalid

DISPLAY_NAME_MAX_CHARS = 64
BIO_MAX_CHARS = 300
UPDATABLE_PATHS = ("display_name", "bio")
# Trimming and NFC can shorten text, so raw input a little over a limit may still fit; input
# this many times over it cannot, and is refused before any per-character work.
_RAW_LENGTH_FACTOR = 4

# An error names this many unknown mask paths at most, each cut to this many characters. Named
# in full, a mask filling the 256 KiB message limit made an error as large, which the edge and
# clients cannot carry (the caller saw UNAVAILABLE or RESOURCE_EXHAUSTED instead).
_REPORTED_PATHS = 3
_REPORTED_PATH_CHARS = 64

# The handle rule auth_svc enforces at registration; anything else cannot name a profile.
_USERNAME = re.compile(r"[a-z0-9._]{3,30}")

# Bidirectional overrides and isolates reorder the text around them: a classic way to make a
# name read differently from what it is. Line and paragraph separators act as hidden newlines.
_INVISIBLE_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SEPARATOR_CATEGORIES = frozenset({"Zl", "Zp"})


@dataclass(frozen=True)
class Profile:
    """A profile as the service sees it."""

    account_id: str
    username: str
    display_name: str
    bio: str
    avatar_image_id: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class ProfileChanges:
    """New values for the updatable fields; None leaves a field as it is."""

    display_name: str | None = None
    bio: str | None = None


class ProfileStore(Protocol):
    """Where profiles live (data_access in production, a fake in unit tests)."""

    async def get_by_account_id(self, account_id: str) -> Profile:
        """Return the profile of an account or raise NotFound."""
        ...

    async def get_by_username(self, username: str) -> Profile:
        """Return the profile with a normalised username or raise NotFound."""
        ...

    async def update(self, account_id: str, changes: ProfileChanges) -> Profile:
        """Apply changes to an account's profile and return the result, or raise NotFound."""
        ...


def normalise_username(raw: str) -> str:
    """Return the lower-case form of a username or raise InvalidArgument on field `username`."""
    # Lower-case only ASCII: str.lower() maps a few non-ASCII letters (e.g. the Kelvin sign)
    # to ASCII ones, which would let look-alike input reach someone else's profile.
    candidate = raw.lower() if raw.isascii() else raw
    if not _USERNAME.fullmatch(candidate):
        raise invalid(
            [FieldViolation("username", 'must be 3 to 30 characters of a-z, 0-9, "." and "_"')]
        )
    return candidate


def changes_from_mask(paths: Iterable[str], *, display_name: str, bio: str) -> ProfileChanges:
    """Validate an update against its field mask and return the normalised changes.

    An empty mask means the fields set (non-empty) in the request (AIP-134); clearing a field
    takes naming it in the mask. Unknown paths fail on `update_mask`; bad values fail on
    `profile.display_name` / `profile.bio`.
    """
    selected = set(paths) or _populated(display_name=display_name, bio=bio)
    unknown = sorted(selected.difference(UPDATABLE_PATHS))
    if unknown:
        raise invalid(_unsupported(unknown))
    violations: list[FieldViolation] = []
    new_display_name = new_bio = None
    if "display_name" in selected:
        new_display_name, found = _text(
            "profile.display_name",
            display_name,
            max_chars=DISPLAY_NAME_MAX_CHARS,
            allow_newlines=False,
        )
        violations += found
    if "bio" in selected:
        new_bio, found = _text("profile.bio", bio, max_chars=BIO_MAX_CHARS, allow_newlines=True)
        violations += found
    if violations:
        raise invalid(violations)
    return ProfileChanges(display_name=new_display_name, bio=new_bio)


class ProfileService:
    """The use cases of user_svc, independent of gRPC."""

    def __init__(self, store: ProfileStore) -> None:
        self._store = store

    async def my_profile(self, account_id: str) -> Profile:
        """Return the profile of the authenticated account."""
        return await self._store.get_by_account_id(account_id)

    async def profile_by_username(self, username: str) -> Profile:
        """Return anyone's profile by username, compared case-insensitively."""
        return await self._store.get_by_username(normalise_username(username))

    async def update_my_profile(
        self, account_id: str, paths: Iterable[str], *, display_name: str, bio: str
    ) -> Profile:
        """Apply the masked fields (no mask: the non-empty ones) to the caller's own profile."""
        changes = changes_from_mask(paths, display_name=display_name, bio=bio)
        return await self._store.update(account_id, changes)


def _populated(*, display_name: str, bio: str) -> set[str]:
    """Return the updatable fields the request sets, the implied mask of an empty one."""
    # REST always sends `profile` (body:"profile"); fields it leaves out arrive empty and must
    # keep their stored values.
    values = {"display_name": display_name, "bio": bio}
    return {path for path, value in values.items() if value}


def _unsupported(paths: list[str]) -> list[FieldViolation]:
    """The violations for unknown mask paths: the first few, shortened, and how many more."""
    allowed = ", ".join(UPDATABLE_PATHS)
    violations = [
        FieldViolation("update_mask", f"unsupported path {_shortened(path)}; allowed: {allowed}")
        for path in paths[:_REPORTED_PATHS]
    ]
    if len(paths) > _REPORTED_PATHS:
        more = len(paths) - _REPORTED_PATHS
        violations.append(FieldViolation("update_mask", f"and {more} more unsupported paths"))
    return violations


def _shortened(path: str) -> str:
    """A path as an error shows it: quoted, and cut to _REPORTED_PATH_CHARS characters."""
    if len(path) <= _REPORTED_PATH_CHARS:
        return repr(path)
    return f"{path[:_REPORTED_PATH_CHARS]!r}... ({len(path)} characters)"


def _text(
    field: str, raw: str, *, max_chars: int, allow_newlines: bool
) -> tuple[str, list[FieldViolation]]:
    """Return the cleaned value of one free-text field and its violations."""
    too_long = FieldViolation(field, f"must be at most {max_chars} characters")
    if len(raw) > _RAW_LENGTH_FACTOR * max_chars:
        # Measured before normalising or scanning: oversized input costs no more than a check.
        return "", [too_long]
    if allow_newlines:
        # Browsers submit textarea line breaks as CRLF; store one form only.
        raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    value = _clean(raw)
    if len(value) > max_chars:
        return value, [too_long]
    if any(_forbidden(ch, allow_newlines=allow_newlines) for ch in value):
        allowed = " other than line breaks" if allow_newlines else ""
        return value, [FieldViolation(field, f"must not contain control characters{allowed}")]
    return value, []


def _clean(value: str) -> str:
    """Trim surrounding whitespace and use the composed Unicode form."""
    # NFC makes length limits count what people see, and equal-looking names equal bytes.
    return unicodedata.normalize("NFC", value).strip()


def _forbidden(ch: str, *, allow_newlines: bool) -> bool:
    """Tell whether a character may not appear in profile text."""
    if ch == "\n":
        return not allow_newlines
    category = unicodedata.category(ch)
    return category == "Cc" or category in _SEPARATOR_CATEGORIES or ch in _INVISIBLE_CONTROLS
