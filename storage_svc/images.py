"""Image rules: bounded uploads, type decided from the bytes, storage, metadata and avatars."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from PIL import Image as PillowImage

from meshkit.errors import DomainError, FieldViolation, InvalidArgument, NotFound
from meshkit.reasons import Reason
from storage_svc.blobs import BlobStore

DOWNLOAD_CHUNK_BYTES = 64 * 1024
# Decoding a small file can take hundreds of MB (a 40 MP canvas is ~160 MB of pixels), and the
# default thread pool would run dozens at once: memory, not CPU, is what this bounds.
MAX_CONCURRENT_DECODES = 2

# Pillow format name -> MIME type. Cameras write multi-picture JPEGs that Pillow names "MPO";
# every viewer shows them as the JPEG they start with.
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}
# Only these decoders ever see uploaded bytes: a smaller attack surface than all of Pillow's.
_DECODERS = ("JPEG", "PNG", "GIF", "WEBP")

_UNSUPPORTED_HINT = "must be a complete JPEG, PNG, GIF or WebP image"


@dataclass(frozen=True)
class ImageFacts:
    """What the bytes of an image say about it."""

    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class NewImage:
    """Metadata of a stored blob, ready to be recorded."""

    owner_id: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class Image(NewImage):
    """A recorded image: its metadata plus the id and creation time the store gave it."""

    id: str
    create_time: datetime

    @property
    def entity_tag(self) -> str:
        """The HTTP ETag of the image's bytes: a strong tag, their SHA-256 (they never change)."""
        return f'"{self.sha256}"'


def none_match(if_none_match: str, entity_tag: str) -> bool:
    """Whether an If-None-Match header value names entity_tag (RFC 9110 13.1.2: "*" or any
    listed tag, compared weakly), i.e. the client's copy is current."""
    if if_none_match.strip() == "*":
        return True
    wanted = entity_tag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


class MediaStore(Protocol):
    """Where image metadata and avatar choices live (data_access, or a fake in unit tests)."""

    async def create_image(self, image: NewImage) -> Image:
        """Record an image and return it with its id and creation time."""
        ...

    async def get_image(self, image_id: str) -> Image:
        """Return an image's metadata or raise NotFound."""
        ...

    async def set_avatar(self, account_id: str, image_id: str) -> Image:
        """Make an account's own image its avatar; NotFound for anyone else's image."""
        ...


class Upload:
    """The bytes of one upload so far, never more than the limit."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        """Bytes received so far."""
        return self._size

    def add(self, chunk: bytes) -> None:
        """Append a chunk; raise InvalidArgument IMAGE_TOO_LARGE as soon as the limit is passed."""
        if self._size + len(chunk) > self._max_bytes:
            # Checked before keeping the chunk, so memory never grows past the limit.
            raise _rejected(Reason.IMAGE_TOO_LARGE, f"must be at most {self._max_bytes} bytes")
        self._parts.append(chunk)
        self._size += len(chunk)

    def data(self) -> bytes:
        """Return the whole upload as one bytes object."""
        return b"".join(self._parts)


def sniff(data: bytes, *, max_pixels: int) -> ImageFacts:
    """Decide an image's type and size from its bytes, or raise InvalidArgument on `body`.

    Blocking and CPU-bound: call it from a worker thread.
    """
    if not data:
        raise _rejected(Reason.IMAGE_TYPE_UNSUPPORTED, "is empty; " + _UNSUPPORTED_HINT)
    try:
        return _decode(data, max_pixels)
    except DomainError:
        raise
    except (PillowImage.DecompressionBombError, PillowImage.DecompressionBombWarning):
        # Pillow's own guard (warnings are errors in this process) caught a huge canvas.
        raise _too_many_pixels(max_pixels) from None
    except Exception:
        # Decoders fed hostile bytes fail in many ways (OSError, SyntaxError, ValueError,
        # struct.error, EOFError...): each means the upload is not an image we accept.
        raise _rejected(Reason.IMAGE_TYPE_UNSUPPORTED, _UNSUPPORTED_HINT) from None


def canonical_image_id(raw: str) -> str:
    """Return an image id in canonical UUID form; InvalidArgument when it is missing, NotFound
    for anything else that is not a UUID (it names no image)."""
    if not raw:
        raise InvalidArgument(
            message="invalid request: image_id is required",
            violations=[FieldViolation("image_id", "is required")],
        )
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise _image_not_found() from None


class ImageService:
    """The use cases of storage_svc, independent of gRPC."""

    def __init__(
        self,
        media: MediaStore,
        blobs: BlobStore,
        *,
        max_bytes: int,
        max_pixels: int,
        max_concurrent_decodes: int = MAX_CONCURRENT_DECODES,
    ) -> None:
        self._media = media
        self._blobs = blobs
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._decodes = asyncio.Semaphore(max_concurrent_decodes)

    def new_upload(self) -> Upload:
        """Start collecting the chunks of one upload."""
        return Upload(self._max_bytes)

    async def store(self, owner_id: str, upload: Upload) -> Image:
        """Check the uploaded bytes, keep them in the blob store and record their metadata."""
        data = upload.data()
        # Further uploads wait here holding only their bytes (at most max_bytes each).
        async with self._decodes:
            facts, digest = await asyncio.to_thread(_examine, data, self._max_pixels)
        # Blob first: a recorded image must never point at missing bytes.
        await self._blobs.put(digest, data)
        image = await self._media.create_image(
            NewImage(
                owner_id=owner_id,
                content_type=facts.content_type,
                size_bytes=len(data),
                width=facts.width,
                height=facts.height,
                sha256=digest,
            )
        )
        # The collector may have set these same bytes aside between put and the record (they
        # were another, deleted, account's): once recorded, they must be there (collector.py).
        if not await self._blobs.exists(digest):
            await self._blobs.put(digest, data)
        return image

    async def describe(self, image_id: str) -> Image:
        """Return any image's metadata (every authenticated account may read every image)."""
        return await self._media.get_image(canonical_image_id(image_id))

    async def download(
        self, image_id: str, if_none_match: str = ""
    ) -> tuple[Image, AsyncIterator[bytes] | None]:
        """Return an image's metadata and an iterator over its bytes in download chunks, or
        None instead of the iterator when if_none_match says the client has them already."""
        image = await self.describe(image_id)
        if if_none_match and none_match(if_none_match, image.entity_tag):
            return image, None
        return image, self._blobs.chunks(image.sha256, DOWNLOAD_CHUNK_BYTES)

    async def set_avatar(self, account_id: str, image_id: str) -> Image:
        """Make one of the account's own images its avatar."""
        return await self._media.set_avatar(account_id, canonical_image_id(image_id))


def _examine(data: bytes, max_pixels: int) -> tuple[ImageFacts, str]:
    """Sniff and hash in one worker-thread hop."""
    return sniff(data, max_pixels=max_pixels), hashlib.sha256(data).hexdigest()


def _decode(data: bytes, max_pixels: int) -> ImageFacts:
    """Verify the structure, check the canvas size, then decode to catch truncated data."""
    with PillowImage.open(io.BytesIO(data), formats=_DECODERS) as probe:
        probe.verify()
    # verify() leaves the image unusable; a fresh one reads the size and pixel data.
    with PillowImage.open(io.BytesIO(data), formats=_DECODERS) as image:
        content_type = CONTENT_TYPES.get(image.format or "")
        if content_type is None:
            raise _rejected(Reason.IMAGE_TYPE_UNSUPPORTED, _UNSUPPORTED_HINT)
        width, height = image.size
        if width * height > max_pixels:
            raise _too_many_pixels(max_pixels)
        if image.format in ("JPEG", "MPO"):
            # verify() skips JPEG scan data; decoding at 1/8 scale still reads all of it
            # (truncation shows) at a fraction of the memory and time.
            image.draft(None, (1, 1))
        image.load()
    return ImageFacts(content_type=content_type, width=width, height=height)


def _too_many_pixels(max_pixels: int) -> InvalidArgument:
    """The error for images whose canvas exceeds the pixel limit."""
    return _rejected(Reason.IMAGE_TOO_LARGE, f"must have at most {max_pixels} pixels")


def _rejected(reason: Reason, description: str) -> InvalidArgument:
    """An INVALID_ARGUMENT about the uploaded bytes (field `body`)."""
    return InvalidArgument(
        message=f"invalid image: body {description}",
        reason=reason,
        violations=[FieldViolation("body", description)],
    )


def _image_not_found() -> NotFound:
    """The one answer for unknown, malformed and other accounts' image ids."""
    return NotFound(message="image not found", reason=Reason.IMAGE_NOT_FOUND)
