"""Small helpers shared by tests of every package."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from google.rpc import error_details_pb2, status_pb2

from meshgram.dataaccess.v1 import dataaccess_pb2
from meshkit.caller import CALLER_HEADER, CALLER_TOKEN_HEADER, derive_caller_token
from meshkit.grpc_errors import STATUS_DETAILS_KEY

Metadata = tuple[tuple[str, str], ...]
"""gRPC call metadata as the stubs accept it."""

AccountFactory = Callable[[], Awaitable[dataaccess_pb2.AccountRecord]]
"""Creates a unique account in data_access and returns its record."""


def caller_metadata(mesh_secret: str, caller: str) -> Metadata:
    """Call metadata by which `caller` (e.g. "auth_svc") identifies itself to data_access."""
    return (
        (CALLER_HEADER, caller),
        (CALLER_TOKEN_HEADER, derive_caller_token(mesh_secret, caller)),
    )


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The google.rpc.ErrorInfo a failed call carries; AssertionError when it has none."""
    for detail in _status(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {error!r}")


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The BadRequest field violations a failed call carries, field -> description."""
    for detail in _status(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    return {}


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status in a failed call's trailers; AssertionError when absent."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no {STATUS_DETAILS_KEY} in {error!r}")
