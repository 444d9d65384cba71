"""Per-RPC figures of one service process: calls by final status code, their latency and the
calls in flight, kept as plain numbers and turned into Prometheus metrics only when scraped.

The serving event loop is the only writer; the /metrics thread only reads. Reading a number
while it is being increased gives either the old or the new value, which is all a scrape needs.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator

import grpc
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Upper bounds in seconds: from a cached read (well under a millisecond) to the edge's longest
# timeouts; a call above the last bound only shows in the +Inf bucket.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

_CODES: tuple[grpc.StatusCode, ...] = tuple(grpc.StatusCode)
_CODE_INDEX: dict[grpc.StatusCode, int] = {code: i for i, code in enumerate(_CODES)}


def split_method(full_method: str) -> tuple[str, str]:
    """Split "/package.Service/Method" into ("package.Service", "Method"); a name without that
    shape is kept whole as the method of service ""."""
    service, slash, method = full_method.lstrip("/").rpartition("/")
    if not slash or not service or not method:
        return "", full_method
    return service, method


class MethodFigures:
    """The running figures of one RPC method."""

    __slots__ = ("buckets", "codes", "in_flight", "method", "seconds", "service")

    def __init__(self, service: str, method: str) -> None:
        self.service = service
        self.method = method
        # Fixed-size lists: the scraping thread never sees them grow.
        self.codes = [0] * len(_CODES)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0
        self.in_flight = 0

    def finished(self, code: grpc.StatusCode, seconds: float) -> None:
        """Count one call that started with RpcMetrics.started and ended with code after
        seconds."""
        self.in_flight -= 1
        self.codes[_CODE_INDEX[code]] += 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds


class RpcMetrics:
    """Figures of every RPC method this process has served (unknown methods never reach
    the interceptor, so the set of methods stays bounded)."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodFigures] = {}
        # Only taken to add a method and to copy the table for a scrape, never per call.
        self._lock = threading.Lock()

    def started(self, full_method: str) -> MethodFigures:
        """Count a call of full_method ("/package.Service/Method") as in flight and return the
        figures to pass its end to."""
        figures = self._methods.get(full_method)
        if figures is None:
            figures = self._add(full_method)
        figures.in_flight += 1
        return figures

    def methods(self) -> list[MethodFigures]:
        """The figures of every method seen so far, by service and method name."""
        with self._lock:
            table = list(self._methods.values())
        return sorted(table, key=lambda figures: (figures.service, figures.method))

    def _add(self, full_method: str) -> MethodFigures:
        """Create the figures of a method seen for the first time."""
        with self._lock:
            figures = self._methods.get(full_method)
            if figures is None:
                figures = MethodFigures(*split_method(full_method))
                self._methods[full_method] = figures
            return figures


class RpcCollector(Collector):
    """Reads the per-RPC figures when Prometheus scrapes."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """Yield calls by code, the latency histogram and the calls in flight."""
        calls = CounterMetricFamily(
            "meshgram_rpc_calls",
            "Finished calls by gRPC service, method and final status code (streams count when "
            "they end).",
            labels=["service", "method", "code"],
        )
        latency = HistogramMetricFamily(
            "meshgram_rpc_duration_seconds",
            "Time from a call's arrival in the service to its end, by service and method.",
            labels=["service", "method"],
        )
        in_flight = GaugeMetricFamily(
            "meshgram_rpc_in_flight",
            "Calls started and not yet ended, by service and method.",
            labels=["service", "method"],
        )
        for figures in self._metrics.methods():
            names = [figures.service, figures.method]
            for code, count in zip(_CODES, list(figures.codes), strict=True):
                if count:
                    calls.add_metric([*names, code.name], count)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(
                (*(f"{b:g}" for b in LATENCY_BUCKETS), "+Inf"), list(figures.buckets), strict=True
            ):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric(names, buckets, figures.seconds)
            in_flight.add_metric(names, figures.in_flight)
        yield calls
        yield latency
        yield in_flight
