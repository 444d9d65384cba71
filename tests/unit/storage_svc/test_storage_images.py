"""Image rules: bounded uploads, type and size from the bytes, storage, metadata and avatars."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import threading
import uuid
import warnings
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image as PillowImage

from meshkit.errors import InvalidArgument, NotFound
from meshkit.reasons import Reason
from storage_svc import images as images_module
from storage_svc.blobs import LocalBlobStore
from storage_svc.images import (
    DOWNLOAD_CHUNK_BYTES,
    Image,
    ImageService,
    NewImage,
    Upload,
    canonical_image_id,
    sniff,
)

MAX_PIXELS = 40_000_000


def encoded(fmt: str, size: tuple[int, int] = (64, 48), **options: object) -> bytes:
    """An image of random pixels (so every format has real compressed data), encoded as fmt."""
    noise = random.Random(f"{fmt}{size}").randbytes(size[0] * size[1] * 3)
    buffer = io.BytesIO()
    PillowImage.frombytes("RGB", size, noise).save(buffer, fmt, **options)
    return buffer.getvalue()


def rejected(data: bytes, *, max_pixels: int = MAX_PIXELS) -> InvalidArgument:
    """The InvalidArgument sniff raises for data."""
    with pytest.raises(InvalidArgument) as caught:
        sniff(data, max_pixels=max_pixels)
    assert [v.field for v in caught.value.violations] == ["body"]
    return caught.value


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
def test_accepted_types_are_decided_from_the_bytes(fmt: str, content_type: str) -> None:
    facts = sniff(encoded(fmt, (64, 48)), max_pixels=MAX_PIXELS)
    assert (facts.content_type, facts.width, facts.height) == (content_type, 64, 48)


def test_camera_multi_picture_jpegs_count_as_jpeg() -> None:
    second = PillowImage.new("RGB", (64, 48), "red")
    data = encoded("MPO", (64, 48), save_all=True, append_images=[second])
    assert sniff(data, max_pixels=MAX_PIXELS).content_type == "image/jpeg"


def test_animated_images_are_accepted() -> None:
    frames = [PillowImage.new("RGB", (20, 10), color) for color in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    facts = sniff(buffer.getvalue(), max_pixels=MAX_PIXELS)
    assert (facts.content_type, facts.width, facts.height) == ("image/gif", 20, 10)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO", "PPM"])
def test_other_image_formats_are_unsupported(fmt: str) -> None:
    assert rejected(encoded(fmt, (32, 32))).reason is Reason.IMAGE_TYPE_UNSUPPORTED


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is plain text\n",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"%PDF-1.7\n",
        b"\x89PNG\r\n\x1a\n",  # a PNG signature and nothing else
        b"\xff\xd8\xff\xe0" + b"\x00" * 64,  # a JPEG start and zeros
        b"GIF89a",
        b"RIFF\x10\x00\x00\x00WEBPVP8 ",
    ],
)
def test_non_images_are_unsupported(data: bytes) -> None:
    assert rejected(data).reason is Reason.IMAGE_TYPE_UNSUPPORTED


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_truncated_images_are_unsupported(fmt: str) -> None:
    data = encoded(fmt, (64, 48))
    assert rejected(data[: len(data) // 2]).reason is Reason.IMAGE_TYPE_UNSUPPORTED


def test_jpeg_missing_its_last_scan_bytes_is_unsupported() -> None:
    # verify() does not read JPEG scan data; only decoding notices the missing tail.
    data = encoded("JPEG", (256, 256))
    assert rejected(data[:-64]).reason is Reason.IMAGE_TYPE_UNSUPPORTED


def test_corrupt_png_data_is_unsupported() -> None:
    data = bytearray(encoded("PNG", (64, 48)))
    data[len(data) // 2] ^= 0xFF  # breaks the checksum of the image data chunk
    assert rejected(bytes(data)).reason is Reason.IMAGE_TYPE_UNSUPPORTED


def test_canvases_beyond_the_pixel_limit_are_too_large() -> None:
    data = encoded("PNG", (100, 100))
    assert sniff(data, max_pixels=10_000).width == 100
    error = rejected(data, max_pixels=9_999)
    assert error.reason is Reason.IMAGE_TOO_LARGE


def test_pillow_bomb_warning_becomes_invalid_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    # Between Pillow's limit and twice it, Pillow only warns (an error under these tests).
    monkeypatch.setattr(PillowImage, "MAX_IMAGE_PIXELS", 1_000)
    assert rejected(encoded("PNG", (40, 40))).reason is Reason.IMAGE_TOO_LARGE


def test_pillow_bomb_error_becomes_invalid_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PillowImage, "MAX_IMAGE_PIXELS", 1_000)
    assert rejected(encoded("GIF", (50, 50))).reason is Reason.IMAGE_TOO_LARGE


def test_ignored_bomb_warnings_still_meet_our_own_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PillowImage, "MAX_IMAGE_PIXELS", 1_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PillowImage.DecompressionBombWarning)
        error = rejected(encoded("PNG", (40, 40)), max_pixels=1_000)
    assert error.reason is Reason.IMAGE_TOO_LARGE


def test_upload_accepts_up_to_the_limit() -> None:
    upload = Upload(max_bytes=10)
    upload.add(b"12345")
    upload.add(b"")
    upload.add(b"67890")
    assert upload.size == 10
    assert upload.data() == b"1234567890"


def test_upload_fails_as_soon_as_the_limit_is_passed_without_keeping_the_chunk() -> None:
    upload = Upload(max_bytes=10)
    upload.add(b"123456")
    with pytest.raises(InvalidArgument) as caught:
        upload.add(b"78901")
    assert caught.value.reason is Reason.IMAGE_TOO_LARGE
    assert [v.field for v in caught.value.violations] == ["body"]
    assert upload.size == 6


@pytest.mark.parametrize(
    "raw",
    [
        "6f1c7f0e-2a4b-4c8e-9a8e-0d3c2b1a0f9e",
        "6F1C7F0E-2A4B-4C8E-9A8E-0D3C2B1A0F9E",
        "6f1c7f0e2a4b4c8e9a8e0d3c2b1a0f9e",
    ],
)
def test_image_ids_are_canonical_uuids(raw: str) -> None:
    assert canonical_image_id(raw) == "6f1c7f0e-2a4b-4c8e-9a8e-0d3c2b1a0f9e"


@pytest.mark.parametrize("raw", ["not-a-uuid", "../../etc/passwd", "1" * 200])
def test_malformed_image_ids_are_not_found(raw: str) -> None:
    with pytest.raises(NotFound) as caught:
        canonical_image_id(raw)
    assert caught.value.reason is Reason.IMAGE_NOT_FOUND


def test_a_missing_image_id_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        canonical_image_id("")
    assert [v.field for v in caught.value.violations] == ["image_id"]


class FakeMedia:
    """In-memory MediaStore."""

    def __init__(self) -> None:
        self.images: dict[str, Image] = {}
        self.avatars: dict[str, str] = {}

    async def create_image(self, image: NewImage) -> Image:
        stored = Image(**asdict(image), id=str(uuid.uuid4()), create_time=datetime.now(UTC))
        self.images[stored.id] = stored
        return stored

    async def get_image(self, image_id: str) -> Image:
        try:
            return self.images[image_id]
        except KeyError:
            raise NotFound(message="image not found", reason=Reason.IMAGE_NOT_FOUND) from None

    async def set_avatar(self, account_id: str, image_id: str) -> Image:
        image = await self.get_image(image_id)
        if image.owner_id != account_id:
            raise NotFound(message="image not found", reason=Reason.IMAGE_NOT_FOUND)
        self.avatars[account_id] = image_id
        return image


def service(tmp_path: Path, media: FakeMedia, *, max_bytes: int = 1 << 20) -> ImageService:
    return ImageService(media, LocalBlobStore(tmp_path), max_bytes=max_bytes, max_pixels=MAX_PIXELS)


async def test_store_records_what_the_bytes_say_and_keeps_them(tmp_path: Path) -> None:
    media = FakeMedia()
    images = service(tmp_path, media)
    data = encoded("PNG", (300, 200))
    upload = images.new_upload()
    for start in range(0, len(data), 1000):
        upload.add(data[start : start + 1000])
    image = await images.store("owner-1", upload)
    digest = hashlib.sha256(data).hexdigest()
    assert (image.owner_id, image.content_type, image.size_bytes) == (
        "owner-1",
        "image/png",
        len(data),
    )
    assert (image.width, image.height, image.sha256) == (300, 200, digest)
    assert (tmp_path / digest[:2] / digest[2:4] / digest).read_bytes() == data


async def test_rejected_uploads_store_nothing(tmp_path: Path) -> None:
    media = FakeMedia()
    images = service(tmp_path, media)
    upload = images.new_upload()
    upload.add(b"definitely not an image")
    with pytest.raises(InvalidArgument):
        await images.store("owner-1", upload)
    assert media.images == {}
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


async def test_at_most_the_allowed_number_of_decodes_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    running = peak = 0
    entered, proceed = threading.Semaphore(0), threading.Semaphore(0)
    real_examine = images_module._examine

    def held_examine(data: bytes, max_pixels: int) -> tuple[object, str]:
        # Each decode stays running until the test lets it go, so overlaps cannot be missed.
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        entered.release()
        assert proceed.acquire(timeout=30)
        with lock:
            running -= 1
        return real_examine(data, max_pixels)

    async def next_decode_started() -> None:
        assert await asyncio.to_thread(entered.acquire, timeout=30)

    monkeypatch.setattr(images_module, "_examine", held_examine)
    images = ImageService(
        FakeMedia(),
        LocalBlobStore(tmp_path),
        max_bytes=1 << 20,
        max_pixels=MAX_PIXELS,
        max_concurrent_decodes=2,
    )
    uploads = []
    for width in range(10, 15):
        upload = images.new_upload()
        upload.add(encoded("PNG", (width, 8)))
        uploads.append(upload)
    stored = asyncio.gather(*(images.store("owner-1", upload) for upload in uploads))
    await next_decode_started()
    await next_decode_started()
    for _ in range(3):
        proceed.release()
        await next_decode_started()
    proceed.release()
    proceed.release()
    assert [image.width for image in await stored] == [10, 11, 12, 13, 14]
    assert peak == 2


async def test_download_streams_the_stored_bytes_in_64_kib_chunks(tmp_path: Path) -> None:
    images = service(tmp_path, FakeMedia(), max_bytes=8 << 20)
    data = encoded("PNG", (400, 300))  # noisy pixels: well over one chunk
    upload = images.new_upload()
    upload.add(data)
    stored = await images.store("owner-1", upload)
    image, chunks = await images.download(stored.id.upper())
    assert image == stored
    assert chunks is not None
    parts = [chunk async for chunk in chunks]
    assert len(parts) > 1
    assert all(len(part) == DOWNLOAD_CHUNK_BYTES for part in parts[:-1])
    assert b"".join(parts) == data


async def test_unknown_and_malformed_ids_are_not_found(tmp_path: Path) -> None:
    images = service(tmp_path, FakeMedia())
    for raw in (str(uuid.uuid4()), "nope"):
        with pytest.raises(NotFound):
            await images.describe(raw)
        with pytest.raises(NotFound):
            await images.download(raw)
        with pytest.raises(NotFound):
            await images.set_avatar("owner-1", raw)


async def test_only_the_owner_can_make_an_image_their_avatar(tmp_path: Path) -> None:
    media = FakeMedia()
    images = service(tmp_path, media)
    upload = images.new_upload()
    upload.add(encoded("JPEG"))
    image = await images.store("alice", upload)
    with pytest.raises(NotFound):
        await images.set_avatar("bob", image.id)
    assert await images.set_avatar("alice", image.id) == image
    assert media.avatars == {"alice": image.id}


async def test_a_current_copy_gets_no_bytes(tmp_path: Path) -> None:
    images = service(tmp_path, FakeMedia())
    upload = images.new_upload()
    upload.add(encoded("PNG", (8, 8)))
    stored = await images.store("owner-1", upload)
    tag = stored.entity_tag
    assert tag == f'"{stored.sha256}"'
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        image, chunks = await images.download(stored.id, header)
        assert (image, chunks) == (stored, None)
    for header in ('"other"', tag.strip('"'), ""):
        _, chunks = await images.download(stored.id, header)
        assert chunks is not None
