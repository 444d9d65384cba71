"""One contract for every blob store: the local folder and S3 (a real moto server over HTTP on
127.0.0.1), then what only the S3 store promises (its object layout, parts, aborts, deadlines)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

from storage_svc.blobs import BlobMissing, BlobStore, LocalBlobStore
from storage_svc.s3_blobs import PART_BYTES, S3BlobStore
from tools.s3_dev_server import (
    DEV_ACCESS_KEY_ID,
    DEV_REGION,
    DEV_SECRET_ACCESS_KEY,
    s3_dev_server,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

BIG_FILE_BYTES = 20 * 1024 * 1024 + 12345


def key_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def read_all(
    store: BlobStore, key: str, chunk_size: int = 1000, start: int = 0, end: int | None = None
) -> bytes:
    chunks = [chunk async for chunk in store.chunks(key, chunk_size, start, end)]
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks)
    return b"".join(chunks)


async def stored_keys(store: BlobStore, seconds: float) -> list[str]:
    return sorted([key async for key in store.keys_older_than(seconds)])


def new_s3_store(endpoint_url: str, bucket: str, prefix: str = "", **options: Any) -> S3BlobStore:
    return S3BlobStore(
        bucket=bucket,
        endpoint_url=endpoint_url,
        region=DEV_REGION,
        access_key_id=DEV_ACCESS_KEY_ID,
        secret_access_key=DEV_SECRET_ACCESS_KEY,
        prefix=prefix,
        **options,
    )


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port for this module."""
    with s3_dev_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture
def s3_bucket() -> str:
    """A bucket name no other test uses (the server is shared by the module)."""
    return f"blobs-{uuid.uuid4().hex}"


@pytest.fixture
async def s3_store(s3_endpoint: str, s3_bucket: str) -> AsyncIterator[S3BlobStore]:
    """An open S3 store on a fresh bucket, under the prefix "meshgram/"."""
    store = new_s3_store(s3_endpoint, s3_bucket, prefix="meshgram/")
    await store.open()
    try:
        await store.ensure_bucket()
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """Each backend in turn, empty."""
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    s3: S3BlobStore = request.getfixturevalue("s3_store")
    return s3


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file of about 20 MB whose bytes are not one repeated pattern."""
    path = tmp_path_factory.mktemp("big") / "original.bin"
    block = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)
    with path.open("wb") as handle:
        written = 0
        counter = 0
        while written < BIG_FILE_BYTES:
            piece = (counter.to_bytes(4, "big") + block)[: BIG_FILE_BYTES - written]
            handle.write(piece)
            written += len(piece)
            counter += 1
    return path


def file_key(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


# --- the contract ------------------------------------------------------------------------------


async def test_a_stored_blob_reads_back_in_bounded_chunks(store: BlobStore) -> None:
    data = bytes(range(256)) * 40
    key = key_of(data)
    assert not await store.exists(key)

    await store.put(key, data)

    assert await store.exists(key)
    assert await store.size(key) == len(data)
    assert await read_all(store, key, chunk_size=1000) == data
    assert [len(chunk) async for chunk in store.chunks(key, 4096)] == [4096, 4096, 2048]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (1000, None),
        (10, 2500),
        (0, 1),
        (1234, 1234),
        (0, 0),
        (9000, 20000),
        (10239, None),
        (10240, None),
        (50000, None),
        (50000, 60000),
    ],
    ids=[
        "all",
        "start-only",
        "start-and-end",
        "first-byte",
        "empty-range",
        "empty-at-start",
        "end-beyond-size",
        "last-byte",
        "start-at-size",
        "start-beyond-size",
        "range-beyond-size",
    ],
)
async def test_ranges_read_exactly_their_bytes(
    store: BlobStore, start: int, end: int | None
) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    key = key_of(data)
    await store.put(key, data)
    assert await read_all(store, key, 700, start=start, end=end) == data[start:end]


async def test_bad_ranges_are_refused(store: BlobStore) -> None:
    data = b"ranged bytes"
    await store.put(key_of(data), data)
    with pytest.raises(ValueError, match="start"):
        store.chunks(key_of(data), 10, start=-1)
    with pytest.raises(ValueError, match="end"):
        store.chunks(key_of(data), 10, start=5, end=4)
    with pytest.raises(ValueError, match="chunk_size"):
        store.chunks(key_of(data), 0)


async def test_an_unknown_key_is_missing(store: BlobStore) -> None:
    key = key_of(b"never stored")
    assert not await store.exists(key)
    with pytest.raises(BlobMissing):
        await store.size(key)
    with pytest.raises(BlobMissing):
        await read_all(store, key)
    with pytest.raises(BlobMissing):
        await read_all(store, key, start=3, end=3)


async def test_storing_the_same_key_twice_keeps_one_readable_blob(store: BlobStore) -> None:
    data = b"the same bytes, twice"
    key = key_of(data)
    await store.put(key, data)
    await store.put(key, data)
    assert await read_all(store, key) == data
    assert await stored_keys(store, 0) == [key]


async def test_twenty_concurrent_puts_of_one_key_leave_one_readable_blob(store: BlobStore) -> None:
    data = bytes(range(256)) * 300
    key = key_of(data)
    await asyncio.gather(*(store.put(key, data) for _ in range(20)))
    assert await read_all(store, key, 8192) == data
    assert await stored_keys(store, 0) == [key]


async def test_a_big_file_is_stored_and_read_back_whole(store: BlobStore, big_file: Path) -> None:
    key = await asyncio.to_thread(file_key, big_file)

    await store.put_file(key, big_file)
    await store.put_file(key, big_file)

    assert await store.size(key) == BIG_FILE_BYTES
    digest = hashlib.sha256()
    async for chunk in store.chunks(key, 256 * 1024):
        digest.update(chunk)
    assert digest.hexdigest() == key
    tail = await read_all(store, key, 4096, start=BIG_FILE_BYTES - 5000)
    assert tail == (await asyncio.to_thread(big_file.read_bytes))[-5000:]


async def test_a_small_file_is_stored_too(store: BlobStore, tmp_path: Path) -> None:
    data = b"a small original"
    path = tmp_path / "small.bin"
    path.write_bytes(data)
    await store.put_file(key_of(data), path)
    assert await read_all(store, key_of(data)) == data


async def test_a_blob_set_aside_is_out_of_reach_until_put_back(store: BlobStore) -> None:
    data = b"bytes of a deleted account" * 100
    key = key_of(data)
    await store.put(key, data)

    await store.set_aside(key)

    assert not await store.exists(key)
    with pytest.raises(BlobMissing):
        await read_all(store, key)
    with pytest.raises(BlobMissing):
        await store.size(key)

    await store.put_back(key)

    assert await store.exists(key)
    assert await read_all(store, key) == data


async def test_setting_aside_twice_keeps_the_blob_recoverable(store: BlobStore) -> None:
    data = b"aside twice"
    key = key_of(data)
    await store.put(key, data)
    await store.set_aside(key)
    await store.set_aside(key)
    assert not await store.exists(key)
    await store.put_back(key)
    assert await read_all(store, key) == data


async def test_a_blob_stored_again_while_set_aside_survives_put_back(store: BlobStore) -> None:
    data = b"uploaded again while the collector looked"
    key = key_of(data)
    await store.put(key, data)
    await store.set_aside(key)

    await store.put(key, data)
    await store.put_back(key)

    assert await read_all(store, key) == data
    # The set-aside copy is gone: discarding now must not touch the stored blob.
    await store.discard(key)
    assert await read_all(store, key) == data


async def test_a_discarded_blob_is_gone_for_good(store: BlobStore) -> None:
    data = b"collected"
    key = key_of(data)
    await store.put(key, data)
    await store.set_aside(key)

    await store.discard(key)
    await store.put_back(key)

    assert not await store.exists(key)
    with pytest.raises(BlobMissing):
        await read_all(store, key)
    assert await stored_keys(store, 0) == []


async def test_collector_steps_on_missing_blobs_do_nothing(store: BlobStore) -> None:
    key = key_of(b"nothing here")
    await store.set_aside(key)
    await store.put_back(key)
    await store.discard(key)
    assert not await store.exists(key)


async def test_only_stored_blobs_are_listed_and_only_when_old_enough(store: BlobStore) -> None:
    payloads = [f"blob {index}".encode() for index in range(5)]
    for data in payloads:
        await store.put(key_of(data), data)
    aside = key_of(payloads[0])
    await store.set_aside(aside)

    listed = await stored_keys(store, 0)

    assert listed == sorted(key_of(data) for data in payloads[1:])
    assert await stored_keys(store, 3600) == []


async def test_a_store_with_nothing_in_it_lists_nothing(store: BlobStore) -> None:
    assert await stored_keys(store, 0) == []


@pytest.mark.parametrize(
    "key", ["", "../../etc/passwd", "A" * 64, "0" * 63, "0" * 65, "g" * 64, "0" * 63 + "\n"]
)
async def test_only_hex_sha256_keys_are_accepted(
    store: BlobStore, key: str, tmp_path: Path
) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"data")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.put(key, b"data"),
        lambda: store.put_file(key, path),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.set_aside(key),
        lambda: store.put_back(key),
        lambda: store.discard(key),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="blob key"):
            await call()
    with pytest.raises(ValueError, match="blob key"):
        store.chunks(key, 10)
    assert await stored_keys(store, 0) == []


async def test_a_negative_age_is_refused(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="seconds"):
        store.keys_older_than(-1)


# --- S3 only -----------------------------------------------------------------------------------


@pytest.fixture
async def raw_s3(s3_endpoint: str) -> AsyncIterator[S3Client]:
    """A plain S3 client of the module's server, to look behind the store's back."""
    async with get_session().create_client(
        "s3",
        region_name=DEV_REGION,
        endpoint_url=s3_endpoint,
        aws_access_key_id=DEV_ACCESS_KEY_ID,
        aws_secret_access_key=DEV_SECRET_ACCESS_KEY,
    ) as client:
        yield client


async def object_names(client: S3Client, bucket: str) -> list[str]:
    listing = await client.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


async def test_s3_objects_live_under_the_prefix_in_two_fan_out_levels(
    s3_store: S3BlobStore, raw_s3: S3Client, s3_bucket: str
) -> None:
    kept, aside = b"kept", b"set aside"
    await s3_store.put(key_of(kept), kept)
    await s3_store.put(key_of(aside), aside)
    await s3_store.set_aside(key_of(aside))

    names = await object_names(raw_s3, s3_bucket)

    k, a = key_of(kept), key_of(aside)
    assert names == sorted(
        [f"meshgram/blobs/{k[:2]}/{k[2:4]}/{k}", f"meshgram/collecting/{a[:2]}/{a[2:4]}/{a}"]
    )


async def test_s3_store_without_prefix_starts_at_the_bucket_root(
    s3_endpoint: str, raw_s3: S3Client, s3_bucket: str
) -> None:
    store = new_s3_store(s3_endpoint, s3_bucket)
    await store.open()
    try:
        await store.ensure_bucket()
        await store.ensure_bucket()
        data = b"at the root"
        await store.put(key_of(data), data)
        key = key_of(data)
        assert await object_names(raw_s3, s3_bucket) == [f"blobs/{key[:2]}/{key[2:4]}/{key}"]
        assert await stored_keys(store, 0) == [key]
    finally:
        await store.close()


async def test_s3_listing_ignores_objects_the_store_did_not_name(
    s3_store: S3BlobStore, raw_s3: S3Client, s3_bucket: str
) -> None:
    data = b"a real blob"
    await s3_store.put(key_of(data), data)
    stray = key_of(b"stray")
    for name in [
        f"meshgram/blobs/{stray}",
        f"meshgram/blobs/00/00/{stray}",
        "meshgram/blobs/ab/cd/notes.txt",
    ]:
        await raw_s3.put_object(Bucket=s3_bucket, Key=name, Body=b"x")
    assert await stored_keys(s3_store, 0) == [key_of(data)]


async def test_s3_big_files_go_up_in_parts(
    s3_store: S3BlobStore, raw_s3: S3Client, s3_bucket: str, big_file: Path
) -> None:
    key = await asyncio.to_thread(file_key, big_file)
    await s3_store.put_file(key, big_file)
    name = f"meshgram/blobs/{key[:2]}/{key[2:4]}/{key}"
    head = await raw_s3.head_object(Bucket=s3_bucket, Key=name)
    # A multipart object's ETag ends in -<number of parts>.
    parts = -(-BIG_FILE_BYTES // PART_BYTES)
    assert head["ETag"].strip('"').endswith(f"-{parts}")


async def test_s3_a_failed_multipart_upload_leaves_no_parts_behind(
    s3_store: S3BlobStore,
    raw_s3: S3Client,
    s3_bucket: str,
    big_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The connection dropping as the upload completes: the store's own client must fail then.
    client = s3_store._s3

    async def refuse(**kwargs: Any) -> None:
        raise ConnectionResetError("connection lost")

    monkeypatch.setattr(client, "complete_multipart_upload", refuse)
    key = await asyncio.to_thread(file_key, big_file)
    with pytest.raises(ConnectionResetError):
        await s3_store.put_file(key, big_file)
    monkeypatch.undo()

    uploads = await raw_s3.list_multipart_uploads(Bucket=s3_bucket)
    assert uploads.get("Uploads", []) == []
    assert not await s3_store.exists(key)


async def test_s3_methods_need_an_open_store(s3_endpoint: str) -> None:
    store = new_s3_store(s3_endpoint, "never-opened")
    with pytest.raises(RuntimeError, match="open"):
        await store.exists(key_of(b"x"))


async def test_s3_store_description_names_no_secret(s3_endpoint: str) -> None:
    store = S3BlobStore(
        bucket="a-bucket",
        endpoint_url=s3_endpoint,
        region=DEV_REGION,
        access_key_id="AKIDSHOWN",
        secret_access_key="very-secret-value",
    )
    assert "very-secret-value" not in repr(store)
    assert "a-bucket" in repr(store)


async def test_s3_a_server_that_never_answers_fails_the_request(tmp_path: Path) -> None:
    # A socket that accepts connections (the kernel does) and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        host, port = silent.getsockname()
        store = new_s3_store(
            f"http://{host}:{port}", "silent-bucket", timeout_seconds=0.2, max_attempts=1
        )
        await store.open()
        try:
            # wait_for only keeps a broken deadline from hanging the suite.
            with pytest.raises((ReadTimeoutError, ConnectTimeoutError)):
                await asyncio.wait_for(store.exists(key_of(b"x")), 60)
        finally:
            await store.close()
