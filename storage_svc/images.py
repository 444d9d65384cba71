"""The use cases of storage_svc, independent of gRPC: uploads (one-shot and resumable) turned
into safe renditions, who sees what, listing, deletion, quotas, delivery and avatars."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cachetools import TTLCache

from meshkit.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted, invalid
from meshkit.page_tokens import decode_page_token, encode_page_token, page_size, position_part
from meshkit.reasons import Reason
from storage_svc.blobs import BlobMissing, BlobStore
from storage_svc.delivery import (
    ByteRange,
    choose_format,
    none_match,
    requested_range,
)
from storage_svc.media_urls import MediaUrlSigner, media_path
from storage_svc.processing import VARIANTS, ProcessedImage, process
from storage_svc.uploads import Spool, SpooledFile, UploadSession, UploadSessions
from storage_svc.visibility import Sight, Standing, sight_of

DOWNLOAD_CHUNK_BYTES = 64 * 1024
# Decoding a photo takes tens of MB and a core: memory and the two cores bound how many run.
MAX_CONCURRENT_PROCESSING = 2
ORIGINAL = "original"
DEFAULT_VARIANT = "w1080"
LIST_DEFAULT = 20
LIST_MAX = 100
ACCESS_CACHE_ENTRIES = 10_000
_VARIANT_NAMES = frozenset(spec.name for spec in VARIANTS)
SHARED_CACHE_SECONDS = 60


def public_cache_control(shared_cache_seconds: int = SHARED_CACHE_SECONDS) -> str:
    """Cache-Control of a public rendition: a browser keeps it a year (its bytes never change
    under its URL), a shared cache (the edge, a CDN) asks again after shared_cache_seconds, so an
    image that stops being public drops out of shared caches within that time."""
    return f"public, max-age=31536000, s-maxage={shared_cache_seconds}, immutable"


_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredRendition:
    """One served file of an image as recorded: a variant in one format."""

    variant: str
    format: str
    content_type: str
    sha256: str
    size_bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class NewImage:
    """Metadata of a processed upload, ready to be recorded."""

    owner_id: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str
    placeholder: str = ""
    original_kept: bool = False
    renditions: tuple[StoredRendition, ...] = ()


@dataclass(frozen=True)
class Image(NewImage):
    """A recorded image: its metadata plus what the store gave it."""

    id: str = ""
    create_time: datetime | None = None
    stored_bytes: int = 0
    position: int = 0


@dataclass(frozen=True)
class ImageAccess:
    """An image and the standing of its owner towards one viewer."""

    image: Image
    standing: Standing


class MediaStore(Protocol):
    """Where image records live (data_access, or a fake in unit tests)."""

    async def create_image(self, image: NewImage, *, quota_bytes: int) -> Image:
        """Record an image within its owner's quota; ResourceExhausted past it."""
        ...

    async def get_access(self, image_id: str, viewer_id: str) -> ImageAccess:
        """Return an image and its owner's standing towards viewer_id; NotFound if none."""
        ...

    async def list_images(
        self, owner_id: str, *, page_size: int, before_position: int
    ) -> tuple[list[Image], bool]:
        """Return a page of an owner's images, newest first, and whether more remain."""
        ...

    async def delete_image(self, actor_id: str, image_id: str) -> Image:
        """Delete an image of the actor's, or any as an admin; NotFound otherwise."""
        ...

    async def add_renditions(
        self, image_id: str, renditions: Sequence[StoredRendition], placeholder: str
    ) -> Image:
        """Add the renditions an image lacks."""
        ...

    async def usage(self, account_id: str) -> int:
        """Return the bytes an account's images take."""
        ...

    async def set_avatar(self, account_id: str, image_id: str) -> Image:
        """Make an account's own image its avatar; NotFound for anyone else's image."""
        ...


@dataclass(frozen=True)
class VariantView:
    """One size of an image as a viewer may fetch it."""

    name: str
    width: int
    height: int
    url: str
    url_expires: int | None
    renditions: tuple[StoredRendition, ...]


@dataclass(frozen=True)
class ImageView:
    """An image as one viewer sees it: the owner sees usage and the original."""

    image: Image
    variants: tuple[VariantView, ...]
    for_owner: bool


@dataclass(frozen=True)
class ImagePage:
    """A page of the owner's images, the token of the next one, and the owner's usage."""

    images: list[ImageView]
    next_page_token: str
    used_bytes: int
    quota_bytes: int


@dataclass(frozen=True)
class DownloadRequest:
    """What a client asks of a media file: which, in what format, under which conditions."""

    image_id: str
    variant: str = ""
    format: str = ""
    accept: str = ""
    expires: int = 0
    key_id: str = ""
    signature: str = ""
    range: str = ""
    if_range: str = ""
    if_none_match: str = ""


@dataclass(frozen=True)
class Delivery:
    """The answer to a download: headers, and the bytes unless not_modified."""

    content_type: str
    entity_tag: str
    cache_control: str
    vary_accept: bool
    byte_range: ByteRange | None
    size: int
    chunks: AsyncIterator[bytes] | None

    @property
    def not_modified(self) -> bool:
        """Whether the client's copy is current (HTTP 304)."""
        return self.chunks is None


@dataclass(frozen=True)
class UploadProgress:
    """A resumable upload after an append, and the image once it is complete."""

    session: UploadSession
    image: ImageView | None


@dataclass
class ImageFigures:
    """Counters since start, for the metrics endpoint."""

    processed: int = 0
    refused: int = 0
    processing_seconds: float = 0.0
    access_hits: int = 0
    access_misses: int = 0


class ImageService:
    """Images from upload to delivery."""

    def __init__(
        self,
        media: MediaStore,
        blobs: BlobStore,
        signer: MediaUrlSigner,
        spool: Spool,
        sessions: UploadSessions,
        *,
        scratch_dir: Path,
        max_bytes: int,
        max_pixels: int,
        keep_originals: bool = False,
        quota_bytes: int = 0,
        max_concurrent_processing: int = MAX_CONCURRENT_PROCESSING,
        access_cache_seconds: float = 0.0,
        shared_cache_seconds: int = SHARED_CACHE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._media = media
        self._public_cache_control = public_cache_control(shared_cache_seconds)
        self._blobs = blobs
        self._signer = signer
        self._spool = spool
        self._sessions = sessions
        self._scratch = scratch_dir
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._keep_originals = keep_originals
        self._quota = quota_bytes
        self._processing = asyncio.Semaphore(max_concurrent_processing)
        # Threads of their own: the few threads that ever hold decoded pictures keep the memory
        # they use (and the allocator's arenas) few, whatever else runs in the default pool.
        self._workers = ThreadPoolExecutor(
            max_workers=max_concurrent_processing, thread_name_prefix="image-processing"
        )
        self._clock = clock
        self.figures = ImageFigures()
        # Who may see an image, as read lately: deliveries of a popular image then cost no round
        # trip; a change of privacy, follows or blocks shows within the TTL.
        self._recent: TTLCache[tuple[str, str], ImageAccess] | dict[tuple[str, str], ImageAccess]
        self._recent = (
            TTLCache(maxsize=ACCESS_CACHE_ENTRIES, ttl=access_cache_seconds)
            if access_cache_seconds > 0
            else _NoCache()
        )

    async def upload(self, owner_id: str, chunks: AsyncIterator[bytes]) -> ImageView:
        """Receive a one-shot upload (on disk, never whole in memory), then store it."""
        await self._check_quota(owner_id)
        async with await self._spool.receive(chunks, max_bytes=self._max_bytes) as spooled:
            return await self._store(owner_id, spooled)

    async def create_upload(self, owner_id: str, size_bytes: int) -> UploadSession:
        """Open a resumable upload of size_bytes."""
        await self._check_quota(owner_id)
        return await self._sessions.create(owner_id, size_bytes)

    async def get_upload(self, owner_id: str, upload_id: str) -> UploadSession:
        """Return one of the owner's resumable uploads."""
        return await self._sessions.get(owner_id, upload_id)

    async def cancel_upload(self, owner_id: str, upload_id: str) -> None:
        """Cancel one of the owner's resumable uploads and delete its bytes."""
        await self._sessions.cancel(owner_id, upload_id)

    async def append_upload(
        self, owner_id: str, upload_id: str, offset: int, chunks: AsyncIterator[bytes]
    ) -> UploadProgress:
        """Append bytes at offset; once the last byte is in, store the image (the session ends
        then, whether the file turns out to be an acceptable image or not)."""
        session = await self._sessions.append(owner_id, upload_id, offset, chunks)
        if not session.complete:
            return UploadProgress(session=session, image=None)
        async with await self._sessions.finish(owner_id, upload_id) as spooled:
            return UploadProgress(session=session, image=await self._store(owner_id, spooled))

    async def describe(self, image_id: str, viewer_id: str) -> ImageView:
        """Return an image as viewer_id ("" when signed out) sees it; NotFound when they may
        not see it at all, exactly as when it does not exist."""
        access = await self._access(canonical_image_id(image_id), viewer_id)
        sight = sight_of(access.standing, viewer_id)
        if sight is Sight.NONE:
            raise image_not_found()
        image = await self._with_renditions(access.image)
        return self._view(image, access.standing, sight)

    async def list_mine(self, owner_id: str, size: int, token: str) -> ImagePage:
        """Return a page of the owner's images, newest first."""
        limit = page_size(size, default=LIST_DEFAULT, maximum=LIST_MAX)
        scope = f"images:{owner_id}"
        before = position_part(decode_page_token(token, scope), 0) if token else 0
        images, more = await self._media.list_images(
            owner_id, page_size=limit, before_position=before
        )
        following = encode_page_token(scope, images[-1].position) if more and images else ""
        own = await self._own_standing(owner_id, images[0].id) if images else None
        return ImagePage(
            images=[self._view(image, own, Sight.OWNER) for image in images if own],
            next_page_token=following,
            used_bytes=await self._media.usage(owner_id),
            quota_bytes=self._quota,
        )

    async def delete(self, actor_id: str, image_id: str) -> None:
        """Delete an image of the actor's, or any image when the actor is an admin; its bytes
        go once no other image shares them (the collector)."""
        key = canonical_image_id(image_id)
        await self._media.delete_image(actor_id, key)
        self._forget(key)

    async def set_avatar(self, account_id: str, image_id: str) -> ImageView:
        """Make one of the account's own images its avatar."""
        image = await self._media.set_avatar(account_id, canonical_image_id(image_id))
        return self._view(image, await self._own_standing(account_id, image.id), Sight.OWNER)

    async def download(self, request: DownloadRequest, viewer_id: str) -> Delivery:
        """Decide whether and what to deliver: the file of a variant in a format, the whole file
        or a range, or nothing new (the client's copy is current). NotFound when the caller may
        not see it; PermissionDenied for an altered or expired signature."""
        image_id = canonical_image_id(request.image_id)
        variant = request.variant or DEFAULT_VARIANT
        if variant != ORIGINAL and variant not in _VARIANT_NAMES:
            raise invalid(
                [FieldViolation("variant", f"must be one of {', '.join(_variant_names())}")]
            )
        signed = bool(request.signature or request.key_id or request.expires)
        if signed:
            self._signer.verify(
                image_id,
                variant,
                expires=request.expires,
                key_id=request.key_id,
                signature=request.signature,
            )
        access = await self._access(image_id, viewer_id)
        sight = sight_of(access.standing, viewer_id)
        # A signature stands in for the token an <img> cannot send; it does not outlast the
        # owner's account (deactivated, or blocked by an admin) nor a block between the two.
        standing = access.standing
        signed_and_standing = signed and not (standing.owner_hidden or standing.blocked)
        allowed = sight is not Sight.NONE or signed_and_standing
        if variant == ORIGINAL:
            # Only the owner ever gets the original: by token, or by a URL signed for them.
            if not access.image.original_kept or not (sight is Sight.OWNER or signed_and_standing):
                raise image_not_found()
            return await self._deliver_original(access.image, request, signed)
        if not allowed:
            raise image_not_found()
        image = await self._with_renditions(access.image)
        return await self._deliver_rendition(image, variant, request, access.standing.public)

    async def _check_quota(self, owner_id: str) -> None:
        """Refuse early when the owner has no room left at all."""
        if self._quota and await self._media.usage(owner_id) >= self._quota:
            raise quota_exceeded(self._quota)

    async def _store(self, owner_id: str, spooled: SpooledFile) -> ImageView:
        """Process an uploaded file, keep its renditions (and original), record the image."""
        processed, digest = await self._process(_process_and_hash, spooled.path)
        await self._put_renditions(processed)
        if self._keep_originals:
            await self._blobs.put_file(digest, spooled.path)
        image = await self._media.create_image(
            NewImage(
                owner_id=owner_id,
                content_type=processed.content_type,
                size_bytes=spooled.size,
                width=processed.width,
                height=processed.height,
                sha256=digest,
                placeholder=processed.placeholder,
                original_kept=self._keep_originals,
                renditions=_stored(processed),
            ),
            quota_bytes=self._quota,
        )
        # The collector may have set these same bytes aside between put and the record (they
        # were another, deleted, image's): once recorded, they must be there (collector.py).
        await self._put_renditions(processed, only_missing=True)
        if self._keep_originals and not await self._blobs.exists(digest):
            await self._blobs.put_file(digest, spooled.path)
        return self._view(image, await self._own_standing(owner_id, image.id), Sight.OWNER)

    async def _access(self, image_id: str, viewer_id: str) -> ImageAccess:
        """An image and its owner's standing towards a viewer, read at most access_cache_seconds
        ago (the hot path of every delivery, 304s included)."""
        key = (image_id, viewer_id)
        found = self._recent.get(key)
        if found is None:
            self.figures.access_misses += 1
            found = await self._media.get_access(image_id, viewer_id)
            self._recent[key] = found
        else:
            self.figures.access_hits += 1
        return found

    def _forget(self, image_id: str) -> None:
        """Drop what this process remembers of an image it just changed."""
        for key in [key for key in self._recent if key[0] == image_id]:
            self._recent.pop(key, None)

    async def _own_standing(self, owner_id: str, image_id: str) -> Standing:
        """The standing of an owner's account (public or not) as its images show it."""
        return (await self._media.get_access(image_id, owner_id)).standing

    async def _process(
        self, work: Callable[[Path, int], tuple[ProcessedImage, str]], path: Path
    ) -> tuple[ProcessedImage, str]:
        """Run the processing of a file on the processing threads, at most so many at a time
        (the others wait here, holding nothing but their spooled file)."""
        async with self._processing:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            try:
                done = await loop.run_in_executor(self._workers, work, path, self._max_pixels)
            except InvalidArgument:
                self.figures.refused += 1
                raise
            finally:
                self.figures.processing_seconds += time.perf_counter() - started
            self.figures.processed += 1
            return done

    async def _put_renditions(
        self, processed: ProcessedImage, *, only_missing: bool = False
    ) -> None:
        """Put every distinct rendition's bytes in the blob store."""
        done: set[str] = set()
        for rendition in processed.renditions:
            if rendition.sha256 in done:
                continue
            done.add(rendition.sha256)
            if only_missing and await self._blobs.exists(rendition.sha256):
                continue
            await self._blobs.put(rendition.sha256, rendition.data)

    async def _with_renditions(self, image: Image) -> Image:
        """The image with its renditions, making them now for an image stored before
        renditions existed (its original is kept)."""
        if image.renditions or not image.original_kept:
            return image
        await asyncio.to_thread(self._scratch.mkdir, parents=True, exist_ok=True)
        descriptor, name = await asyncio.to_thread(
            tempfile.mkstemp, dir=self._scratch, prefix=".legacy-"
        )
        os.close(descriptor)
        path = Path(name)
        try:
            await self._fetch_to(image.sha256, path)
            processed = (await self._process(_process_and_hash, path))[0]
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        await self._put_renditions(processed)
        added = await self._media.add_renditions(
            image.id, _stored(processed), processed.placeholder
        )
        self._forget(image.id)
        return added

    async def _fetch_to(self, key: str, path: Path) -> None:
        """Copy a blob into a local file."""
        with path.open("wb") as handle:
            async for chunk in self._blobs.chunks(key, DOWNLOAD_CHUNK_BYTES):
                await asyncio.to_thread(handle.write, chunk)

    def _view(self, image: Image, standing: Standing, sight: Sight) -> ImageView:
        """The image with the URLs this viewer uses: plain paths for public images, signed
        ones otherwise; the original for its owner only."""
        variants: list[VariantView] = []
        by_name: dict[str, list[StoredRendition]] = {}
        for rendition in image.renditions:
            by_name.setdefault(rendition.variant, []).append(rendition)
        for spec in VARIANTS:
            found = by_name.get(spec.name)
            if not found:
                continue
            url, expires = self._url(image.id, spec.name, signed=not standing.public)
            variants.append(
                VariantView(
                    name=spec.name,
                    width=found[0].width,
                    height=found[0].height,
                    url=url,
                    url_expires=expires,
                    renditions=tuple(found),
                )
            )
        if sight is Sight.OWNER and image.original_kept:
            url, expires = self._url(image.id, ORIGINAL, signed=True)
            variants.append(
                VariantView(
                    name=ORIGINAL,
                    width=image.width,
                    height=image.height,
                    url=url,
                    url_expires=expires,
                    renditions=(),
                )
            )
        return ImageView(image=image, variants=tuple(variants), for_owner=sight is Sight.OWNER)

    def _url(self, image_id: str, variant: str, *, signed: bool) -> tuple[str, int | None]:
        """The path of a variant, signed when it is not public."""
        if not signed:
            return media_path(image_id, variant), None
        url = self._signer.sign(image_id, variant)
        return url.path, url.expires

    async def _deliver_rendition(
        self, image: Image, variant: str, request: DownloadRequest, public: bool
    ) -> Delivery:
        """Deliver one rendition of a variant."""
        chosen = choose_format(request.format, request.accept)
        rendition = next(
            (r for r in image.renditions if r.variant == variant and r.format == chosen), None
        )
        if rendition is None:
            raise image_not_found()
        cache_control = (
            self._public_cache_control if public else self._private_cache_control(request)
        )
        return await self._deliver(
            key=rendition.sha256,
            size=rendition.size_bytes,
            content_type=rendition.content_type,
            cache_control=cache_control,
            vary_accept=not request.format,
            request=request,
        )

    async def _deliver_original(
        self, image: Image, request: DownloadRequest, signed: bool
    ) -> Delivery:
        """Deliver the uploaded original to its owner."""
        return await self._deliver(
            key=image.sha256,
            size=image.size_bytes,
            content_type=image.content_type,
            cache_control=self._private_cache_control(request) if signed else "private, no-cache",
            vary_accept=False,
            request=request,
        )

    def _private_cache_control(self, request: DownloadRequest) -> str:
        """Caching for a file only its viewer may keep: as long as its signature holds."""
        remaining = int(request.expires - self._clock()) if request.expires else 0
        if remaining <= 0:
            return "private, no-cache"
        return f"private, max-age={remaining}"

    async def _deliver(
        self,
        *,
        key: str,
        size: int,
        content_type: str,
        cache_control: str,
        vary_accept: bool,
        request: DownloadRequest,
    ) -> Delivery:
        """The delivery of blob key: 304, a range, or the whole file."""
        entity_tag = f'"{key}"'
        if request.if_none_match and none_match(request.if_none_match, entity_tag):
            return Delivery(content_type, entity_tag, cache_control, vary_accept, None, size, None)
        byte_range = requested_range(request.range, request.if_range, entity_tag, size)
        start, end = (byte_range.start, byte_range.end) if byte_range else (0, None)
        chunks = _guarded(self._blobs.chunks(key, DOWNLOAD_CHUNK_BYTES, start, end))
        return Delivery(
            content_type, entity_tag, cache_control, vary_accept, byte_range, size, chunks
        )


class _NoCache(dict[tuple[str, str], ImageAccess]):
    """A cache that keeps nothing (access_cache_seconds 0)."""

    def __setitem__(self, key: tuple[str, str], value: ImageAccess) -> None:
        """Keep nothing."""


async def _guarded(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks of a blob; a blob gone missing reads as an image that is not there."""
    try:
        async for chunk in chunks:
            yield chunk
    except BlobMissing:
        raise image_not_found() from None


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
        raise image_not_found() from None


def image_not_found() -> NotFound:
    """The one answer for unknown, malformed and hidden image ids."""
    return NotFound(message="image not found", reason=Reason.IMAGE_NOT_FOUND)


def quota_exceeded(quota_bytes: int) -> ResourceExhausted:
    """The answer for an owner with no room left."""
    return ResourceExhausted(
        message=f"your images take all of your {quota_bytes} bytes of storage; "
        "delete some images first",
        reason=Reason.QUOTA_EXCEEDED,
    )


def _variant_names() -> list[str]:
    """Every variant a download may name."""
    return [*(spec.name for spec in VARIANTS), ORIGINAL]


def _stored(processed: ProcessedImage) -> tuple[StoredRendition, ...]:
    """The records of a processed image's renditions."""
    return tuple(
        StoredRendition(
            variant=r.variant,
            format=r.format,
            content_type=r.content_type,
            sha256=r.sha256,
            size_bytes=len(r.data),
            width=r.width,
            height=r.height,
        )
        for r in processed.renditions
    )


def _process_and_hash(path: Path, max_pixels: int) -> tuple[ProcessedImage, str]:
    """Process an uploaded file and hash its bytes, in one worker-thread hop."""
    processed = process(path, max_pixels=max_pixels)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_CHUNK):
            digest.update(block)
    return processed, digest.hexdigest()
