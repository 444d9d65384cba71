"""Profile rules: who may read what, which fields may change and what values they accept."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from pydantic import HttpUrl, TypeAdapter, ValidationError

from meshkit import usernames
from meshkit.errors import FieldViolation, invalid

DISPLAY_NAME_MAX_CHARS = 64
BIO_MAX_CHARS = 300
PRONOUNS_MAX_CHARS = 30
WEBSITE_MAX_CHARS = 200
UPDATABLE_PATHS = ("display_name", "bio", "website", "pronouns", "private")
_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)
# "name:" at the start is a scheme (https:, javascript:) unless a port number follows, as after a
# bare host (example.com:8080).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?!\d)")
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Trimming and NFC can shorten text, so raw input a little over a limit may still fit; input
# this many times over it cannot, and is refused before any per-character work.
_RAW_LENGTH_FACTOR = 4

# An error names this many unknown mask paths at most, each cut to this many characters. Named
# in full, a mask filling the 256 KiB message limit made an error as large, which the edge and
# clients cannot carry (the caller saw UNAVAILABLE or RESOURCE_EXHAUSTED instead).
_REPORTED_PATHS = 3
_REPORTED_PATH_CHARS = 64

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
    website: str = ""
    pronouns: str = ""
    private: bool = False
    follower_count: int = 0
    following_count: int = 0
    post_count: int = 0
    email: str = ""
    """Private: shown to the owner only (see without_private_fields)."""

    def without_private_fields(self) -> Profile:
        """The profile as anyone but its owner may see it."""
        return replace(self, email="")


@dataclass(frozen=True)
class ProfileChanges:
    """New values for the updatable fields; None leaves a field as it is."""

    display_name: str | None = None
    bio: str | None = None
    website: str | None = None
    pronouns: str | None = None
    private: bool | None = None


@dataclass(frozen=True)
class ProfileInput:
    """The editable fields as a request carries them (unset text is empty)."""

    display_name: str = ""
    bio: str = ""
    website: str = ""
    pronouns: str = ""
    private: bool = False


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

    async def change_username(
        self, account_id: str, username: str, *, cooldown_seconds: float
    ) -> Profile:
        """Rename an account and return its profile; AlreadyExists (USERNAME_TAKEN) or
        ResourceExhausted (USERNAME_CHANGE_TOO_SOON) when it cannot."""
        ...


def normalise_username(raw: str, *, field: str = "username") -> str:
    """Return the lower-case form of a username or raise InvalidArgument on field."""
    try:
        return usernames.normalise_username(raw)
    except ValueError as exc:
        raise invalid([FieldViolation(field, str(exc))]) from None


def new_username(raw: str, *, field: str = "username") -> str:
    """Return the lower-case form of a username to take or raise InvalidArgument on field
    (the sign-up rule, reserved names refused)."""
    try:
        return usernames.new_username(raw)
    except ValueError as exc:
        raise invalid([FieldViolation(field, str(exc))]) from None


def changes_from_mask(paths: Iterable[str], values: ProfileInput) -> ProfileChanges:
    """Validate an update against its field mask and return the normalised changes.

    An empty mask means the fields set (non-empty, or private=true) in the request (AIP-134);
    clearing a field or making an account public takes naming it in the mask. Unknown paths fail
    on `update_mask`; bad values fail on `profile.<field>`.
    """
    selected = set(paths) or _populated(values)
    unknown = sorted(selected.difference(UPDATABLE_PATHS))
    if unknown:
        raise invalid(_unsupported(unknown))
    violations: list[FieldViolation] = []
    texts: dict[str, str] = {}
    limits = {
        "display_name": (DISPLAY_NAME_MAX_CHARS, False),
        "bio": (BIO_MAX_CHARS, True),
        "pronouns": (PRONOUNS_MAX_CHARS, False),
    }
    for name, (max_chars, newlines) in limits.items():
        if name in selected:
            texts[name], found = _text(
                f"profile.{name}",
                getattr(values, name),
                max_chars=max_chars,
                allow_newlines=newlines,
            )
            violations += found
    if "website" in selected:
        texts["website"], found = _website(values.website)
        violations += found
    if violations:
        raise invalid(violations)
    return ProfileChanges(
        display_name=texts.get("display_name"),
        bio=texts.get("bio"),
        website=texts.get("website"),
        pronouns=texts.get("pronouns"),
        private=values.private if "private" in selected else None,
    )


class ProfileService:
    """The use cases of user_svc, independent of gRPC."""

    def __init__(self, store: ProfileStore, *, username_cooldown_seconds: float) -> None:
        self._store = store
        self._username_cooldown = username_cooldown_seconds

    async def my_profile(self, account_id: str) -> Profile:
        """Return the profile of the authenticated account."""
        return await self._store.get_by_account_id(account_id)

    async def update_my_profile(
        self, account_id: str, paths: Iterable[str], values: ProfileInput
    ) -> Profile:
        """Apply the masked fields (no mask: the set ones) to the caller's own profile."""
        changes = changes_from_mask(paths, values)
        return await self._store.update(account_id, changes)

    async def change_username(self, account_id: str, raw: str) -> Profile:
        """Give the caller a new username under the sign-up rule (reserved names refused), at
        most once per cooldown; taking one's current name changes nothing."""
        username = new_username(raw)
        return await self._store.change_username(
            account_id, username, cooldown_seconds=self._username_cooldown
        )


def _populated(values: ProfileInput) -> set[str]:
    """Return the updatable fields the request sets, the implied mask of an empty one."""
    # REST always sends `profile` (body:"profile"); fields it leaves out arrive empty (or false)
    # and must keep their stored values.
    return {path for path in UPDATABLE_PATHS if getattr(values, path)}


def _website(raw: str) -> tuple[str, list[FieldViolation]]:
    """Return the cleaned website (empty clears it) and its violations: an http(s) URL of at
    most WEBSITE_MAX_CHARS characters, without credentials; a bare host gets https://."""
    field = "profile.website"
    too_long = [FieldViolation(field, f"must be at most {WEBSITE_MAX_CHARS} characters")]
    value = raw.strip()
    if not value:
        return "", []
    if len(value) > WEBSITE_MAX_CHARS:
        return "", too_long
    if any(ch.isspace() or _hidden(ch) for ch in value):
        return "", [FieldViolation(field, "must not contain spaces or invisible characters")]
    if value.startswith("//"):
        value = f"https:{value}"
    elif not _SCHEME.match(value):
        value = f"https://{value}"
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError:
        return "", [FieldViolation(field, "must be an http or https URL, like https://example.com")]
    if "@" in urlsplit(value).netloc:
        # user:password@ lets a link read as one site while going to another.
        return "", [FieldViolation(field, "must not contain a user name or password")]
    if len(value) > WEBSITE_MAX_CHARS:
        return "", too_long
    return value, []


def _hidden(ch: str) -> bool:
    """Tell whether a character is a control or an invisible format character (bidirectional
    overrides, zero-width spaces), which can make text read differently from what it is."""
    return unicodedata.category(ch) in _HIDDEN_CATEGORIES or ch in _INVISIBLE_CONTROLS


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
