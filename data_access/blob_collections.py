"""The queue of blobs that may have lost their last image, worked by storage_svc's collector
(storage_svc/collector.py says why its order of steps is safe).

A blob is queued in the transaction that deletes the images naming it; the collector claims a
batch for a while (claims that run out can be claimed again, so a collector that dies loses
nothing), sets each file aside, and completes the blob here, which takes it off the queue and
says whether any image names it now.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.database import Database
from data_access.validation import Violations

CLAIM_MAX = 1000
LEASE_MAX = timedelta(hours=1)


class BlobCollections:
    """Claims and completes queued blobs."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def claim(self, limit: int, lease: timedelta) -> list[str]:
        """Claim up to limit queued blobs (oldest first) nobody holds, for lease; their keys."""
        check = Violations()
        if not 1 <= limit <= CLAIM_MAX:
            check.add("limit", f"must be 1 to {CLAIM_MAX}")
        if not timedelta(seconds=1) <= lease <= LEASE_MAX:
            check.add("lease", "must be 1 second to 1 hour")
        check.raise_if_any()
        async with self._database.transaction() as session:
            rows = await session.scalars(_CLAIM, {"limit": limit, "lease": lease.total_seconds()})
            return list(rows)

    async def complete(self, sha256: str) -> bool:
        """Take a blob off the queue and tell whether an image names it (then it must stay)."""
        check = Violations()
        key = check.sha256_hex("sha256", sha256)
        check.raise_if_any()
        async with self._database.transaction() as session:
            await session.execute(_DONE, {"key": key})
            return bool(await session.scalar(_REFERENCED, {"key": key}))


async def queue_blobs_of(session: AsyncSession, owner: uuid.UUID) -> None:
    """Queue the blobs of an account's images, in the transaction that is about to delete them."""
    await session.execute(_QUEUE_OWNER, {"owner": owner})


_CLAIM = text(
    """
    UPDATE blob_collections SET claimed_until = now() + make_interval(secs => :lease)
    WHERE sha256 IN (
        SELECT sha256 FROM blob_collections
        WHERE claimed_until IS NULL OR claimed_until < now()
        ORDER BY queued_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING sha256
    """
)
_DONE = text("DELETE FROM blob_collections WHERE sha256 = :key")
# A blob is in use while a kept original or a rendition names it.
_REFERENCED = text(
    "SELECT EXISTS (SELECT 1 FROM images WHERE sha256 = :key AND original_kept) "
    "OR EXISTS (SELECT 1 FROM image_renditions WHERE sha256 = :key)"
)
_QUEUE_OWNER = text(
    "INSERT INTO blob_collections (sha256) "
    "SELECT sha256 FROM images WHERE owner_id = :owner AND original_kept "
    "UNION SELECT r.sha256 FROM image_renditions r JOIN images i ON i.id = r.image_id "
    "WHERE i.owner_id = :owner "
    "ON CONFLICT (sha256) DO UPDATE SET claimed_until = NULL"
)
