"""Conversions between aware datetimes and protobuf Timestamps, the one time type on the wire."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from meshkit.errors import FieldViolation, invalid


def to_timestamp(moment: datetime) -> Timestamp:
    """Convert an aware datetime to a protobuf Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def optional_timestamp(moment: datetime | None) -> Timestamp | None:
    """Convert an aware datetime to a Timestamp, or None to None (the field stays unset)."""
    return None if moment is None else to_timestamp(moment)


def to_datetime(stamp: Timestamp) -> datetime:
    """Convert a protobuf Timestamp to an aware UTC datetime."""
    return stamp.ToDatetime(tzinfo=UTC)


def optional_datetime(request: Message, field: str, *, path: str = "") -> datetime | None:
    """Return a request's Timestamp field as an aware UTC datetime, or None when unset;
    InvalidArgument (naming path, else field) when outside the representable range."""
    if not request.HasField(field):
        return None
    stamp: Timestamp = getattr(request, field)
    try:
        return to_datetime(stamp)
    except (ValueError, OverflowError):
        raise invalid([FieldViolation(path or field, "is not a valid timestamp")]) from None


def required_datetime(request: Message, field: str, *, path: str = "") -> datetime:
    """Like optional_datetime, but an unset field is InvalidArgument too."""
    moment = optional_datetime(request, field, path=path)
    if moment is None:
        raise invalid([FieldViolation(path or field, "is required")])
    return moment
