"""StorageService through real stubs: storage_svc -> data_access -> PostgreSQL and blobs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api import httpbody_pb2
from grpc_health.v1 import health_pb2
from PIL import Image

from meshgram.storage.v1 import storage_pb2, storage_pb2_grpc
from meshgram.user.v1 import user_pb2, user_pb2_grpc
from tests.helpers import failure_of, health_status
from tests.sample_images import noise_image_bytes

pytestmark = pytest.mark.integration

Storage = storage_pb2_grpc.StorageServiceStub
Users = user_pb2_grpc.UserServiceStub


def noisy_png(width: int, height: int) -> bytes:
    """A PNG of random pixels: barely compressible, so its size is predictable."""
    pixels = random.Random(width * 10_000 + height).randbytes(width * height * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buffer, "PNG")
    return buffer.getvalue()


async def chunked(
    data: bytes, size: int, content_type: str = "image/jpeg"
) -> AsyncIterator[storage_pb2.UploadImageRequest]:
    """Upload requests carrying data in chunks of size bytes, each claiming content_type."""
    for start in range(0, len(data), size):
        yield storage_pb2.UploadImageRequest(
            body=httpbody_pb2.HttpBody(content_type=content_type, data=data[start : start + size])
        )


async def upload(storage: Storage, user: Any, data: bytes, size: int = 4096) -> storage_pb2.Image:
    reply = await storage.UploadImage(chunked(data, size), metadata=user.metadata)
    return reply.image


async def test_upload_decides_the_type_from_the_bytes(
    storage: Storage, user: Any, blob_dir: Path
) -> None:
    data = noisy_png(120, 90)
    # Every chunk claims image/jpeg: the bytes say PNG and win.
    image = await upload(storage, user, data, size=5000)
    digest = hashlib.sha256(data).hexdigest()
    assert uuid.UUID(image.id)
    assert image.owner_id == user.account_id
    assert (image.content_type, image.size_bytes) == ("image/png", len(data))
    assert (image.width, image.height, image.sha256) == (120, 90, digest)
    assert image.create_time.seconds > 0
    # The renditions are stored under their digests; the upload itself is not kept.
    assert len(image.variants) == 4
    for variant in image.variants:
        for rendition in variant.renditions:
            key = rendition.sha256
            stored = blob_dir / key[:2] / key[2:4] / key
            content = await asyncio.to_thread(stored.read_bytes)
            assert hashlib.sha256(content).hexdigest() == key
    assert not (blob_dir / digest[:2] / digest[2:4] / digest).exists()


async def test_any_account_reads_metadata_and_downloads_a_rendition(
    storage: Storage, new_user: Any
) -> None:
    owner, reader = await new_user(), await new_user()
    # Noise compresses badly: its largest rendition is more than one download chunk.
    data = noise_image_bytes("JPEG", 480, 360, quality=90)
    image = await upload(storage, owner, data)
    described = await storage.GetImage(
        storage_pb2.GetImageRequest(image_id=image.id), metadata=reader.metadata
    )
    assert described.image.variants == image.variants
    assert described.image.stored_bytes == 0  # the owner's business
    parts = [
        part
        async for part in storage.DownloadImage(
            storage_pb2.DownloadImageRequest(image_id=image.id, format="webp"),
            metadata=reader.metadata,
        )
    ]
    largest = next(v for v in image.variants if v.name == "w1080")
    webp = next(r for r in largest.renditions if r.format == "webp")
    assert len(parts) > 1
    assert all(part.content_type == "image/webp" for part in parts)
    assert (largest.width, largest.height) == (480, 360)
    assert all(len(part.data) <= 64 * 1024 for part in parts)
    assert hashlib.sha256(b"".join(part.data for part in parts)).hexdigest() == webp.sha256


@pytest.mark.parametrize(
    "data", [b"", b"just some text, not an image\n", b"<svg/> pretending to be a png"]
)
async def test_non_images_are_invalid(storage: Storage, user: Any, data: bytes) -> None:
    failure = await failure_of(storage.UploadImage(chunked(data, 10), metadata=user.metadata))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (failure.reason, failure.fields) == ("IMAGE_TYPE_UNSUPPORTED", ["body"])


async def test_truncated_images_are_invalid(storage: Storage, user: Any) -> None:
    data = noisy_png(60, 40)
    failure = await failure_of(
        storage.UploadImage(chunked(data[: len(data) // 2], 1000), metadata=user.metadata)
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "IMAGE_TYPE_UNSUPPORTED",
    )


async def test_oversize_upload_fails_without_reading_the_whole_stream(
    storage: Storage, user: Any, max_image_bytes: int
) -> None:
    sent = 0
    chunk = b"\0" * (64 * 1024)
    endless_limit = 64 * 1024 * 1024

    async def endless() -> AsyncIterator[storage_pb2.UploadImageRequest]:
        nonlocal sent
        yield storage_pb2.UploadImageRequest(body=httpbody_pb2.HttpBody(data=noisy_png(16, 16)))
        while sent < endless_limit:
            sent += len(chunk)
            yield storage_pb2.UploadImageRequest(body=httpbody_pb2.HttpBody(data=chunk))

    failure = await failure_of(storage.UploadImage(endless(), metadata=user.metadata))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (failure.reason, failure.fields) == ("IMAGE_TOO_LARGE", ["body"])
    # The server gave up near the limit; it did not drain 64 MiB first.
    assert sent < endless_limit
    assert max_image_bytes < sent


async def test_upload_of_exactly_the_limit_is_accepted(
    storage: Storage, user: Any, max_image_bytes: int
) -> None:
    data = noisy_png(20, 20)
    padded = data + b"\0" * (max_image_bytes - len(data))  # PNG readers stop at IEND
    image = await upload(storage, user, padded, size=32 * 1024)
    assert (image.content_type, image.size_bytes) == ("image/png", max_image_bytes)


async def test_one_mib_chunks_reach_the_service_and_bigger_messages_are_refused(
    storage: Storage, user: Any, max_image_bytes: int
) -> None:
    # storage.proto tells clients to send chunks of up to 1 MiB: such a chunk must reach the
    # upload rules (here: over this session's limit), while a 4 MiB message never gets past grpc.
    mib = 1024 * 1024
    assert max_image_bytes < mib
    data = noisy_png(20, 20)
    within = await failure_of(
        storage.UploadImage(chunked(data + b"\0" * mib, mib), metadata=user.metadata)
    )
    assert (within.code, within.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_TOO_LARGE")
    call = storage.UploadImage(metadata=user.metadata)
    # The server may end the call before the client finishes sending: then the write fails
    # locally, and the status the server sent is still what the call reports.
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
        await call.write(
            storage_pb2.UploadImageRequest(body=httpbody_pb2.HttpBody(data=b"\0" * (4 * mib)))
        )
        await call.done_writing()
    assert await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("image_id", [str(uuid.UUID(int=0)), "not-a-uuid"])
async def test_unknown_or_malformed_ids_are_not_found(
    storage: Storage, user: Any, image_id: str
) -> None:
    get = await failure_of(
        storage.GetImage(storage_pb2.GetImageRequest(image_id=image_id), metadata=user.metadata)
    )
    assert (get.code, get.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")

    async def download() -> None:
        request = storage_pb2.DownloadImageRequest(image_id=image_id)
        async for _ in storage.DownloadImage(request, metadata=user.metadata):
            pass

    downloaded = await failure_of(download())
    assert (downloaded.code, downloaded.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    avatar = await failure_of(
        storage.SetAvatar(storage_pb2.SetAvatarRequest(image_id=image_id), metadata=user.metadata)
    )
    assert avatar.code == grpc.StatusCode.NOT_FOUND


async def test_a_missing_image_id_is_invalid_everywhere(storage: Storage, user: Any) -> None:
    avatar = await failure_of(
        storage.SetAvatar(storage_pb2.SetAvatarRequest(), metadata=user.metadata)
    )
    assert (avatar.code, avatar.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["image_id"])
    get = await failure_of(storage.GetImage(storage_pb2.GetImageRequest(), metadata=user.metadata))
    assert (get.code, get.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["image_id"])


async def test_own_image_becomes_the_avatar(storage: Storage, users: Users, user: Any) -> None:
    image = await upload(storage, user, noisy_png(32, 32))
    reply = await storage.SetAvatar(
        storage_pb2.SetAvatarRequest(image_id=image.id), metadata=user.metadata
    )
    assert reply.image == image
    me = await users.GetMyProfile(user_pb2.GetMyProfileRequest(), metadata=user.metadata)
    assert me.profile.avatar_image_id == image.id


async def test_someone_elses_image_cannot_become_my_avatar(
    storage: Storage, users: Users, new_user: Any
) -> None:
    alice, bob = await new_user(), await new_user()
    image = await upload(storage, alice, noisy_png(24, 24))
    failure = await failure_of(
        storage.SetAvatar(storage_pb2.SetAvatarRequest(image_id=image.id), metadata=bob.metadata)
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    me = await users.GetMyProfile(user_pb2.GetMyProfileRequest(), metadata=bob.metadata)
    assert me.profile.avatar_image_id == ""


async def test_changes_need_a_token_and_a_bad_token_is_refused_everywhere(
    storage: Storage, user: Any
) -> None:
    image = await upload(storage, user, noisy_png(8, 8))
    garbage = (("authorization", "Bearer garbage"),)

    async def download(metadata: tuple[tuple[str, str], ...]) -> None:
        request = storage_pb2.DownloadImageRequest(image_id=image.id)
        async for _ in storage.DownloadImage(request, metadata=metadata):
            pass

    def changes(metadata: tuple[tuple[str, str], ...]) -> list[Any]:
        return [
            storage.UploadImage(chunked(noisy_png(8, 8), 100), metadata=metadata),
            storage.SetAvatar(storage_pb2.SetAvatarRequest(image_id=image.id), metadata=metadata),
            storage.DeleteImage(
                storage_pb2.DeleteImageRequest(image_id=image.id), metadata=metadata
            ),
            storage.ListMyImages(storage_pb2.ListMyImagesRequest(), metadata=metadata),
            storage.CreateUpload(storage_pb2.CreateUploadRequest(size_bytes=10), metadata=metadata),
        ]

    for call in changes(()):
        failure = await failure_of(call)
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    reads = [
        storage.GetImage(storage_pb2.GetImageRequest(image_id=image.id), metadata=garbage),
        download(garbage),
    ]
    for call in [*changes(garbage), *reads]:
        failure = await failure_of(call)
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    # Reading a public account's image needs no token at all.
    await storage.GetImage(storage_pb2.GetImageRequest(image_id=image.id))
    await download(())


async def test_health_is_serving_when_data_access_and_auth_are(storage_address: str) -> None:
    async with grpc.aio.insecure_channel(storage_address) as channel:
        for service in ("", "meshgram.storage.v1.StorageService"):
            status = await health_status(channel, service)
            assert status == health_pb2.HealthCheckResponse.SERVING
