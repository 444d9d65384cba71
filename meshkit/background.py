"""Work that runs in the background of a service's event loop: one task, started once, stopped
by cancelling it; and the loop of a job that runs every so often and survives its failures, with
figures of its rounds for the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
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


@dataclass
class RoundFigures:
    """How the rounds of one repeated job went; plain counters read when metrics are scraped."""

    rounds: int = 0
    """Rounds that ended without an error."""
    failed: int = 0
    """Rounds that raised (logged; the next round tries again)."""
    seconds: float = 0.0
    """Time spent in rounds, failed ones included."""
    last_success_unix: float = 0.0
    """When the last round without an error ended (Unix time); 0 before the first one."""
    handled: int = 0
    """What the rounds did, in the job's own unit (rows deleted, blobs collected...)."""


class Jobs:
    """The repeated jobs of one process and the figures of their rounds, by job name."""

    def __init__(self) -> None:
        self._figures: dict[str, RoundFigures] = {}

    def figures(self, job: str) -> RoundFigures:
        """The figures of the named job, made on first use (one object per name)."""
        return self._figures.setdefault(job, RoundFigures())

    def items(self) -> list[tuple[str, RoundFigures]]:
        """Every job's name with its figures, sorted by name."""
        return sorted(self._figures.items())


async def repeat(
    one_round: Callable[[], Awaitable[None]],
    *,
    interval_seconds: float,
    log: logging.Logger,
    failure: str,
    figures: RoundFigures | None = None,
) -> None:
    """Run one_round now and then every interval_seconds, forever; a round that fails is logged
    (as failure) and the next one tries again. Each round is counted in figures, when given."""
    counted = figures if figures is not None else RoundFigures()
    while True:
        started = time.monotonic()
        try:
            await one_round()
        except Exception:  # a dependency may be down; the next round tries again
            counted.failed += 1
            log.warning(failure, exc_info=True)
        else:
            counted.rounds += 1
            counted.last_success_unix = time.time()
        finally:
            counted.seconds += time.monotonic() - started
        await asyncio.sleep(interval_seconds)
