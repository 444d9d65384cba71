"""HTTP delivery rules of media files, free of transport: which format a client gets, conditional
requests (If-None-Match, If-Range) and byte ranges (RFC 9110)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshkit.errors import FieldViolation, invalid

FORMATS = ("webp", "jpeg")
# A single range of bytes: "bytes=START-[END]" or a suffix "bytes=-LENGTH".
_RANGE = re.compile(r"bytes=(?:(\d{1,19})-(\d{0,19})|-(\d{1,19}))")
_MEDIA_RANGE_Q = re.compile(r";\s*q\s*=\s*([0-9.]+)")


@dataclass(frozen=True)
class ByteRange:
    """Bytes start (inclusive) to end (exclusive) of a file of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def content_range(self) -> str:
        """The Content-Range header value of this range."""
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


class RangeNotSatisfiable(Exception):
    """The requested range lies outside the file (HTTP 416)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the file of {size} bytes")
        self.size = size


def choose_format(requested: str, accept: str) -> str:
    """The rendition format to serve: `requested` when given ("webp" or "jpeg"; anything else is
    InvalidArgument on `format`), else WebP when the Accept header takes it, else JPEG, which
    every client shows."""
    if requested:
        if requested not in FORMATS:
            raise invalid([FieldViolation("format", "must be webp or jpeg")])
        return requested
    return "webp" if _accepts(accept, "image/webp") else "jpeg"


def none_match(if_none_match: str, entity_tag: str) -> bool:
    """Whether an If-None-Match header value names entity_tag (RFC 9110 13.1.2: "*" or any
    listed tag, compared weakly), i.e. the client's copy is current."""
    if if_none_match.strip() == "*":
        return True
    wanted = entity_tag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


def requested_range(
    range_header: str, if_range: str, entity_tag: str, size: int
) -> ByteRange | None:
    """The one byte range to serve, or None for the whole file: no Range header, one this server
    ignores (several ranges, another unit, malformed), or an If-Range naming another version.
    RangeNotSatisfiable when the range starts past the end of the file."""
    if not range_header:
        return None
    # If-Range with a strong tag: the range holds only for that exact version (RFC 9110 13.1.5).
    if if_range and if_range.strip() != entity_tag:
        return None
    match = _RANGE.fullmatch(range_header.strip())
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        length = int(suffix)
        if length == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(start=max(size - length, 0), end=size, size=size)
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        # "bytes=5-2" is not a valid range: the header is ignored.
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return ByteRange(start=start, end=end, size=size)


def _accepts(accept: str, media_type: str) -> bool:
    """Whether an Accept header lists media_type with a non-zero quality."""
    for item in accept.lower().split(","):
        name = item.split(";", 1)[0].strip()
        if name != media_type:
            continue
        quality = _MEDIA_RANGE_Q.search(item)
        try:
            return quality is None or float(quality.group(1)) > 0
        except ValueError:
            return False
    return False
