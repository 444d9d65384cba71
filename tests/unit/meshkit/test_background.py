"""meshkit.background: one task started once and stopped by cancelling it, and a repeated job
that survives its failures."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from meshkit.background import BackgroundTask, Jobs, RoundFigures, repeat


async def test_a_task_starts_once_and_stops_by_cancellation() -> None:
    started = asyncio.Event()
    runs = 0

    async def run() -> None:
        """Count the start and wait forever."""
        nonlocal runs
        runs += 1
        started.set()
        await asyncio.Event().wait()

    task = BackgroundTask("forever", run)
    assert task.start() is True
    assert task.start() is False
    await started.wait()
    await task.stop()
    assert runs == 1
    # Stopped, it may start again; stopping twice is harmless.
    assert task.start() is True
    await task.stop()
    await task.stop()


async def test_stop_lets_a_task_finish_within_its_grace() -> None:
    finished = False

    async def run() -> None:
        """Finish after a short while."""
        nonlocal finished
        await asyncio.sleep(0.05)
        finished = True

    task = BackgroundTask("short", run)
    task.start()
    await task.stop(grace_seconds=5)
    assert finished


async def test_repeat_survives_failing_rounds(caplog: pytest.LogCaptureFixture) -> None:
    rounds = 0
    done = asyncio.Event()

    async def one_round() -> None:
        """Fail twice, then succeed."""
        nonlocal rounds
        rounds += 1
        if rounds <= 2:
            raise OSError("down")
        done.set()

    figures = RoundFigures()
    log = logging.getLogger("tests.background")
    job = asyncio.create_task(
        repeat(one_round, interval_seconds=0.01, log=log, failure="round failed", figures=figures)
    )
    await asyncio.wait_for(done.wait(), timeout=5)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert (figures.failed, figures.rounds) == (2, 1)
    assert figures.seconds > 0
    assert figures.last_success_unix == pytest.approx(time.time(), abs=5)
    assert [r.message for r in caplog.records if r.name == "tests.background"] == [
        "round failed"
    ] * 2


def test_jobs_keep_one_figures_object_per_name() -> None:
    jobs = Jobs()
    jobs.figures("sweep").rounds += 1
    jobs.figures("collect").failed += 1
    jobs.figures("sweep").rounds += 1
    assert [(name, f.rounds, f.failed) for name, f in jobs.items()] == [
        ("collect", 0, 1),
        ("sweep", 2, 0),
    ]
