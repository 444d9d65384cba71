"""Outbound calls of storage_svc: image metadata in data_access."""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration

from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.clients import PeerCaller
from meshkit.timestamps import to_datetime
from storage_svc.images import Image, NewImage


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


class DataAccessCollections:
    """CollectionQueue backed by data_access's MediaStoreService."""

    def __init__(self, channel: grpc.aio.Channel, peer: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.MediaStoreServiceStub(channel)
        self._peer = peer

    async def claim(self, limit: int, lease_seconds: float) -> list[str]:
        """Claim up to limit queued blob keys for lease_seconds."""
        lease = Duration()
        lease.FromNanoseconds(int(lease_seconds * 1e9))
        request = dataaccess_pb2.ClaimBlobCollectionsRequest(limit=limit, lease=lease)
        response = await self._peer.unary(self._stub.ClaimBlobCollections, request)
        return list(response.sha256)

    async def complete(self, key: str) -> bool:
        """Take a key off the queue; whether an image still names the blob."""
        request = dataaccess_pb2.CompleteBlobCollectionRequest(sha256=key)
        response = await self._peer.unary(self._stub.CompleteBlobCollection, request)
        return response.referenced


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
        create_time=to_datetime(record.create_time),
    )
