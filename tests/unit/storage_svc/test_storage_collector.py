"""The blob collector against an in-memory queue and a real local blob store; the store's set
aside / put back / discard; and the upload's re-check that undoes a concurrent collection."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image as PillowImage

from data_access.blob_collections import CLAIM_MAX, LEASE_MAX
from storage_svc.blobs import LocalBlobStore
from storage_svc.collector import BlobCollector
from storage_svc.images import Image, NewImage
from tests.unit.storage_svc.storage_fakes import FakeMedia, chunks_of, image_service


class QueueDown(Exception):
    """data_access could not be reached."""


class FakeQueue:
    """In-memory CollectionQueue: the queued keys, and which of them an image still names."""

    def __init__(self, queued: list[str], referenced: set[str] | None = None) -> None:
        self.queued = list(queued)
        self.referenced = set(referenced or ())
        self.claims: list[tuple[int, float]] = []
        self.completed: list[str] = []
        self.claim_failures = 0
        self.failing_before_commit: set[str] = set()
        self.failing_after_commit: set[str] = set()

    async def claim(self, limit: int, lease_seconds: float) -> list[str]:
        """Every queued key up to limit (a fake whose leases have always run out)."""
        self.claims.append((limit, lease_seconds))
        if self.claim_failures:
            self.claim_failures -= 1
            raise QueueDown("claim failed")
        return self.queued[:limit]

    async def complete(self, key: str) -> bool:
        """Take key off the queue; fail before or after that as the test arranged, once."""
        if key in self.failing_before_commit:
            self.failing_before_commit.discard(key)
            raise QueueDown("complete failed before taking the key off")
        if key in self.queued:
            self.queued.remove(key)
        self.completed.append(key)
        if key in self.failing_after_commit:
            self.failing_after_commit.discard(key)
            raise QueueDown("complete took the key off, then its answer was lost")
        return key in self.referenced

    async def queue_unreferenced(self, keys: Sequence[str]) -> list[str]:
        """Queue the keys no image names; return them."""
        fresh = [key for key in keys if key not in self.referenced and key not in self.queued]
        self.queued += fresh
        return fresh


def key_of(data: bytes) -> str:
    """The blob key of data."""
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[Path]:
    """Every file below root, including set-aside ones."""
    return sorted(path for path in root.rglob("*") if path.is_file())


async def read_blob(store: LocalBlobStore, key: str) -> bytes:
    """The bytes stored under key, read as a download would."""
    return b"".join([chunk async for chunk in store.chunks(key, 7)])


async def stored(store: LocalBlobStore, *payloads: bytes) -> list[str]:
    """Put each payload in the store; their keys."""
    for data in payloads:
        await store.put(key_of(data), data)
    return [key_of(data) for data in payloads]


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    """A local blob store in a fresh folder."""
    return LocalBlobStore(tmp_path / "blobs")


# --- LocalBlobStore: set aside, put back, discard ---------------------------------------------


async def test_a_blob_set_aside_reads_as_missing(store: LocalBlobStore) -> None:
    [key] = await stored(store, b"bytes of a deleted account")

    await store.set_aside(key)

    assert not await store.exists(key)
    with pytest.raises(FileNotFoundError):
        await read_blob(store, key)


async def test_put_back_restores_the_same_bytes(store: LocalBlobStore) -> None:
    data = bytes(range(256)) * 10
    [key] = await stored(store, data)

    await store.set_aside(key)
    await store.put_back(key)

    assert await store.exists(key)
    assert await read_blob(store, key) == data


async def test_setting_aside_twice_keeps_the_blob_aside_and_recoverable(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    data = b"set aside by a round that then failed"
    [key] = await stored(store, data)

    await store.set_aside(key)
    await store.set_aside(key)

    assert not await store.exists(key)
    assert len(await asyncio.to_thread(files_under, tmp_path)) == 1
    await store.put_back(key)
    assert await read_blob(store, key) == data


async def test_discard_deletes_a_blob_set_aside_and_leaves_no_file(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    [key, other] = await stored(store, b"unreferenced", b"still used")

    await store.set_aside(key)
    await store.discard(key)
    await store.discard(key)

    assert not await store.exists(key)
    assert await asyncio.to_thread(files_under, tmp_path) == [store.path_for(other)]
    # Once discarded, nothing is left to put back.
    await store.put_back(key)
    assert not await store.exists(key)


async def test_discard_never_deletes_a_blob_in_place(store: LocalBlobStore) -> None:
    data = b"a blob nobody set aside"
    [key] = await stored(store, data)

    await store.discard(key)

    assert await read_blob(store, key) == data


async def test_missing_blobs_are_left_alone(store: LocalBlobStore, tmp_path: Path) -> None:
    key = key_of(b"never stored")

    await store.set_aside(key)
    await store.put_back(key)
    await store.discard(key)

    assert not await store.exists(key)
    assert await asyncio.to_thread(files_under, tmp_path) == []


async def test_put_back_keeps_a_blob_stored_again_meanwhile(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    data = b"uploaded again while set aside"
    [key] = await stored(store, data)

    await store.set_aside(key)
    await store.put(key, data)
    assert await store.exists(key)
    await store.put_back(key)

    assert await read_blob(store, key) == data
    assert await asyncio.to_thread(files_under, tmp_path) == [store.path_for(key)]


@pytest.mark.parametrize("key", ["", "../../etc/passwd", "A" * 64, "0" * 63, ".collecting-00"])
async def test_only_hex_sha256_keys_can_be_set_aside_put_back_or_discarded(
    store: LocalBlobStore, key: str
) -> None:
    for operation in (store.set_aside, store.put_back, store.discard, store.exists):
        with pytest.raises(ValueError, match="blob key"):
            await operation(key)


# --- BlobCollector ------------------------------------------------------------------------------


async def test_unreferenced_blobs_are_deleted_and_referenced_ones_kept_intact(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    gone_data, kept_data = b"only the deleted account had these", b"another image shares these"
    gone, kept = await stored(store, gone_data, kept_data)
    queue = FakeQueue([gone, kept], referenced={kept})
    collector = BlobCollector(queue, store, interval_seconds=60)

    assert await collector.collect_once() == 1

    assert not await store.exists(gone)
    assert await read_blob(store, kept) == kept_data
    # Neither a set-aside copy of the deleted blob nor of the kept one is left behind.
    assert await asyncio.to_thread(files_under, tmp_path) == [store.path_for(kept)]
    assert queue.queued == []
    assert (collector.figures.collected, collector.figures.kept) == (1, 1)
    assert collector.rounds.failed == 0


async def test_the_blob_is_out_of_reach_while_data_access_decides(store: LocalBlobStore) -> None:
    # The safety argument: when data_access answers, an upload's re-check already sees it gone.
    [key] = await stored(store, b"bytes under collection")
    seen: list[bool] = []

    class ObservingQueue(FakeQueue):
        """FakeQueue noting whether the blob could be read when complete was called."""

        async def complete(self, key: str) -> bool:
            """Note, then complete."""
            seen.append(await store.exists(key))
            return await super().complete(key)

    await BlobCollector(ObservingQueue([key]), store, interval_seconds=60).collect_once()

    assert seen == [False]


async def test_a_queued_blob_already_missing_is_taken_off_the_queue(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    missing, also_missing = key_of(b"gone already"), key_of(b"gone too, but named")
    [present] = await stored(store, b"present")
    queue = FakeQueue([missing, also_missing, present], referenced={also_missing})
    collector = BlobCollector(queue, store, interval_seconds=60)

    await collector.collect_once()

    assert queue.queued == []
    assert queue.completed == [missing, also_missing, present]
    assert await asyncio.to_thread(files_under, tmp_path) == []


async def test_an_empty_queue_changes_nothing(store: LocalBlobStore, tmp_path: Path) -> None:
    [key] = await stored(store, b"not queued")
    collector = BlobCollector(FakeQueue([]), store, interval_seconds=60)

    assert await collector.collect_once() == 0

    assert await asyncio.to_thread(files_under, tmp_path) == [store.path_for(key)]
    assert (collector.figures.collected, collector.figures.kept) == (0, 0)


async def test_the_claim_asks_for_what_data_access_accepts(store: LocalBlobStore) -> None:
    queue = FakeQueue([])

    await BlobCollector(queue, store, interval_seconds=60).collect_once()

    [(limit, lease_seconds)] = queue.claims
    assert 1 <= limit <= CLAIM_MAX
    assert 1 <= lease_seconds <= LEASE_MAX.total_seconds()


@pytest.mark.parametrize("referenced", [False, True], ids=["unreferenced", "referenced"])
async def test_a_round_that_fails_after_setting_aside_is_finished_by_the_next(
    store: LocalBlobStore, tmp_path: Path, referenced: bool
) -> None:
    data = b"set aside, then data_access went away"
    [key] = await stored(store, data)
    queue = FakeQueue([key], referenced={key} if referenced else set())
    queue.failing_before_commit.add(key)
    collector = BlobCollector(queue, store, interval_seconds=60)

    with pytest.raises(QueueDown):
        await collector.collect_once()
    # The file is put back at once (keeping bytes is the safe side) and stays queued.
    assert await store.exists(key)
    assert queue.queued == [key]
    await collector.collect_once()

    assert queue.queued == []
    if referenced:
        assert await read_blob(store, key) == data
        assert await asyncio.to_thread(files_under, tmp_path) == [store.path_for(key)]
    else:
        assert await asyncio.to_thread(files_under, tmp_path) == []


async def test_a_referenced_blob_comes_back_when_the_answer_of_complete_is_lost(
    store: LocalBlobStore,
) -> None:
    data = b"still named by another account's image"
    [key] = await stored(store, data)
    queue = FakeQueue([key], referenced={key})
    queue.failing_after_commit.add(key)
    collector = BlobCollector(queue, store, interval_seconds=60)

    with pytest.raises(QueueDown):
        await collector.collect_once()
    await collector.collect_once()

    assert await read_blob(store, key) == data


async def test_the_background_collector_survives_a_failed_round(
    store: LocalBlobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    [key] = await stored(store, b"collected on the second round")
    queue = FakeQueue([key])
    queue.claim_failures = 1
    collector = BlobCollector(queue, store, interval_seconds=0.01)

    collector.start()
    try:
        for _ in range(500):
            if collector.figures.collected:
                break
            await asyncio.sleep(0.01)
    finally:
        await collector.stop()

    assert (collector.rounds.failed, collector.figures.collected) == (1, 1)
    assert collector.rounds.handled == 1
    assert await asyncio.to_thread(files_under, tmp_path) == []
    assert "blob collection failed" in caplog.text
    # Stopped: no further round claims anything.
    rounds = len(queue.claims)
    await asyncio.sleep(0.05)
    assert len(queue.claims) == rounds


async def test_stopping_a_collector_that_never_started_is_harmless(
    store: LocalBlobStore,
) -> None:
    collector = BlobCollector(FakeQueue([]), store, interval_seconds=60)

    await collector.stop()

    assert collector.rounds.failed == 0


# --- ImageService uploads against a concurrent collection ---------------------------------------


def png_bytes(seed: str) -> bytes:
    """A small PNG of random pixels (distinct bytes per seed)."""
    noise = random.Random(seed).randbytes(16 * 12 * 3)
    buffer = io.BytesIO()
    PillowImage.frombytes("RGB", (16, 12), noise).save(buffer, "PNG")
    return buffer.getvalue()


class CountingBlobs(LocalBlobStore):
    """LocalBlobStore that counts its writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts = 0

    async def put(self, key: str, data: bytes) -> None:
        """Count, then store."""
        self.puts += 1
        await super().put(key, data)


class RacingMedia(FakeMedia):
    """A media store whose create_image lets a collector act on every blob of the upload
    before recording it."""

    def __init__(self, blobs: LocalBlobStore, collect: str) -> None:
        super().__init__()
        self._blobs = blobs
        self._collect = collect

    async def create_image(self, image: NewImage, *, quota_bytes: int) -> Image:
        """Act on the blobs as a concurrent collector would, then record the image."""
        keys = sorted({r.sha256 for r in image.renditions})
        for key in keys:
            if self._collect == "set aside":
                await self._blobs.set_aside(key)
            elif self._collect == "deleted":
                await asyncio.to_thread(os.unlink, self._blobs.path_for(key))
        if self._collect == "whole round":
            # The round ends before the record: no image names the bytes, so they go.
            await BlobCollector(FakeQueue(keys), self._blobs, interval_seconds=60).collect_once()
        return await super().create_image(image, quota_bytes=quota_bytes)


@pytest.mark.parametrize("collect", ["set aside", "deleted", "whole round"])
async def test_an_upload_writes_its_bytes_again_when_they_vanished_meanwhile(
    tmp_path: Path, collect: str
) -> None:
    blobs = CountingBlobs(tmp_path / "blobs")
    images = image_service(tmp_path, RacingMedia(blobs, collect), blobs=blobs)

    view = await images.upload("owner-1", chunks_of(png_bytes(collect)))

    distinct = {r.sha256 for r in view.image.renditions}
    assert blobs.puts == 2 * len(distinct)
    for rendition in view.image.renditions:
        assert await blobs.exists(rendition.sha256)


async def test_an_upload_whose_bytes_stayed_writes_them_once(tmp_path: Path) -> None:
    blobs = CountingBlobs(tmp_path / "blobs")
    images = image_service(tmp_path, RacingMedia(blobs, "nothing"), blobs=blobs)

    view = await images.upload("owner-1", chunks_of(png_bytes("undisturbed")))

    assert blobs.puts == len({r.sha256 for r in view.image.renditions})


async def test_the_collector_then_keeps_the_bytes_of_the_new_upload(tmp_path: Path) -> None:
    # After the upload wrote its bytes again, the next claim of the blobs finds the new image.
    blobs = CountingBlobs(tmp_path / "blobs")
    images = image_service(tmp_path, RacingMedia(blobs, "set aside"), blobs=blobs)
    view = await images.upload("owner-1", chunks_of(png_bytes("collected and uploaded")))
    keys = sorted({r.sha256 for r in view.image.renditions})
    queue = FakeQueue(keys, referenced=set(keys))

    await BlobCollector(queue, blobs, interval_seconds=60).collect_once()

    assert await asyncio.to_thread(files_under, tmp_path / "blobs") == sorted(
        blobs.path_for(key) for key in keys
    )


async def test_the_orphan_scan_queues_old_unnamed_blobs_only(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    named, orphan = await stored(blobs, b"named", b"orphan")
    queue = FakeQueue([], referenced={named})
    collector = BlobCollector(queue, blobs, interval_seconds=60, orphan_grace_seconds=0)

    assert await collector.scan_orphans() == 1
    assert queue.queued == [orphan]
    assert collector.figures.orphans_queued == 1
    young = BlobCollector(queue, blobs, interval_seconds=60, orphan_grace_seconds=3600)
    assert await young.scan_orphans() == 0
