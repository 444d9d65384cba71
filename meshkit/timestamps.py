"""Conversions between aware datetimes and protobuf Timestamps, the one time type on the wire."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(moment: datetime) -> Timestamp:
    """Convert an aware datetime to a protobuf Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def to_datetime(stamp: Timestamp) -> datetime:
    """Convert a protobuf Timestamp to an aware UTC datetime."""
    return stamp.ToDatetime(tzinfo=UTC)
