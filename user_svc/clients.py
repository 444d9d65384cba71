"""Outbound calls of user_svc: profiles in data_access, the JWKS and health of its peers."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.access_tokens import JwksFetcher
from meshkit.clients import PeerCaller
from meshkit.errors import DomainError
from user_svc.profiles import Profile, ProfileChanges
from user_svc.settings import SERVICE_NAME

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class DataAccessProfiles:
    """ProfileStore backed by data_access's ProfileStoreService."""

    def __init__(self, channel: grpc.aio.Channel, peer: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.ProfileStoreServiceStub(channel)
        self._peer = peer

    async def get_by_account_id(self, account_id: str) -> Profile:
        """Return the profile of an account or raise NotFound."""
        request = dataaccess_pb2.GetProfileRequest(account_id=account_id)
        response = await self._peer.unary(self._stub.GetProfile, request)
        return profile_from_record(response.profile)

    async def get_by_username(self, username: str) -> Profile:
        """Return the profile with a normalised username or raise NotFound."""
        request = dataaccess_pb2.GetProfileRequest(username=username)
        response = await self._peer.unary(self._stub.GetProfile, request)
        return profile_from_record(response.profile)

    async def update(self, account_id: str, changes: ProfileChanges) -> Profile:
        """Apply changes to an account's profile and return the result, or raise NotFound."""
        request = dataaccess_pb2.UpdateProfileRequest(
            account_id=account_id, display_name=changes.display_name, bio=changes.bio
        )
        response = await self._peer.unary(self._stub.UpdateProfile, request)
        return profile_from_record(response.profile)


def profile_from_record(record: dataaccess_pb2.ProfileRecord) -> Profile:
    """Turn a stored profile record into the domain profile."""
    return Profile(
        account_id=record.account_id,
        username=record.username,
        display_name=record.display_name,
        bio=record.bio,
        avatar_image_id=record.avatar_image_id,
        create_time=_datetime(record.create_time),
        update_time=_datetime(record.update_time),
    )


def data_access_caller(*, timeout: float, caller_token: str) -> PeerCaller:
    """Return the caller for data_access: deadline plus user_svc's caller credentials."""
    return PeerCaller(timeout=timeout, caller=SERVICE_NAME, caller_token=caller_token)


def auth_jwks_fetcher(channel: grpc.aio.Channel, peer: PeerCaller) -> JwksFetcher:
    """Return a coroutine function that reads auth_svc's JWKS as a list of JWK dicts."""
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def fetch() -> list[dict[str, str]]:
        response = await peer.unary(stub.GetJwks, auth_pb2.GetJwksRequest())
        return [_jwk(key) for key in response.keys]

    return fetch


async def is_serving(channel: grpc.aio.Channel, peer: PeerCaller) -> bool:
    """Tell whether the peer behind channel reports SERVING on its overall health."""
    # The typing stubs of grpc_health lack the stub's methods; build the callable directly.
    check = channel.unary_unary(
        _HEALTH_CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    try:
        response = await peer.unary(check, health_pb2.HealthCheckRequest(service=""))
    except DomainError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def _jwk(key: auth_pb2.JsonWebKey) -> dict[str, str]:
    """One JWK as a dict, without the members auth_svc left empty."""
    members = {
        "kty": key.kty,
        "crv": key.crv,
        "x": key.x,
        "kid": key.kid,
        "alg": key.alg,
        "use": key.use,
    }
    return {name: value for name, value in members.items() if value}


def _datetime(timestamp: timestamp_pb2.Timestamp) -> datetime:
    """Convert a protobuf timestamp to an aware UTC datetime."""
    return timestamp.ToDatetime(tzinfo=UTC)
