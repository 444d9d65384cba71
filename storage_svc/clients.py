"""Outbound calls of storage_svc: image metadata in data_access, the JWKS and peers' health."""

from __future__ import annotations

from datetime import UTC

import grpc
from grpc_health.v1 import health_pb2

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.access_tokens import JwksFetcher
from meshkit.clients import PeerCaller
from meshkit.errors import DomainError
from storage_svc.images import Image, NewImage
from storage_svc.settings import SERVICE_NAME

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class DataAccessMedia:
    """MediaStore backed by data_access's MediaStoreService."""

    def __init__(self, channel: grpc.aio.Channel, peer: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.MediaStoreServiceStub(channel)
        self._peer = peer

    async def create_image(self, image: NewImage) -> Image:
        """Record an image and return it with its id and creation time."""
        record = dataaccess_pb2.ImageRecord(
            owner_id=image.owner_id,
            content_type=image.content_type,
            size_bytes=image.size_bytes,
            width=image.width,
            height=image.height,
            sha256=image.sha256,
        )
        request = dataaccess_pb2.CreateImageRequest(image=record)
        response = await self._peer.unary(self._stub.CreateImage, request)
        return image_from_record(response.image)

    async def get_image(self, image_id: str) -> Image:
        """Return an image's metadata or raise NotFound."""
        request = dataaccess_pb2.GetImageRequest(image_id=image_id)
        response = await self._peer.unary(self._stub.GetImage, request)
        return image_from_record(response.image)

    async def set_avatar(self, account_id: str, image_id: str) -> Image:
        """Make an account's own image its avatar; NotFound for anyone else's image."""
        request = dataaccess_pb2.SetAvatarRequest(account_id=account_id, image_id=image_id)
        response = await self._peer.unary(self._stub.SetAvatar, request)
        return image_from_record(response.image)


def image_from_record(record: dataaccess_pb2.ImageRecord) -> Image:
    """Turn a stored image record into the domain image."""
    return Image(
        id=record.id,
        owner_id=record.owner_id,
        content_type=record.content_type,
        size_bytes=record.size_bytes,
        width=record.width,
        height=record.height,
        sha256=record.sha256,
        create_time=record.create_time.ToDatetime(tzinfo=UTC),
    )


def data_access_caller(*, timeout: float, caller_token: str) -> PeerCaller:
    """Return the caller for data_access: deadline plus storage_svc's caller credentials."""
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
