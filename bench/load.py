"""A closed-loop load generator: N concurrent workers call as fast as replies come back.

Each worker process runs its share of the workers on one asyncio loop; latencies are collected
per request and merged, so percentiles are exact rather than estimated from histograms.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Call = Callable[[], Awaitable[bool]]
CallFactory = Callable[[], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]]


@dataclass(frozen=True)
class Result:
    """Outcome of one scenario."""

    name: str
    concurrency: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def requests(self) -> int:
        """Successful requests."""
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds (q in 0..100)."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]

    @property
    def p50(self) -> float:
        """Median latency in milliseconds."""
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99(self) -> float:
        """99th percentile latency in milliseconds."""
        return self.percentile(99)


async def _drive(
    factory: CallFactory, workers: int, warmup: float, duration: float
) -> tuple[list[float], int, float]:
    """Run `workers` closed loops; measure only after the warm-up."""
    call, close = await factory()
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def worker() -> None:
        nonlocal errors
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                return
            ok = await call()
            ended = time.perf_counter()
            if began >= measure_from:
                if ok:
                    latencies.append((ended - began) * 1000)
                else:
                    errors += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    await close()
    return latencies, errors, duration


def _process_main(
    factory: CallFactory,
    workers: int,
    warmup: float,
    duration: float,
    queue: multiprocessing.Queue[tuple[list[float], int, float]],
) -> None:
    """Entry point of one load process."""
    queue.put(asyncio.run(_drive(factory, workers, warmup, duration)))


def run(
    name: str,
    factory: CallFactory,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 2.0,
    processes: int = 1,
) -> Result:
    """Run a scenario with `concurrency` workers spread over `processes` load processes."""
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[tuple[list[float], int, float]] = context.Queue()
    shares = [
        concurrency // processes + (1 if i < concurrency % processes else 0)
        for i in range(processes)
    ]
    procs = [
        context.Process(target=_process_main, args=(factory, share, warmup, duration, queue))
        for share in shares
        if share
    ]
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    errors = 0
    for _ in procs:
        part, failed, _seconds = queue.get()
        latencies.extend(part)
        errors += failed
    for proc in procs:
        proc.join()
    return Result(name, concurrency, duration, latencies, errors)
