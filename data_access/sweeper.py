"""Deletes refresh tokens past their expiry, in the background, on one replica at a time.

PostgreSQL has no TTL, so rows would pile up forever. Every replica runs a sweeper; a
transaction-scoped advisory lock lets only one of them delete at a time and frees itself when
the transaction ends, even if the process dies mid-sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import delete, func, select, text

from data_access.database import Database
from data_access.models import RefreshToken

log = logging.getLogger("data_access.sweeper")

# Any constant shared by all replicas works; this one spells "rtsweep" in ASCII.
SWEEP_LOCK_KEY = 0x72747377656570
_BATCH_SIZE = 5_000


class RefreshTokenSweeper:
    """Periodically deletes expired refresh tokens (consumed and revoked ones included)."""

    def __init__(
        self, database: Database, *, interval_seconds: float, batch_size: int = _BATCH_SIZE
    ) -> None:
        self._database = database
        self._interval = interval_seconds
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None

    async def sweep_once(self) -> int | None:
        """Delete every expired token in batches; return how many, or None when another
        replica holds the sweep lock."""
        total = 0
        while True:
            deleted = await self._sweep_batch()
            if deleted is None:
                return None if total == 0 else total
            total += deleted
            if deleted < self._batch_size:
                return total

    async def _sweep_batch(self) -> int | None:
        """Delete up to one batch in one transaction; None when the lock is taken."""
        async with self._database.transaction() as session:
            locked = await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK_KEY}
            )
            if not locked:
                return None
            # Small batches keep each transaction and its row locks short; rows an RPC holds
            # locked are left for the next round instead of making the sweep wait.
            expired = (
                select(RefreshToken.id)
                .where(RefreshToken.expires_at < func.now())
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            deleted = await session.execute(
                delete(RefreshToken)
                .where(RefreshToken.id.in_(expired))
                .returning(RefreshToken.id)
                .execution_options(synchronize_session=False)
            )
            return len(deleted.all())

    def start(self) -> None:
        """Start sweeping in the background of the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="refresh-token-sweeper")

    async def stop(self) -> None:
        """Stop sweeping and wait for the background task to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        """Sweep now and then every interval; a failed sweep is logged and retried later."""
        while True:
            try:
                deleted = await self.sweep_once()
            except Exception:  # the database may be down; the next round tries again
                log.warning("refresh-token sweep failed", exc_info=True)
            else:
                if deleted:
                    log.info("expired refresh tokens deleted", extra={"count": deleted})
            await asyncio.sleep(self._interval)
