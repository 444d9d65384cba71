"""Work that runs in the background of a service's event loop: one task, started once, stopped
by cancelling it; and the loop of a job that runs every so often and survives its failures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


class BackgroundTask:
    """A named background task of the running event loop, started at most once at a time."""

    def __init__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> bool:
        """Start the task unless it runs already; tell whether it was started now."""
        if self._task is not None:
            return False
        self._task = asyncio.create_task(self._run(), name=self._name)
        return True

    async def stop(self, *, grace_seconds: float = 0.0) -> None:
        """Let the task finish on its own for up to grace_seconds, then cancel it and wait for
        it to end (a task that was never started is fine)."""
        task, self._task = self._task, None
        if task is None:
            return
        if grace_seconds > 0:
            await asyncio.wait({task}, timeout=grace_seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def repeat(
    one_round: Callable[[], Awaitable[None]],
    *,
    interval_seconds: float,
    log: logging.Logger,
    failure: str,
    on_failure: Callable[[], None] | None = None,
) -> None:
    """Run one_round now and then every interval_seconds, forever; a round that fails is logged
    (as failure) and the next one tries again."""
    while True:
        try:
            await one_round()
        except Exception:  # a dependency may be down; the next round tries again
            if on_failure is not None:
                on_failure()
            log.warning(failure, exc_info=True)
        await asyncio.sleep(interval_seconds)
