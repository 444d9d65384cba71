"""Translate domain errors to gRPC statuses with google.rpc details, and back again.

The server side turns a DomainError into a canonical status code plus a google.rpc.Status carrying
ErrorInfo (reason, domain) and, for invalid input, BadRequest field violations. The client side
turns such a status from a peer service back into the same DomainError, so an error raised in
data_access reaches the edge with its reason intact.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from meshkit import errors
from meshkit.reasons import ERROR_DOMAIN, Reason

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Sent with RESOURCE_EXHAUSTED: the edge passes it on to REST clients as the HTTP header.
RETRY_AFTER_KEY = "retry-after"

# An error travels in trailers, which grpc clients cap at 8 KiB by default: texts that echo a
# client's input (an unknown mask path, a rejected email) are cut so that any error, its
# details base64-encoded and its message percent-encoded, stays below that.
MESSAGE_MAX_BYTES = 512
VIOLATIONS_MAX = 8
FIELD_MAX_BYTES = 100
DESCRIPTION_MAX_BYTES = 200

_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}
_CLASSES = {code: cls for cls, code in _CODES.items()}


def status_code_for(error: errors.DomainError) -> grpc.StatusCode:
    """Return the canonical gRPC code for a domain error."""
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.UNKNOWN


def to_status_proto(error: errors.DomainError) -> status_pb2.Status:
    """Build the google.rpc.Status (with ErrorInfo and BadRequest details) for a domain error."""
    code = status_code_for(error)
    info = error_details_pb2.ErrorInfo(
        reason=str(error.reason), domain=ERROR_DOMAIN, metadata=dict(error.metadata)
    )
    details = [_pack(info)]
    if isinstance(error, errors.InvalidArgument) and error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=shortened(v.field, FIELD_MAX_BYTES),
                    description=shortened(v.description, DESCRIPTION_MAX_BYTES),
                )
                for v in error.violations[:VIOLATIONS_MAX]
            ]
        )
        details.append(_pack(bad))
    if isinstance(error, errors.ResourceExhausted) and error.retry_after_seconds > 0:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromSeconds(error.retry_after_seconds)
        details.append(_pack(retry))
    return status_pb2.Status(code=code.value[0], message=message_for(error), details=details)


def message_for(error: errors.DomainError) -> str:
    """The error's message as the client receives it (grpc-message and Status.message)."""
    return shortened(error.message, MESSAGE_MAX_BYTES)


def shortened(text: str, limit: int) -> str:
    """text, cut to at most limit UTF-8 bytes (ending in "...") when it is longer."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    # A character cut in half is dropped rather than left broken.
    return encoded[: limit - 3].decode(errors="ignore") + "..."


def trailing_metadata_for(error: errors.DomainError) -> tuple[tuple[str, str | bytes], ...]:
    """Return the trailing metadata that carries the error's google.rpc.Status (and, for
    RESOURCE_EXHAUSTED, the seconds to wait)."""
    status: tuple[tuple[str, str | bytes], ...] = (
        (STATUS_DETAILS_KEY, to_status_proto(error).SerializeToString()),
    )
    if isinstance(error, errors.ResourceExhausted) and error.retry_after_seconds > 0:
        return (*status, (RETRY_AFTER_KEY, str(error.retry_after_seconds)))
    return status


def from_rpc_error(error: grpc.aio.AioRpcError) -> errors.DomainError:
    """Rebuild the domain error a peer service raised; transport failures become Unavailable."""
    code = error.code()
    cls = _CLASSES.get(code)
    if cls is None or cls is errors.Unavailable:
        return errors.Unavailable(
            message="a dependency is unavailable, please retry",
            reason=Reason.DEPENDENCY_UNAVAILABLE,
        )
    status = _status_from_trailers(error)
    reason = Reason.INVALID_FIELD
    violations: list[errors.FieldViolation] = []
    metadata: dict[str, str] = {}
    retry_after = 0
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.reason in Reason.__members__:
                    reason = Reason(info.reason)
                metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [
                    errors.FieldViolation(v.field, v.description) for v in bad.field_violations
                ]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.seconds
    message = error.details() or code.name
    if cls is errors.InvalidArgument:
        return errors.InvalidArgument(
            message=message, reason=reason, metadata=metadata, violations=violations
        )
    if cls is errors.ResourceExhausted:
        return errors.ResourceExhausted(
            message=message, reason=reason, metadata=metadata, retry_after_seconds=retry_after
        )
    return cls(message=message, reason=reason, metadata=metadata)


def _status_from_trailers(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """Parse google.rpc.Status from an error's trailing metadata, if present and consistent."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            if status.code == error.code().value[0]:
                return status
    return None


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    """Wrap a detail message in google.protobuf.Any."""
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
