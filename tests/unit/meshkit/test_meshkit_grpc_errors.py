"""An error's size does not grow with the request that caused it: it must fit in trailers."""

from __future__ import annotations

import base64

from google.rpc import error_details_pb2

from meshkit import errors
from meshkit.grpc_errors import (
    MESSAGE_MAX_BYTES,
    VIOLATIONS_MAX,
    message_for,
    to_status_proto,
    trailing_metadata_for,
)
from meshkit.reasons import Reason


def test_an_error_echoing_a_huge_input_stays_small() -> None:
    huge = "\u00e9" * 200_000  # percent-encoding makes each of these 6 bytes in grpc-message
    error = errors.invalid(
        [errors.FieldViolation(f"field_{i}_{huge}", f"bad value {huge}") for i in range(500)]
    )
    status = to_status_proto(error)
    assert len(status.message.encode()) <= MESSAGE_MAX_BYTES
    assert status.message.endswith("...")
    [_, bad_request] = status.details
    assert bad_request.type_url.endswith("google.rpc.BadRequest")
    [(_, trailer)] = trailing_metadata_for(error)
    # On the wire: the details base64-encoded, the message percent-encoded (UTF-8 bytes x3).
    wire = len(base64.b64encode(trailer)) + 3 * len(message_for(error).encode())
    assert wire < 8 * 1024, wire
    assert len(status.details) == 2
    parsed = error_details_pb2.BadRequest()
    bad_request.Unpack(parsed)
    assert len(parsed.field_violations) == VIOLATIONS_MAX


def test_ordinary_errors_are_untouched() -> None:
    error = errors.NotFound(message="no profile named ada", reason=Reason.PROFILE_NOT_FOUND)
    assert message_for(error) == "no profile named ada"
    assert to_status_proto(error).message == "no profile named ada"
