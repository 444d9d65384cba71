"""The blob collector: removes the bytes of images whose records are gone (their account was
deleted for good), unless another image still uses the same bytes.

Blobs are content-addressed, so two images (of any accounts) with the same bytes share one blob;
a blob may only go once no image record names it. data_access queues the candidates in the
transaction that deletes their records (blob_collections). The collector claims a batch, and for
each blob: sets the file aside (an atomic rename), then asks data_access whether any image still
names the blob, which also takes the blob off the queue; the file is then deleted, or put back.

Why this order is safe against an upload of the same bytes at the same time: an upload writes
the blob (or finds it there), records the image, and then checks that the blob is still in place,
writing it again if not (ImageService.store). If the upload's record committed before the
collector asked, the collector sees it and puts the file back; if not, the upload's check comes
after the file was set aside, and the upload writes the bytes again.

Bytes can also be orphaned without any record ever naming them: an upload that crashed, or was
refused (its quota), after writing its blobs. Now and then the collector lists the blobs older
than a grace period and has data_access queue those no image names; they then go the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from meshkit.background import BackgroundTask, RoundFigures, repeat

log = logging.getLogger("storage_svc.collector")

CLAIM_BATCH = 100
CLAIM_LEASE_SECONDS = 300.0
SCAN_BATCH = 500


class CollectionQueue(Protocol):
    """The queue of blobs that may have lost their last image (data_access's MediaStoreService)."""

    async def claim(self, limit: int, lease_seconds: float) -> list[str]:
        """Claim up to limit queued blob keys for lease_seconds; return them."""
        ...

    async def complete(self, key: str) -> bool:
        """Take a key off the queue; return whether an image still names the blob."""
        ...

    async def queue_unreferenced(self, keys: Sequence[str]) -> list[str]:
        """Queue those of keys that no image names; return them."""
        ...


class CollectableBlobs(Protocol):
    """What the collector needs of the blob store."""

    async def set_aside(self, key: str) -> None:
        """Move the blob out of reach (idempotent: a blob already set aside stays so)."""
        ...

    async def put_back(self, key: str) -> None:
        """Undo set_aside."""
        ...

    async def discard(self, key: str) -> None:
        """Delete a blob that was set aside."""
        ...

    def keys_older_than(self, seconds: float) -> AsyncIterator[str]:
        """Every stored key written more than seconds ago."""
        ...


@dataclass
class CollectorFigures:
    """Counters since start."""

    collected: int = 0
    kept: int = 0
    orphans_queued: int = 0


class BlobCollector:
    """Collects unreferenced blobs in the background, a batch every interval."""

    def __init__(
        self,
        queue: CollectionQueue,
        blobs: CollectableBlobs,
        *,
        interval_seconds: float,
        orphan_scan_seconds: float = 3600.0,
        orphan_grace_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        rounds: RoundFigures | None = None,
    ) -> None:
        self._queue = queue
        self._blobs = blobs
        self._interval = interval_seconds
        self._scan_every = orphan_scan_seconds
        self._grace = orphan_grace_seconds
        self._clock = clock
        self._next_scan = 0.0
        self._background = BackgroundTask("blob collector", self._run)
        self.figures = CollectorFigures()
        self.rounds = rounds if rounds is not None else RoundFigures()
        """Its rounds: how many, failed ones (retried at the next interval), time spent."""

    async def scan_orphans(self) -> int:
        """Queue every blob older than the grace period that no image names; return how many.
        The grace period covers an upload between writing its blobs and recording them."""
        queued = 0
        batch: list[str] = []
        async for key in self._blobs.keys_older_than(self._grace):
            batch.append(key)
            if len(batch) == SCAN_BATCH:
                queued += len(await self._queue.queue_unreferenced(batch))
                batch = []
        if batch:
            queued += len(await self._queue.queue_unreferenced(batch))
        self.figures.orphans_queued += queued
        return queued

    async def collect_once(self) -> int:
        """Handle one claimed batch; return how many blobs were deleted."""
        deleted = 0
        for key in await self._queue.claim(CLAIM_BATCH, CLAIM_LEASE_SECONDS):
            await self._blobs.set_aside(key)
            try:
                referenced = await self._queue.complete(key)
            except BaseException:
                # Whether the queue still holds the blob is unknown (the answer may be lost after
                # data_access took it off): keeping the bytes is the safe side.
                await self._blobs.put_back(key)
                raise
            if referenced:
                await self._blobs.put_back(key)
                self.figures.kept += 1
            else:
                await self._blobs.discard(key)
                self.figures.collected += 1
                deleted += 1
        return deleted

    def start(self) -> None:
        """Start collecting in the background of the running event loop."""
        self._background.start()

    async def stop(self) -> None:
        """Stop collecting and wait for the background task to end."""
        await self._background.stop()

    async def _run(self) -> None:
        """Collect now and then every interval; a failed round is logged and retried later (the
        claims it held expire and are claimed again; a blob whose answer was lost is kept)."""
        await repeat(
            self._round,
            interval_seconds=self._interval,
            log=log,
            failure="blob collection failed",
            figures=self.rounds,
        )

    async def _round(self) -> None:
        """One round (with an orphan scan when one is due), with its outcome in the log."""
        if self._clock() >= self._next_scan:
            self._next_scan = self._clock() + self._scan_every
            orphans = await self.scan_orphans()
            if orphans:
                log.info("orphaned blobs queued: %d", orphans, extra={"count": orphans})
        deleted = await self.collect_once()
        if deleted:
            self.rounds.handled += deleted
            log.info("blobs collected: %d", deleted, extra={"count": deleted})
