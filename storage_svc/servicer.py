"""StorageService over gRPC: authenticate, translate protobuf to domain calls and back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.api import httpbody_pb2

from meshgram.storage.v1 import storage_pb2, storage_pb2_grpc
from meshkit.access_tokens import AccessTokenVerifier, require_may_change
from meshkit.errors import FieldViolation, OutOfRange, invalid
from meshkit.reasons import Reason
from meshkit.timestamps import to_timestamp
from storage_svc.delivery import RangeNotSatisfiable
from storage_svc.images import DownloadRequest, ImageService, ImageView, UploadProgress
from storage_svc.uploads import UploadSession

Context = grpc.aio.ServicerContext[Any, Any]
Metadata = tuple[tuple[str, str | bytes], ...]

# The HTTP status a REST client gets instead of 200 (envoy/lua/answers.lua): 206, 304 or 416.
STATUS_HEADER = "meshgram-status"


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
        """Receive the chunks of an upload, then store and describe the image."""
        # Authenticate before reading a single chunk: strangers cannot make us take in bytes.
        owner = await self._uploader(context)
        view = await self._images.upload(owner, _bodies(request_iterator))
        return storage_pb2.UploadImageResponse(image=image_message(view))

    async def CreateUpload(  # noqa: N802
        self, request: storage_pb2.CreateUploadRequest, context: Context
    ) -> storage_pb2.CreateUploadResponse:
        """Open a resumable upload."""
        owner = await self._uploader(context)
        session = await self._images.create_upload(owner, request.size_bytes)
        return storage_pb2.CreateUploadResponse(upload=upload_message(session))

    async def GetUpload(  # noqa: N802
        self, request: storage_pb2.GetUploadRequest, context: Context
    ) -> storage_pb2.GetUploadResponse:
        """Return a resumable upload with its offset."""
        owner = await self._uploader(context)
        session = await self._images.get_upload(owner, request.upload_id)
        return storage_pb2.GetUploadResponse(upload=upload_message(session))

    async def AppendUpload(  # noqa: N802
        self, request_iterator: AsyncIterator[storage_pb2.AppendUploadRequest], context: Context
    ) -> storage_pb2.AppendUploadResponse:
        """Append the chunks of this call at the offset its first message names."""
        owner = await self._uploader(context)
        first = await anext(aiter(request_iterator), storage_pb2.AppendUploadRequest())
        if not first.HasField("offset"):
            # An offset of 0 must be said: appending "wherever" is how bytes get duplicated.
            raise invalid([FieldViolation("offset", "is required: the session's current offset")])
        progress = await self._images.append_upload(
            owner, first.upload_id, first.offset, _appended(first, request_iterator)
        )
        return append_message(progress)

    async def CancelUpload(  # noqa: N802
        self, request: storage_pb2.CancelUploadRequest, context: Context
    ) -> storage_pb2.CancelUploadResponse:
        """Cancel a resumable upload."""
        owner = await self._uploader(context)
        await self._images.cancel_upload(owner, request.upload_id)
        return storage_pb2.CancelUploadResponse()

    async def GetImage(  # noqa: N802
        self, request: storage_pb2.GetImageRequest, context: Context
    ) -> storage_pb2.GetImageResponse:
        """Return an image's metadata as the caller (or a signed-out visitor) sees it."""
        viewer = await self._viewer(context)
        view = await self._images.describe(request.image_id, viewer)
        return storage_pb2.GetImageResponse(image=image_message(view))

    async def ListMyImages(  # noqa: N802
        self, request: storage_pb2.ListMyImagesRequest, context: Context
    ) -> storage_pb2.ListMyImagesResponse:
        """Return a page of the caller's images."""
        principal = await self._verifier.authenticate(context.invocation_metadata())
        page = await self._images.list_mine(
            principal.account_id, request.page_size, request.page_token
        )
        return storage_pb2.ListMyImagesResponse(
            images=[image_message(view) for view in page.images],
            next_page_token=page.next_page_token,
            used_bytes=page.used_bytes,
            quota_bytes=page.quota_bytes,
        )

    async def DeleteImage(  # noqa: N802
        self, request: storage_pb2.DeleteImageRequest, context: Context
    ) -> storage_pb2.DeleteImageResponse:
        """Delete an image of the caller's (or any, for an admin)."""
        principal = await self._verifier.authenticate(context.invocation_metadata())
        await self._images.delete(principal.account_id, request.image_id)
        return storage_pb2.DeleteImageResponse()

    async def DownloadImage(  # noqa: N802
        self, request: storage_pb2.DownloadImageRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """Stream a rendition's bytes (or a range of them); every chunk names the content type
        (Envoy's REST header). A current copy gets no bytes and status 304 instead."""
        metadata: Metadata = tuple(context.invocation_metadata() or ())
        viewer = await self._viewer(context)
        wanted = DownloadRequest(
            image_id=request.image_id,
            variant=request.variant,
            format=request.format,
            accept=_header(metadata, "accept"),
            expires=request.expires,
            key_id=request.key_id,
            signature=request.signature,
            range=_header(metadata, "range"),
            if_range=_header(metadata, "if-range"),
            if_none_match=_header(metadata, "if-none-match"),
        )
        try:
            delivery = await self._images.download(wanted, viewer)
        except RangeNotSatisfiable as error:
            await context.send_initial_metadata(
                ((STATUS_HEADER, "416"), ("content-range", f"bytes */{error.size}"))
            )
            raise OutOfRange(
                message=f"the requested range is outside the file of {error.size} bytes",
                reason=Reason.RANGE_NOT_SATISFIABLE,
            ) from None
        headers = [
            ("etag", delivery.entity_tag),
            ("cache-control", delivery.cache_control),
            ("accept-ranges", "bytes"),
        ]
        if delivery.vary_accept:
            headers.append(("vary", "accept"))
        if delivery.chunks is None:
            await context.send_initial_metadata((*headers, (STATUS_HEADER, "304")))
            return
        if delivery.byte_range is not None:
            headers.append(("content-range", delivery.byte_range.content_range))
            headers.append((STATUS_HEADER, "206"))
        await context.send_initial_metadata(headers)
        async for chunk in delivery.chunks:
            yield httpbody_pb2.HttpBody(content_type=delivery.content_type, data=chunk)

    async def SetAvatar(  # noqa: N802
        self, request: storage_pb2.SetAvatarRequest, context: Context
    ) -> storage_pb2.SetAvatarResponse:
        """Make one of the caller's images their avatar."""
        owner = await self._uploader(context)
        view = await self._images.set_avatar(owner, request.image_id)
        return storage_pb2.SetAvatarResponse(image=image_message(view))

    async def _uploader(self, context: Context) -> str:
        """The account of a call that adds or changes media (its email must allow it)."""
        principal = await self._verifier.authenticate(context.invocation_metadata())
        require_may_change(principal, self._unverified_may)
        return principal.account_id

    async def _viewer(self, context: Context) -> str:
        """The account of a call that reads media; "" when it carries no token."""
        principal = await self._verifier.authenticate_if_present(context.invocation_metadata())
        return principal.account_id if principal is not None else ""


async def _bodies(
    requests: AsyncIterator[storage_pb2.UploadImageRequest],
) -> AsyncIterator[bytes]:
    """The bytes of each chunk of a one-shot upload."""
    async for request in requests:
        yield request.body.data


async def _appended(
    first: storage_pb2.AppendUploadRequest,
    rest: AsyncIterator[storage_pb2.AppendUploadRequest],
) -> AsyncIterator[bytes]:
    """The bytes of an append call, its first message's included."""
    if first.body.data:
        yield first.body.data
    async for request in rest:
        # REST repeats the path and query fields in every message; anything else is a mistake.
        if request.upload_id and request.upload_id != first.upload_id:
            raise invalid([FieldViolation("upload_id", "must be the first message's")])
        if request.HasField("offset") and request.offset != first.offset:
            raise invalid([FieldViolation("offset", "must be the first message's")])
        yield request.body.data


def _header(metadata: Iterable[tuple[str, str | bytes]], name: str) -> str:
    """The first value of a text header, or ""."""
    return next((v for k, v in metadata if k == name and isinstance(v, str)), "")


def upload_message(session: UploadSession) -> storage_pb2.Upload:
    """Build the public Upload message from a session."""
    return storage_pb2.Upload(
        upload_id=session.id,
        size_bytes=session.size_bytes,
        offset=session.offset,
        expire_time=to_timestamp(session.expire_time),
    )


def append_message(progress: UploadProgress) -> storage_pb2.AppendUploadResponse:
    """Build the answer to an append: the session, and the image once complete."""
    response = storage_pb2.AppendUploadResponse(upload=upload_message(progress.session))
    if progress.image is not None:
        response.image.CopyFrom(image_message(progress.image))
    return response


def image_message(view: ImageView) -> storage_pb2.Image:
    """Build the public Image message of an image as one viewer sees it."""
    image = view.image
    message = storage_pb2.Image(
        id=image.id,
        owner_id=image.owner_id,
        content_type=image.content_type,
        size_bytes=image.size_bytes,
        width=image.width,
        height=image.height,
        # The uploaded file's digest would let others check a guess of its (unstripped) bytes.
        sha256=image.sha256 if view.for_owner else "",
        placeholder=image.placeholder,
        original_kept=image.original_kept,
        stored_bytes=image.stored_bytes if view.for_owner else 0,
    )
    if image.create_time is not None:
        message.create_time.CopyFrom(to_timestamp(image.create_time))
    for variant in view.variants:
        entry = message.variants.add(
            name=variant.name, width=variant.width, height=variant.height, url=variant.url
        )
        if variant.url_expires is not None:
            entry.url_expire_time.CopyFrom(
                to_timestamp(datetime.fromtimestamp(variant.url_expires, UTC))
            )
        for rendition in variant.renditions:
            entry.renditions.add(
                format=rendition.format,
                content_type=rendition.content_type,
                size_bytes=rendition.size_bytes,
                sha256=rendition.sha256,
            )
    return message
