"""Outbound calls of storage_svc: image metadata in data_access."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf.duration_pb2 import Duration

from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.clients import PeerCaller
from meshkit.timestamps import to_datetime
from storage_svc.images import Image, ImageAccess, NewImage, StoredRendition
from storage_svc.visibility import Standing


class DataAccessMedia:
    """MediaStore backed by data_access's MediaStoreService."""

    def __init__(self, channel: grpc.aio.Channel, peer: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.MediaStoreServiceStub(channel)
        self._peer = peer

    async def create_image(self, image: NewImage, *, quota_bytes: int) -> Image:
        """Record an image within its owner's quota; ResourceExhausted past it."""
        record = dataaccess_pb2.ImageRecord(
            owner_id=image.owner_id,
            content_type=image.content_type,
            size_bytes=image.size_bytes,
            width=image.width,
            height=image.height,
            sha256=image.sha256,
            placeholder=image.placeholder,
            original_kept=image.original_kept,
            renditions=_rendition_records(image.renditions),
        )
        request = dataaccess_pb2.CreateImageRequest(image=record, quota_bytes=quota_bytes)
        response = await self._peer.unary(self._stub.CreateImage, request)
        return image_from_record(response.image)

    async def get_access(self, image_id: str, viewer_id: str) -> ImageAccess:
        """Return an image and its owner's standing towards viewer_id; NotFound if none."""
        request = dataaccess_pb2.GetImageAccessRequest(image_id=image_id, viewer_id=viewer_id)
        response = await self._peer.unary(self._stub.GetImageAccess, request)
        return ImageAccess(
            image=image_from_record(response.image),
            standing=Standing(
                owner_id=response.image.owner_id,
                owner_private=response.owner_private,
                owner_hidden=response.owner_hidden,
                viewer_follows=response.viewer_follows,
                blocked=response.blocked,
                viewer_admin=response.viewer_admin,
            ),
        )

    async def list_images(
        self, owner_id: str, *, page_size: int, before_position: int
    ) -> tuple[list[Image], bool]:
        """Return a page of an owner's images, newest first, and whether more remain."""
        request = dataaccess_pb2.ListImagesRequest(
            owner_id=owner_id, page_size=page_size, before_position=before_position
        )
        response = await self._peer.unary(self._stub.ListImages, request)
        return [image_from_record(image) for image in response.images], response.more

    async def delete_image(self, actor_id: str, image_id: str) -> Image:
        """Delete an image of the actor's, or any as an admin; NotFound otherwise."""
        request = dataaccess_pb2.DeleteImageRequest(actor_id=actor_id, image_id=image_id)
        response = await self._peer.unary(self._stub.DeleteImage, request)
        return image_from_record(response.image)

    async def add_renditions(
        self, image_id: str, renditions: Sequence[StoredRendition], placeholder: str
    ) -> Image:
        """Add the renditions an image lacks."""
        request = dataaccess_pb2.AddRenditionsRequest(
            image_id=image_id,
            renditions=_rendition_records(renditions),
            placeholder=placeholder,
        )
        response = await self._peer.unary(self._stub.AddRenditions, request)
        return image_from_record(response.image)

    async def usage(self, account_id: str) -> int:
        """Return the bytes an account's images take."""
        request = dataaccess_pb2.GetMediaUsageRequest(account_id=account_id)
        response = await self._peer.unary(self._stub.GetMediaUsage, request)
        return response.used_bytes

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

    async def queue_unreferenced(self, keys: Sequence[str]) -> list[str]:
        """Queue those of keys that no image names; return them."""
        request = dataaccess_pb2.QueueUnreferencedBlobsRequest(sha256=keys)
        response = await self._peer.unary(self._stub.QueueUnreferencedBlobs, request)
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
        placeholder=record.placeholder,
        original_kept=record.original_kept,
        stored_bytes=record.stored_bytes,
        position=record.position,
        renditions=tuple(
            StoredRendition(
                variant=r.variant,
                format=r.format,
                content_type=r.content_type,
                sha256=r.sha256,
                size_bytes=r.size_bytes,
                width=r.width,
                height=r.height,
            )
            for r in record.renditions
        ),
    )


def _rendition_records(
    renditions: Sequence[StoredRendition],
) -> list[dataaccess_pb2.RenditionRecord]:
    """The protobuf records of renditions."""
    return [
        dataaccess_pb2.RenditionRecord(
            variant=r.variant,
            format=r.format,
            content_type=r.content_type,
            sha256=r.sha256,
            size_bytes=r.size_bytes,
            width=r.width,
            height=r.height,
        )
        for r in renditions
    ]
