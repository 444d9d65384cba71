"""StorageService over gRPC: authenticate, translate protobuf to domain calls and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2

from meshgram.storage.v1 import storage_pb2, storage_pb2_grpc
from meshkit.access_tokens import AccessTokenVerifier, require_may_change
from meshkit.timestamps import to_timestamp
from storage_svc.images import Image, ImageService

Context = grpc.aio.ServicerContext[Any, Any]

# Private: images are only served to signed-in accounts, so shared caches must not keep them.
IMMUTABLE_CACHE_CONTROL = "private, max-age=31536000, immutable"
# Sent instead of the bytes when the client's If-None-Match names the image (envoy/lua).
NOT_MODIFIED_HEADER = "meshgram-not-modified"


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    """Implements meshgram.storage.v1.StorageService (method names are the proto's, hence N802)."""

    def __init__(
        self,
        images: ImageService,
        verifier: AccessTokenVerifier,
        *,
        unverified_email_may: str = "edit_profile",
    ) -> None:
        self._images = images
        self._verifier = verifier
        self._unverified_may = unverified_email_may

    async def UploadImage(  # noqa: N802
        self, request_iterator: AsyncIterator[storage_pb2.UploadImageRequest], context: Context
    ) -> storage_pb2.UploadImageResponse:
        """Collect the chunks of an upload, then store and describe the image."""
        # Authenticate before reading a single chunk: strangers cannot make us buffer bytes.
        principal = await self._verifier.authenticate(context.invocation_metadata())
        require_may_change(principal, self._unverified_may)
        upload = self._images.new_upload()
        async for request in request_iterator:
            upload.add(request.body.data)
        image = await self._images.store(principal.account_id, upload)
        return storage_pb2.UploadImageResponse(image=image_message(image))

    async def GetImage(  # noqa: N802
        self, request: storage_pb2.GetImageRequest, context: Context
    ) -> storage_pb2.GetImageResponse:
        """Return an image's metadata."""
        await self._verifier.authenticate(context.invocation_metadata())
        image = await self._images.describe(request.image_id)
        return storage_pb2.GetImageResponse(image=image_message(image))

    async def DownloadImage(  # noqa: N802
        self, request: storage_pb2.DownloadImageRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """Stream an image's bytes; every chunk names the content type (Envoy's REST header).
        A matching If-None-Match gets no bytes and the not-modified header instead."""
        metadata = context.invocation_metadata() or ()
        await self._verifier.authenticate(metadata)
        if_none_match = next(
            (value for key, value in metadata if key == "if-none-match" and isinstance(value, str)),
            "",
        )
        image, chunks = await self._images.download(request.image_id, if_none_match)
        # An image's bytes never change under its id: caches may keep them (REST sees these as
        # HTTP headers).
        headers = [("etag", image.entity_tag), ("cache-control", IMMUTABLE_CACHE_CONTROL)]
        if chunks is None:
            # The edge turns this into 304 Not Modified for REST clients.
            await context.send_initial_metadata((*headers, (NOT_MODIFIED_HEADER, "1")))
            return
        await context.send_initial_metadata(headers)
        async for chunk in chunks:
            yield httpbody_pb2.HttpBody(content_type=image.content_type, data=chunk)

    async def SetAvatar(  # noqa: N802
        self, request: storage_pb2.SetAvatarRequest, context: Context
    ) -> storage_pb2.SetAvatarResponse:
        """Make one of the caller's images their avatar."""
        principal = await self._verifier.authenticate(context.invocation_metadata())
        require_may_change(principal, self._unverified_may)
        image = await self._images.set_avatar(principal.account_id, request.image_id)
        return storage_pb2.SetAvatarResponse(image=image_message(image))


def image_message(image: Image) -> storage_pb2.Image:
    """Build the public Image message from a domain image."""
    return storage_pb2.Image(
        id=image.id,
        owner_id=image.owner_id,
        content_type=image.content_type,
        size_bytes=image.size_bytes,
        width=image.width,
        height=image.height,
        sha256=image.sha256,
        create_time=to_timestamp(image.create_time),
    )
