"""A live per-RPC summary of a running mesh: `python -m tools.metrics_summary`.

Scrapes every service process's /metrics twice, `--interval` seconds apart, and prints per gRPC
service and method the calls per second, the share of calls that failed (any code but OK) and of
those that failed on the server's side, and the median and 99th percentile latency estimated
from the histogram buckets of that interval; then Envoy's own totals from its admin
/stats/prometheus. Refreshes until Ctrl-C unless --once. docs/metrics.md describes the figures.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

from tools.mesh import SERVICES, MeshPorts

# Codes that say the server (or what it depends on) failed, rather than the request.
SERVER_ERROR_CODES = frozenset({"INTERNAL", "UNKNOWN", "UNAVAILABLE", "DEADLINE_EXCEEDED"})
RPC_CALLS = "meshgram_rpc_calls_total"
RPC_BUCKETS = "meshgram_rpc_duration_seconds_bucket"
RPC_FAMILY = "meshgram_rpc_duration_seconds"
# tools/mesh.py accepts 1 to 8 replicas of a service.
MAX_REPLICAS = 8
SCRAPE_TIMEOUT_SECONDS = 1.0
# Envoy's HTTP connection manager of its admin interface, left out of the edge's totals.
ENVOY_ADMIN_PREFIX = "admin"

Labels = tuple[tuple[str, str], ...]
"""A sample's labels, sorted by name."""


@dataclass(frozen=True)
class Scrape:
    """One scrape of one endpoint: sample values by sample name and labels."""

    samples: Mapping[str, Mapping[Labels, float]]
    families: frozenset[str]
    """Names of the metric families present, samples or not."""


@dataclass(frozen=True)
class Target:
    """A /metrics endpoint to scrape."""

    name: str
    address: str
    """host:port"""
    required: bool
    """Report it when it does not answer (spare replica ports are skipped quietly)."""

    @property
    def label(self) -> str:
        """How the summary names it: its name and address, or the address alone."""
        return self.address if self.name == self.address else f"{self.name} {self.address}"


@dataclass(frozen=True)
class RpcRow:
    """One RPC's figures over an interval, summed over every process that serves it."""

    service: str
    method: str
    calls: float
    per_second: float
    error_ratio: float | None
    """Share of calls that ended with any code but OK; None without calls."""
    server_error_ratio: float | None
    """Share that ended with INTERNAL, UNKNOWN, UNAVAILABLE or DEADLINE_EXCEEDED."""
    p50_seconds: float | None
    p99_seconds: float | None


@dataclass(frozen=True)
class EnvoyRow:
    """Envoy's figures of one listener (downstream) or upstream cluster over an interval."""

    name: str
    per_second: float
    ratio_4xx: float | None
    ratio_5xx: float | None
    p50_seconds: float | None
    p99_seconds: float | None


def parse(text: str) -> Scrape:
    """Read a Prometheus text exposition; ValueError when it is not one."""
    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = float(sample.value)
    return Scrape(samples=dict(samples), families=frozenset(families))


def quantile(buckets: Iterable[tuple[float, float]], q: float) -> float | None:
    """Estimate the q-quantile (0 < q < 1) of a histogram given as (upper bound, cumulative
    count) pairs, interpolating linearly inside the bucket that holds it, the way Prometheus's
    histogram_quantile does; None without observations. A quantile in the +Inf bucket is
    reported as the largest finite bound."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower if lower > 0 else None
            inside = cumulative - below
            share = (rank - below) / inside if inside > 0 else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, cumulative
    return None


def _increase(before: float, after: float) -> float:
    """How much a counter grew; a smaller value means the process restarted from zero."""
    return after - before if after >= before else after


def _series(scrape: Scrape, name: str) -> Mapping[Labels, float]:
    """The samples named name; the parser calls a counter's samples name_total when the
    exposition (Envoy's, for one) left the suffix out."""
    found = scrape.samples.get(name)
    if found is None:
        found = scrape.samples.get(f"{name}_total", {})
    return found


def _increases(before: Scrape, after: Scrape, name: str) -> dict[Labels, float]:
    """The increase of every series of sample name between two scrapes of one endpoint."""
    earlier = _series(before, name)
    return {
        labels: _increase(earlier.get(labels, 0.0), value)
        for labels, value in _series(after, name).items()
    }


def _sum_by(
    pairs: Sequence[tuple[Scrape, Scrape]], name: str, keys: Sequence[str]
) -> dict[tuple[str, ...], float]:
    """Increases of sample name summed over endpoints and over every label but keys."""
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for before, after in pairs:
        for labels, value in _increases(before, after, name).items():
            found = dict(labels)
            sums[tuple(found.get(key, "") for key in keys)] += value
    return sums


def _bucket_quantiles(
    buckets: Mapping[tuple[str, ...], float], key: tuple[str, ...], scale: float
) -> tuple[float | None, float | None]:
    """p50 and p99 of the histogram under key, whose last key element is the bucket bound;
    bounds are multiplied by scale (Envoy's are milliseconds)."""
    series = [
        (float(bound) * scale, count)
        for (*rest, bound), count in buckets.items()
        if tuple(rest) == key
    ]
    return quantile(series, 0.5), quantile(series, 0.99)


def _ratio(part: float, whole: float) -> float | None:
    """part / whole, None when whole is 0."""
    return part / whole if whole > 0 else None


def rpc_rows(pairs: Sequence[tuple[Scrape, Scrape]], seconds: float) -> list[RpcRow]:
    """Per-RPC figures from (before, after) scrapes of each process taken seconds apart, by
    service and method; every RPC any process has counted gets a row, idle or not."""
    calls = _sum_by(pairs, RPC_CALLS, ("service", "method", "code"))
    buckets = _sum_by(pairs, RPC_BUCKETS, ("service", "method", "le"))
    methods = sorted({(service, method) for service, method, _ in (*calls, *buckets)})
    rows = []
    for service, method in methods:
        by_code = {code: n for (s, m, code), n in calls.items() if (s, m) == (service, method)}
        total = sum(by_code.values())
        failed = total - by_code.get("OK", 0.0)
        server = sum(n for code, n in by_code.items() if code in SERVER_ERROR_CODES)
        p50, p99 = _bucket_quantiles(buckets, (service, method), 1.0)
        rows.append(
            RpcRow(
                service=service,
                method=method,
                calls=total,
                per_second=total / seconds,
                error_ratio=_ratio(failed, total),
                server_error_ratio=_ratio(server, total),
                p50_seconds=p50,
                p99_seconds=p99,
            )
        )
    return rows


def envoy_rows(before: Scrape, after: Scrape, seconds: float) -> list[EnvoyRow]:
    """Envoy's totals over the interval: each HTTP listener but the admin one (requests from
    clients) and each upstream cluster (requests Envoy sent to a service)."""
    pair = [(before, after)]
    rows = []
    for kind, prefix, label in (
        ("downstream", "envoy_http_downstream_rq", "envoy_http_conn_manager_prefix"),
        ("upstream", "envoy_cluster_upstream_rq", "envoy_cluster_name"),
    ):
        totals = _sum_by(pair, f"{prefix}_total", (label,))
        classes = _sum_by(pair, f"{prefix}_xx", (label, "envoy_response_code_class"))
        times = _sum_by(pair, f"{prefix}_time_bucket", (label, "le"))
        for (name,), total in sorted(totals.items()):
            if kind == "downstream" and name == ENVOY_ADMIN_PREFIX:
                continue
            p50, p99 = _bucket_quantiles(times, (name,), 0.001)
            rows.append(
                EnvoyRow(
                    name=f"{name} ({kind})",
                    per_second=total / seconds,
                    ratio_4xx=_ratio(classes.get((name, "4"), 0.0), total),
                    ratio_5xx=_ratio(classes.get((name, "5"), 0.0), total),
                    p50_seconds=p50,
                    p99_seconds=p99,
                )
            )
    return rows


def default_targets(ports: MeshPorts) -> list[Target]:
    """The metrics ports `make run` gives every replica a service may have; replica 0 of each
    service is expected to answer."""
    return [
        Target(f"{service}#{replica}", f"127.0.0.1:{ports.metrics(service, replica)}", replica == 0)
        for service in SERVICES
        for replica in range(MAX_REPLICAS)
    ]


def fetch(address: str, path: str, timeout: float = SCRAPE_TIMEOUT_SECONDS) -> Scrape | str:
    """Scrape http://address/path: the parsed figures, or why there are none."""
    url = f"http://{address}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
    except (OSError, urllib.error.URLError) as exc:
        return f"not answering ({getattr(exc, 'reason', exc)})"
    try:
        return parse(text)
    except ValueError as exc:
        return f"unreadable figures ({exc})"


@dataclass(frozen=True)
class Round:
    """One scrape of every target and of Envoy, taken at one moment."""

    at: float
    processes: Mapping[Target, Scrape | str]
    envoy: Scrape | str | None


def scrape_all(targets: Sequence[Target], envoy: str | None, clock: Callable[[], float]) -> Round:
    """Scrape every target and Envoy's admin (when given) at once."""
    at = clock()
    with ThreadPoolExecutor(max_workers=16) as pool:
        scraped = pool.map(lambda target: fetch(target.address, "/metrics"), targets)
        envoy_scrape = pool.submit(fetch, envoy, "/stats/prometheus") if envoy else None
        processes = dict(zip(targets, scraped, strict=True))
        return Round(at, processes, envoy_scrape.result() if envoy_scrape else None)


def _pct(ratio: float | None) -> str:
    """A ratio as a percentage, "-" when undefined."""
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def _ms(seconds: float | None) -> str:
    """Seconds as milliseconds, "-" when undefined."""
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def report(before: Round, after: Round, envoy: str | None, interval: float) -> list[str]:
    """The lines of one summary from two rounds of scrapes."""
    seconds = after.at - before.at
    if seconds <= 0:
        seconds = interval
    pairs: list[tuple[Scrape, Scrape]] = []
    notes: list[str] = []
    old: list[str] = []
    for target, scrape in after.processes.items():
        earlier = before.processes.get(target)
        if isinstance(scrape, str) or not isinstance(earlier, Scrape):
            if target.required:
                problem = scrape if isinstance(scrape, str) else "not answering earlier"
                notes.append(f"{target.label}: {problem}")
            continue
        if RPC_FAMILY not in scrape.families:
            old.append(target.label)
        pairs.append((earlier, scrape))
    lines = [f"meshgram per-RPC figures over {seconds:.1f} s from {len(pairs)} process(es)"]
    lines += notes
    if old:
        lines.append(
            "no per-RPC figures (started before they existed; restart to see them): "
            + ", ".join(old)
        )
    table = [
        (
            row.service,
            row.method,
            f"{row.per_second:.2f}",
            _pct(row.error_ratio),
            _pct(row.server_error_ratio),
            _ms(row.p50_seconds),
            _ms(row.p99_seconds),
        )
        for row in rpc_rows(pairs, seconds)
    ]
    lines.append("")
    header = ("SERVICE", "METHOD", "REQ/S", "ERR", "SRV ERR", "P50 ms", "P99 ms")
    lines += _columns(header, table, text_columns=2) if table else ["(no per-RPC figures)"]
    if envoy:
        lines.append("")
        if isinstance(before.envoy, Scrape) and isinstance(after.envoy, Scrape):
            envoy_table = [
                (
                    row.name,
                    f"{row.per_second:.2f}",
                    _pct(row.ratio_4xx),
                    _pct(row.ratio_5xx),
                    _ms(row.p50_seconds),
                    _ms(row.p99_seconds),
                )
                for row in envoy_rows(before.envoy, after.envoy, seconds)
            ]
            envoy_header = (f"ENVOY {envoy}", "REQ/S", "4XX", "5XX", "P50 ms", "P99 ms")
            lines += _columns(envoy_header, envoy_table, text_columns=1)
        else:
            problem = after.envoy if isinstance(after.envoy, str) else "not answering earlier"
            lines.append(f"Envoy admin {envoy}: {problem}")
    return lines


def _columns(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, text_columns: int
) -> list[str]:
    """Rows in aligned columns under header: the first text_columns to the left, the figures
    after them to the right."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for cells in (header, *rows):
        lines.append(
            "  ".join(
                cell.ljust(width) if i < text_columns else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )
    return lines


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    ports = MeshPorts.from_env(os.environ)
    parser = argparse.ArgumentParser(
        prog="python -m tools.metrics_summary", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between the two scrapes (2)"
    )
    parser.add_argument("--once", action="store_true", help="print one summary and exit")
    parser.add_argument(
        "--targets",
        default="",
        help="host:port,... of the /metrics endpoints (default: every replica port `make run` "
        "uses that answers)",
    )
    parser.add_argument(
        "--envoy",
        default=f"127.0.0.1:{ports.admin}",
        help="host:port of Envoy's admin interface; empty to leave Envoy out "
        f"(default 127.0.0.1:{ports.admin})",
    )
    args = parser.parse_args(argv)
    if not args.interval > 0:
        parser.error("--interval must be above 0")
    return args


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Print summaries until Ctrl-C (one with --once); returns the exit status."""
    args = _arguments(argv)
    out = out or sys.stdout
    if args.targets:
        addresses = [a.strip() for a in args.targets.split(",") if a.strip()]
        targets = [Target(address, address, True) for address in addresses]
    else:
        targets = default_targets(MeshPorts.from_env(os.environ))
    envoy: str | None = args.envoy or None
    clear = out.isatty() and not args.once
    try:
        before = scrape_all(targets, envoy, clock)
        while True:
            sleep(args.interval)
            after = scrape_all(targets, envoy, clock)
            if clear:
                # Redraw in place: cursor home, clear the screen.
                out.write("\033[H\033[J")
            out.write("\n".join(report(before, after, envoy, args.interval)) + "\n")
            out.flush()
            if args.once:
                return 0
            before = after
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
