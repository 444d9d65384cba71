"""An error's size does not grow with the request that caused it: it must fit in trailers."""

from __future__ import annotations

import base64

import grpc
import pytest
from google.rpc import error_details_pb2

from meshkit import errors
from meshkit.grpc_errors import (
    MESSAGE_MAX_BYTES,
    RETRY_AFTER_KEY,
    STATUS_DETAILS_KEY,
    VIOLATIONS_MAX,
    from_rpc_error,
    message_for,
    status_code_for,
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
    assert isinstance(trailer, bytes)
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


def as_received(error: errors.DomainError) -> grpc.aio.AioRpcError:
    """The error as a client of the service that raised it receives it."""
    return grpc.aio.AioRpcError(
        status_code_for(error),
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*trailing_metadata_for(error)),
        details=message_for(error),
    )


def test_too_many_attempts_tell_the_client_when_to_try_again() -> None:
    error = errors.ResourceExhausted(
        message="too many failed logins; try again in 42 s",
        reason=Reason.LOGIN_LOCKED,
        retry_after_seconds=42,
    )
    assert status_code_for(error) is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = to_status_proto(error)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    [info, retry] = status.details
    assert info.type_url.endswith("google.rpc.ErrorInfo")
    parsed = error_details_pb2.RetryInfo()
    assert retry.Unpack(parsed)
    assert (parsed.retry_delay.seconds, parsed.retry_delay.nanos) == (42, 0)
    # The edge turns this trailer into the Retry-After header of REST clients.
    trailers = dict(trailing_metadata_for(error))
    assert trailers[RETRY_AFTER_KEY] == "42"
    assert set(trailers) == {STATUS_DETAILS_KEY, RETRY_AFTER_KEY}


def test_without_a_wait_there_is_no_retry_info() -> None:
    error = errors.ResourceExhausted(message="slow down", reason=Reason.TOO_MANY_ATTEMPTS)
    assert len(to_status_proto(error).details) == 1
    assert [key for key, _ in trailing_metadata_for(error)] == [STATUS_DETAILS_KEY]


@pytest.mark.parametrize(
    ("reason", "wait"), [(Reason.LOGIN_LOCKED, 42), (Reason.TOO_MANY_ATTEMPTS, 0)]
)
def test_a_resource_exhausted_error_crosses_services_intact(reason: Reason, wait: int) -> None:
    sent = errors.ResourceExhausted(
        message="try again later", reason=reason, retry_after_seconds=wait
    )
    received = from_rpc_error(as_received(sent))
    assert isinstance(received, errors.ResourceExhausted)
    assert (received.message, received.reason, received.retry_after_seconds) == (
        "try again later",
        reason,
        wait,
    )


def test_other_errors_still_cross_services_intact() -> None:
    sent = errors.FailedPrecondition(
        message="solve the CAPTCHA",
        reason=Reason.CAPTCHA_REQUIRED,
        metadata={"site_key": "unit-site-key"},
    )
    received = from_rpc_error(as_received(sent))
    assert type(received) is errors.FailedPrecondition
    assert (received.reason, dict(received.metadata)) == (
        Reason.CAPTCHA_REQUIRED,
        {"site_key": "unit-site-key"},
    )
    assert [key for key, _ in trailing_metadata_for(sent)] == [STATUS_DETAILS_KEY]
