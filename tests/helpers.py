"""Small helpers shared by tests of every package."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from pydantic import SecretStr

from data_access import admin
from data_access.migrate import upgrade_async
from meshgram.dataaccess.v1 import dataaccess_pb2
from meshkit.caller import CALLER_HEADER, CALLER_TOKEN_HEADER, derive_caller_token
from meshkit.grpc_errors import STATUS_DETAILS_KEY
from meshkit.peers import health_check
from meshkit.server import ServiceDefinition, start_server
from meshkit.settings import DataAccessClientSettings

Metadata = tuple[tuple[str, str], ...]
"""gRPC call metadata as the stubs accept it."""

AccountFactory = Callable[[], Awaitable[dataaccess_pb2.AccountRecord]]
"""Creates a unique account in data_access and returns its record."""

ProfileReader = Callable[[str], Awaitable[dataaccess_pb2.ProfileRecord]]
"""Reads the stored profile of an account id from data_access."""

SettingsT = TypeVar("SettingsT", bound=DataAccessClientSettings)


@dataclass(frozen=True)
class Failure:
    """What a client can read from a failed call."""

    code: grpc.StatusCode
    message: str
    reason: str
    fields: list[str]


async def failure_of(call: Awaitable[Any]) -> Failure:
    """Await a call expected to fail and return its code, message, reason and bad fields;
    AssertionError when it succeeds or carries no ErrorInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    return Failure(
        code=error.code(),
        message=error.details() or "",
        reason=error_info(error).reason,
        fields=list(field_violations(error)),
    )


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


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    """The status a server's health service reports for service ("" = overall)."""
    response = await health_check(channel)(health_pb2.HealthCheckRequest(service=service))
    return response.status


def free_port() -> int:
    """A loopback port nothing listens on (just released by the OS)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def clear_environment(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """Keep the machine's <prefix>* and MESHGRAM_ENV variables out of a settings test."""
    for name in list(os.environ):
        if name.startswith(prefix) or name == "MESHGRAM_ENV":
            monkeypatch.delenv(name)


def service_settings(
    settings_class: type[SettingsT], mesh_secret: str, data_access_address: str, **fields: Any
) -> SettingsT:
    """Settings of a service served in-process: a free loopback port, the given data_access and
    the service's own caller token under mesh_secret (and, for storage_svc, a media URL key
    derived from it); fields set the rest."""
    if settings_class.service_name == "storage_svc":
        fields.setdefault("media_url_keys", SecretStr(f"test:{mesh_secret}"))
    return settings_class(
        host="127.0.0.1",
        port=0,
        data_access_addr=data_access_address,
        data_access_token=SecretStr(derive_caller_token(mesh_secret, settings_class.service_name)),
        **fields,
    )


@asynccontextmanager
async def serving(definition: ServiceDefinition, grace: float = 0) -> AsyncIterator[str]:
    """Serve definition in-process on a free loopback port for the block; yield the
    "127.0.0.1:PORT" address, then stop with grace seconds for in-flight calls."""
    running = await start_server(definition, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop(grace)


async def no_keys() -> list[dict[str, str]]:
    """A JWKS fetcher that finds no keys, for wiring that must not reach auth_svc."""
    return []


async def assert_public_definition(
    definition: ServiceDefinition, *, name: str, service: str
) -> None:
    """Check the wiring of a public service whose peers are unreachable: its name, its one
    service, reflection of the whole public API, and no claim to serve; then close it."""
    assert definition.name == name
    assert list(definition.service_names) == [service]
    assert set(definition.reflection_names) == {
        "meshgram.auth.v1.AuthService",
        "meshgram.user.v1.UserService",
        "meshgram.storage.v1.StorageService",
    }
    # No keys and no auth_svc to fetch them from: no token can be verified, so not ready.
    assert await definition.check_ready() is False
    for closer in definition.on_shutdown:
        await closer()


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status in a failed call's trailers; AssertionError when absent."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no {STATUS_DETAILS_KEY} in {error!r}")


@asynccontextmanager
async def migrated_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A database of its own (named prefix_<random>) on the server of server_url, migrated to
    the head; dropped on exit. Yields its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    url = await admin.create_database(server_url, name)
    try:
        await upgrade_async(url)
        yield url
    finally:
        await admin.drop_database(server_url, name)
