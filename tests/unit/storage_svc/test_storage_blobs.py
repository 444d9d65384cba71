"""The local blob store: content-addressed layout, atomic writes, chunked reads, ages.

The contract every backend keeps is in tests/integration/storage_svc/test_storage_blob_backends.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from storage_svc.blobs import BlobMissing, BlobStore, LocalBlobStore


def key_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


async def read_all(store: BlobStore, key: str, chunk_size: int = 4) -> list[bytes]:
    return [chunk async for chunk in store.chunks(key, chunk_size)]


async def test_blobs_live_under_two_fan_out_folders(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = b"some image bytes"
    key = key_of(data)
    await store.put(key, data)
    path = tmp_path / "blobs" / key[:2] / key[2:4] / key
    assert store.path_for(key) == path
    assert await asyncio.to_thread(files_under, tmp_path) == [path]
    assert path.read_bytes() == data


async def test_chunks_come_back_in_order_and_bounded(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = bytes(range(10))
    await store.put(key_of(data), data)
    assert await read_all(store, key_of(data)) == [
        b"\x00\x01\x02\x03",
        b"\x04\x05\x06\x07",
        b"\x08\x09",
    ]


async def test_storing_the_same_content_twice_keeps_one_blob(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = b"same bytes"
    await asyncio.gather(store.put(key_of(data), data), store.put(key_of(data), data))
    await store.put(key_of(data), data)
    assert len(await asyncio.to_thread(files_under, tmp_path)) == 1


async def test_a_failed_write_leaves_neither_blob_nor_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)
    data = b"bytes that never land"

    def broken_replace(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        await store.put(key_of(data), data)
    assert await asyncio.to_thread(files_under, tmp_path) == []


async def test_a_reader_never_sees_a_partial_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Until the rename the final path does not exist; the data sits in a temporary sibling.
    store = LocalBlobStore(tmp_path)
    data = b"x" * 100_000
    seen: list[bool] = []
    real_replace = os.replace

    def observing_replace(source: str, destination: str) -> None:
        seen.append(Path(destination).exists())
        assert Path(source).parent == Path(destination).parent
        assert Path(source).read_bytes() == data
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", observing_replace)
    await store.put(key_of(data), data)
    assert seen == [False]


async def test_unknown_keys_are_missing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobMissing):
        await read_all(store, "0" * 64)
    # Callers written against the first store expect a FileNotFoundError.
    with pytest.raises(FileNotFoundError):
        await store.size("0" * 64)


async def test_a_file_is_copied_into_place_under_its_key(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    source = tmp_path / "upload.bin"
    data = os.urandom(3 * 1024 * 1024 + 7)
    source.write_bytes(data)

    await store.put_file(key_of(data), source)

    assert store.path_for(key_of(data)).read_bytes() == data
    assert source.read_bytes() == data
    assert await asyncio.to_thread(files_under, tmp_path / "blobs") == [
        store.path_for(key_of(data))
    ]


async def test_a_failed_file_copy_leaves_neither_blob_nor_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    source = tmp_path / "upload.bin"
    source.write_bytes(b"an original")

    def broken_replace(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        await store.put_file(key_of(b"an original"), source)
    assert await asyncio.to_thread(files_under, tmp_path / "blobs") == []


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_keys_are_listed_by_the_age_of_their_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    old, new = b"written two hours ago", b"written just now"
    await store.put(key_of(old), old)
    await store.put(key_of(new), new)
    age(store.path_for(key_of(old)), 7200)

    hour = [key async for key in store.keys_older_than(3600)]
    all_keys = sorted([key async for key in store.keys_older_than(0)])

    assert hour == [key_of(old)]
    assert all_keys == sorted([key_of(old), key_of(new)])


async def test_listing_skips_files_that_are_not_stored_blobs(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    kept, aside = b"kept", b"set aside"
    await store.put(key_of(kept), kept)
    await store.put(key_of(aside), aside)
    await store.set_aside(key_of(aside))
    folder = store.path_for(key_of(kept)).parent
    (folder / ".incoming-abc123").write_bytes(b"half a write")
    # A key's shape in the wrong fan-out folder, a stray file and a stray folder at the top.
    (folder / key_of(b"elsewhere")).write_bytes(b"elsewhere")
    (tmp_path / "README").write_text("not a blob")
    (tmp_path / "zz").mkdir()
    for path in [*files_under(tmp_path)]:
        age(path, 10)

    assert [key async for key in store.keys_older_than(0)] == [key_of(kept)]


async def test_listing_an_empty_or_absent_folder_finds_nothing(tmp_path: Path) -> None:
    assert [key async for key in LocalBlobStore(tmp_path / "absent").keys_older_than(0)] == []


@pytest.mark.parametrize("key", ["", "../../etc/passwd", "A" * 64, "0" * 63, "0" * 65, "g" * 64])
async def test_only_hex_sha256_keys_are_accepted(tmp_path: Path, key: str) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(ValueError, match="blob key"):
        await store.put(key, b"data")
    with pytest.raises(ValueError, match="blob key"):
        await read_all(store, key)
