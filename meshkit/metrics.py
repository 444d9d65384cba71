"""Prometheus metrics of one service process, served over HTTP on their own port.

Each process has its own registry (no global state: tests host several services in one
process). Collectors read plain counters at scrape time, so the hot path pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from meshkit.background import Jobs


class MetricsEndpoint:
    """A running /metrics endpoint; close() stops it."""

    def __init__(self, server: WSGIServer, thread: Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The port it listens on (useful when 0 was asked for)."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and wait for the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def registry_with(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry holding the process's standard collectors plus the given ones."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)
    return registry


def serve_metrics(host: str, port: int, collectors: Iterable[Collector]) -> MetricsEndpoint:
    """Serve the collectors (and process figures) at http://host:port/metrics."""
    server, thread = start_http_server(port, addr=host, registry=registry_with(collectors))
    return MetricsEndpoint(server, thread)


class JobsCollector(Collector):
    """The rounds of a process's repeated background jobs (sweepers, collectors, expiry), by
    job name, read when Prometheus scrapes."""

    def __init__(self, jobs: Jobs) -> None:
        self._jobs = jobs

    def collect(self) -> Iterator[Metric]:
        """Yield the current figures of every job that has been set up."""
        rounds = CounterMetricFamily(
            "meshgram_job_rounds",
            "Rounds of a repeated background job, by outcome: ok, or failed (logged, retried at "
            "the next interval).",
            labels=["job", "outcome"],
        )
        seconds = CounterMetricFamily(
            "meshgram_job_round_seconds", "Time spent in the job's rounds.", labels=["job"]
        )
        handled = CounterMetricFamily(
            "meshgram_job_handled",
            "What the job's rounds did, in its own unit (rows deleted, blobs collected...).",
            labels=["job"],
        )
        last = GaugeMetricFamily(
            "meshgram_job_last_success_timestamp_seconds",
            "When the job's last round without an error ended (Unix time; 0 before the first).",
            labels=["job"],
        )
        for name, figures in self._jobs.items():
            rounds.add_metric([name, "ok"], figures.rounds)
            rounds.add_metric([name, "failed"], figures.failed)
            seconds.add_metric([name], figures.seconds)
            handled.add_metric([name], figures.handled)
            last.add_metric([name], figures.last_success_unix)
        yield from (rounds, seconds, handled, last)
