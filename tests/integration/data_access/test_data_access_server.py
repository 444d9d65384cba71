"""The data_access process as callers see it: caller checks, health and reflection."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from pydantic import SecretStr

from data_access.server import build_definition
from data_access.settings import DataAccessSettings
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from meshkit.caller import CALLER_HEADER, CALLER_TOKEN_HEADER, derive_caller_token
from tests.helpers import Metadata, caller_metadata, failure_of, health_status, serving

pytestmark = pytest.mark.integration

SERVICES = [
    "meshgram.dataaccess.v1.AccountStoreService",
    "meshgram.dataaccess.v1.AccountSecurityService",
    "meshgram.dataaccess.v1.MailOutboxService",
    "meshgram.dataaccess.v1.ProfileStoreService",
    "meshgram.dataaccess.v1.MediaStoreService",
]

# One representative RPC per service, callable with an empty-ish request.
Call = Callable[[grpc.aio.Channel, Metadata], Awaitable[Any]]


def _get_credentials(channel: grpc.aio.Channel, metadata: Metadata) -> Awaitable[Any]:
    return pb_grpc.AccountStoreServiceStub(channel).GetCredentials(
        pb.GetCredentialsRequest(email="someone@example.com"), metadata=metadata
    )


def _get_mfa(channel: grpc.aio.Channel, metadata: Metadata) -> Awaitable[Any]:
    return pb_grpc.AccountSecurityServiceStub(channel).GetMfa(
        pb.GetMfaRequest(account_id=str(uuid.uuid4())), metadata=metadata
    )


def _get_profile(channel: grpc.aio.Channel, metadata: Metadata) -> Awaitable[Any]:
    return pb_grpc.ProfileStoreServiceStub(channel).GetProfile(
        pb.GetProfileRequest(account_id=str(uuid.uuid4())), metadata=metadata
    )


def _set_avatar(channel: grpc.aio.Channel, metadata: Metadata) -> Awaitable[Any]:
    return pb_grpc.MediaStoreServiceStub(channel).SetAvatar(
        pb.SetAvatarRequest(account_id=str(uuid.uuid4()), image_id=str(uuid.uuid4())),
        metadata=metadata,
    )


def _complete_mail(channel: grpc.aio.Channel, metadata: Metadata) -> Awaitable[Any]:
    return pb_grpc.MailOutboxServiceStub(channel).CompleteMail(
        pb.CompleteMailRequest(sender=f"probe-{uuid.uuid4()}", id=1, sent=True),
        metadata=metadata,
    )


CALLS: dict[str, Call] = {
    "AccountStoreService": _get_credentials,
    "AccountSecurityService": _get_mfa,
    "MailOutboxService": _complete_mail,
    "ProfileStoreService": _get_profile,
    "MediaStoreService": _set_avatar,
}
# What each probe gets from its servicer: it asks for something missing or not its own.
ANSWERS = {
    "AccountStoreService": grpc.StatusCode.NOT_FOUND,
    "AccountSecurityService": grpc.StatusCode.NOT_FOUND,
    "MailOutboxService": grpc.StatusCode.FAILED_PRECONDITION,
    "ProfileStoreService": grpc.StatusCode.NOT_FOUND,
    "MediaStoreService": grpc.StatusCode.NOT_FOUND,
}
ALLOWED = {
    "auth_svc": ("AccountStoreService", "AccountSecurityService", "MailOutboxService"),
    "user_svc": ("ProfileStoreService",),
    "storage_svc": ("MediaStoreService",),
}


async def _refusal(call: Call, channel: grpc.aio.Channel, metadata: Metadata) -> tuple[Any, str]:
    failure = await failure_of(call(channel, metadata))
    return failure.code, failure.reason


@pytest.mark.parametrize("service", list(CALLS))
async def test_call_without_credentials_is_unauthenticated(
    data_access_channel: grpc.aio.Channel, service: str
) -> None:
    assert await _refusal(CALLS[service], data_access_channel, ()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CALLER_UNKNOWN",
    )


@pytest.mark.parametrize(
    "metadata",
    [
        ((CALLER_HEADER, "auth_svc"), (CALLER_TOKEN_HEADER, "forged")),
        ((CALLER_HEADER, "auth_svc"),),
        # A genuine credential, but user_svc's: a service cannot speak as another.
        ((CALLER_HEADER, "auth_svc"), (CALLER_TOKEN_HEADER, "USER_SVC_TOKEN")),
        ((CALLER_HEADER, "billing_svc"), (CALLER_TOKEN_HEADER, "BILLING_SVC_TOKEN")),
    ],
    ids=["forged-token", "no-token", "other-service-token", "unknown-service"],
)
async def test_bad_caller_credentials_are_unauthenticated(
    data_access_channel: grpc.aio.Channel, mesh_secret: str, metadata: Metadata
) -> None:
    tokens = {
        "USER_SVC_TOKEN": derive_caller_token(mesh_secret, "user_svc"),
        "BILLING_SVC_TOKEN": derive_caller_token(mesh_secret, "billing_svc"),
    }
    sent = tuple((key, tokens.get(value, value)) for key, value in metadata)

    assert await _refusal(_get_credentials, data_access_channel, sent) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CALLER_UNKNOWN",
    )


async def test_credentials_from_another_mesh_secret_are_unauthenticated(
    data_access_channel: grpc.aio.Channel,
) -> None:
    metadata = caller_metadata("some-other-mesh-secret", "auth_svc")

    assert await _refusal(_get_credentials, data_access_channel, metadata) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CALLER_UNKNOWN",
    )


@pytest.mark.parametrize(
    ("caller", "service"),
    [
        (caller, service)
        for caller, allowed in ALLOWED.items()
        for service in CALLS
        if service not in allowed
    ],
)
async def test_known_caller_outside_its_allow_list_is_permission_denied(
    data_access_channel: grpc.aio.Channel, mesh_secret: str, caller: str, service: str
) -> None:
    metadata = caller_metadata(mesh_secret, caller)

    assert await _refusal(CALLS[service], data_access_channel, metadata) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_ALLOWED",
    )


@pytest.mark.parametrize(
    ("caller", "service"),
    [(caller, service) for caller, allowed in ALLOWED.items() for service in allowed],
)
async def test_each_caller_reaches_its_own_services(
    data_access_channel: grpc.aio.Channel, mesh_secret: str, caller: str, service: str
) -> None:
    # The probe's answer can only come from the servicer itself.
    code, _ = await _refusal(
        CALLS[service], data_access_channel, caller_metadata(mesh_secret, caller)
    )

    assert code == ANSWERS[service]


@pytest.mark.parametrize("service", ["", *SERVICES])
async def test_health_is_serving_without_credentials(
    data_access_channel: grpc.aio.Channel, service: str
) -> None:
    status = await health_status(data_access_channel, service)

    assert status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_data_access_services_without_credentials(
    data_access_channel: grpc.aio.Channel,
) -> None:
    reflection_info = data_access_channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = reflection_info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))

    names = {service.name async for r in responses for service in r.list_services_response.service}

    assert set(SERVICES) <= names


async def test_unreachable_database_reports_not_serving_and_unavailable(
    mesh_secret: str,
) -> None:
    # Nothing listens on port 1; the process must say so rather than fail opaquely.
    settings = DataAccessSettings(host="127.0.0.1", port=0, mesh_secret=SecretStr(mesh_secret))
    definition = build_definition(settings, "postgresql://postgres@127.0.0.1:1/meshgram")
    async with serving(definition) as address, grpc.aio.insecure_channel(address) as channel:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        refusal = await _refusal(
            _get_credentials, channel, caller_metadata(mesh_secret, "auth_svc")
        )
        assert refusal == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
