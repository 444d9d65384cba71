"""Opaque page tokens (AIP-158): where a listing stopped, and what listing it was.

A token is URL-safe base64 of a small JSON array: a scope naming the listing (and what it lists,
so that a token of one account's followers cannot page another's), then the cursor's values. A
token from elsewhere, altered, or of another listing is INVALID_ARGUMENT on field page_token.
Tokens hold no secret and grant nothing: every page is filtered for its caller like the first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from meshkit.errors import FieldViolation, InvalidArgument, invalid

MAX_TOKEN_CHARS = 1024
_POSITION_LIMIT = 2**63

Part = str | int


def scope_of(listing: str, request: str) -> str:
    """The scope of a listing whose tokens hold only for one request value (a search query, a
    filter): bound by the value's digest, so that a token stays short whatever the value holds."""
    return f"{listing}:{hashlib.sha256(request.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}"


def encode_page_token(scope: str, *parts: Part) -> str:
    """The next_page_token continuing a listing of scope after the given cursor values."""
    # UTF-8 rather than \u escapes: a cursor of 64 emoji stays a few hundred characters.
    text = json.dumps([scope, *parts], separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: a value that cannot be UTF-8 still makes a token (which decoding refuses).
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def decode_page_token(token: str, scope: str, *, field: str = "page_token") -> list[Part]:
    """The cursor values of a non-empty token made for scope; InvalidArgument otherwise."""
    if len(token) > MAX_TOKEN_CHARS:
        raise _foreign(field)
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        value = json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _foreign(field) from None
    if not isinstance(value, list) or not value or value[0] != scope:
        raise _foreign(field)
    parts = value[1:]
    if not all(isinstance(part, str | int) and not isinstance(part, bool) for part in parts):
        raise _foreign(field)
    return parts


def position_part(parts: list[Part], index: int, *, field: str = "page_token") -> int:
    """The positive 64-bit integer at parts[index]; InvalidArgument when it is not one."""
    if index < len(parts):
        value = parts[index]
        if isinstance(value, int) and 0 < value < _POSITION_LIMIT:
            return value
    raise _foreign(field)


def text_part(parts: list[Part], index: int, *, field: str = "page_token") -> str:
    """The string at parts[index]; InvalidArgument when it is not one."""
    if index < len(parts):
        value = parts[index]
        if isinstance(value, str):
            return value
    raise _foreign(field)


def _foreign(field: str) -> InvalidArgument:
    """The answer for a token this listing did not make."""
    return invalid([FieldViolation(field, "is not a token from a previous page of this listing")])


def page_size(requested: int, *, default: int, maximum: int) -> int:
    """The page size to use (AIP-158): default for 0, maximum for anything above it;
    InvalidArgument (field page_size) when negative."""
    if requested < 0:
        raise invalid([FieldViolation("page_size", "must not be negative")])
    return min(requested or default, maximum)
