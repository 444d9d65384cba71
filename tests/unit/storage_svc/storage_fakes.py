"""In-memory stand-ins for data_access's media store, and an ImageService wired to them."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from meshkit.errors import NotFound
from meshkit.reasons import Reason
from storage_svc.blobs import BlobStore, LocalBlobStore
from storage_svc.images import (
    Image,
    ImageAccess,
    ImageService,
    NewImage,
    StoredRendition,
    quota_exceeded,
)
from storage_svc.media_urls import MediaUrlSigner
from storage_svc.uploads import Spool, UploadSessions
from storage_svc.visibility import Standing

KEYS = {"k1": b"a-media-url-key-of-more-than-32-characters"}
MAX_PIXELS = 40_000_000


@dataclass
class Owner:
    """How an owner's account stands, and who relates to it how."""

    private: bool = False
    hidden: bool = False
    followers: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)


class FakeMedia:
    """MediaStore in memory: images, usage within a quota, admins, owners' standing."""

    def __init__(self) -> None:
        self.images: dict[str, Image] = {}
        self.owners: dict[str, Owner] = {}
        self.admins: set[str] = set()
        self.usage_of: dict[str, int] = {}
        self.added_renditions = 0
        self.access_reads = 0
        self._positions = itertools.count(1)

    def owner(self, owner_id: str) -> Owner:
        """The standing of an owner (public and active until changed)."""
        return self.owners.setdefault(owner_id, Owner())

    async def create_image(self, image: NewImage, *, quota_bytes: int) -> Image:
        """Record an image within its owner's quota."""
        stored = sum(r.size_bytes for r in image.renditions) + (
            image.size_bytes if image.original_kept else 0
        )
        used = self.usage_of.get(image.owner_id, 0)
        if quota_bytes and used + stored > quota_bytes:
            raise quota_exceeded(quota_bytes)
        self.usage_of[image.owner_id] = used + stored
        recorded = Image(
            **asdict(image) | {"renditions": image.renditions},
            id=str(uuid.uuid4()),
            create_time=datetime.now(UTC),
            stored_bytes=stored,
            position=next(self._positions),
        )
        self.images[recorded.id] = recorded
        return recorded

    async def get_access(self, image_id: str, viewer_id: str) -> ImageAccess:
        """The image and its owner's standing towards viewer_id."""
        self.access_reads += 1
        image = self._image(image_id)
        owner = self.owner(image.owner_id)
        return ImageAccess(
            image=image,
            standing=Standing(
                owner_id=image.owner_id,
                owner_private=owner.private,
                owner_hidden=owner.hidden,
                viewer_follows=viewer_id in owner.followers,
                blocked=viewer_id in owner.blocked,
                viewer_admin=viewer_id in self.admins,
            ),
        )

    async def list_images(
        self, owner_id: str, *, page_size: int, before_position: int
    ) -> tuple[list[Image], bool]:
        """A page of the owner's images, newest first."""
        mine = sorted(
            (
                i
                for i in self.images.values()
                if i.owner_id == owner_id and (not before_position or i.position < before_position)
            ),
            key=lambda i: -i.position,
        )
        return mine[:page_size], len(mine) > page_size

    async def delete_image(self, actor_id: str, image_id: str) -> Image:
        """Delete an image of the actor's, or any for an admin."""
        image = self._image(image_id)
        if image.owner_id != actor_id and actor_id not in self.admins:
            raise NotFound(message="image not found", reason=Reason.IMAGE_NOT_FOUND)
        del self.images[image_id]
        self.usage_of[image.owner_id] -= image.stored_bytes
        return image

    async def add_renditions(
        self, image_id: str, renditions: Sequence[StoredRendition], placeholder: str
    ) -> Image:
        """Give an image its renditions."""
        self.added_renditions += 1
        image = replace(
            self._image(image_id), renditions=tuple(renditions), placeholder=placeholder
        )
        self.images[image_id] = image
        return image

    async def usage(self, account_id: str) -> int:
        """Bytes the account's images take."""
        return self.usage_of.get(account_id, 0)

    async def set_avatar(self, account_id: str, image_id: str) -> Image:
        """The image, when it is the account's."""
        image = self._image(image_id)
        if image.owner_id != account_id:
            raise NotFound(message="image not found", reason=Reason.IMAGE_NOT_FOUND)
        return image

    def _image(self, image_id: str) -> Image:
        """A recorded image or NotFound."""
        if image_id not in self.images:
            raise NotFound(message="image not found", reason=Reason.IMAGE_NOT_FOUND)
        return self.images[image_id]


def image_service(
    root: Path,
    media: FakeMedia | None = None,
    *,
    blobs: BlobStore | None = None,
    max_bytes: int = 4 << 20,
    keep_originals: bool = False,
    quota_bytes: int = 0,
    max_concurrent_processing: int = 2,
    clock_seconds: float | None = None,
    access_cache_seconds: float = 0.0,
) -> ImageService:
    """An ImageService on folders under root and the given (or a new) fake media store."""
    clock = (lambda: clock_seconds) if clock_seconds is not None else None
    signer = (
        MediaUrlSigner(KEYS, ttl_seconds=3600, clock=clock)
        if clock
        else MediaUrlSigner(KEYS, ttl_seconds=3600)
    )
    return ImageService(
        media if media is not None else FakeMedia(),
        blobs if blobs is not None else LocalBlobStore(root / "blobs"),
        signer,
        Spool(root / "spool"),
        UploadSessions(root / "spool", max_bytes=max_bytes, ttl_seconds=60, max_open_per_owner=3),
        scratch_dir=root / "spool",
        max_bytes=max_bytes,
        max_pixels=MAX_PIXELS,
        keep_originals=keep_originals,
        quota_bytes=quota_bytes,
        max_concurrent_processing=max_concurrent_processing,
        access_cache_seconds=access_cache_seconds,
    )


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """data as an upload's chunks."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(chunks: AsyncIterator[bytes] | None) -> bytes:
    """Every byte of a delivery."""
    assert chunks is not None
    return b"".join([chunk async for chunk in chunks])
