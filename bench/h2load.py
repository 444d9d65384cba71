"""Drive the edge with h2load (nghttp2), a native load generator, and read its per-request log.

A native generator keeps the measuring process from eating the CPU the mesh needs: on a
2-core machine a Python client would spend a third of a core producing the load.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    """Per-request outcomes of one h2load run (after its warm-up)."""

    seconds: float
    statuses: list[int]
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return len(self.latencies_ms) / self.seconds

    def percentile(self, q: float) -> float:
        """Latency at percentile q (0..100), nearest rank, in milliseconds."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    @property
    def p50(self) -> float:
        """Median latency in milliseconds."""
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def http_errors(self) -> int:
        """Requests answered with an HTTP status other than 2xx."""
        return sum(1 for status in self.statuses if not 200 <= status < 300)


def binary() -> str:
    """Path of h2load, or a clear error telling how to install it."""
    found = shutil.which("h2load")
    if found is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client (make bench does this)")
    return found


def run(
    url: str | Sequence[str],
    *,
    connections: int,
    streams: int = 1,
    seconds: float,
    warmup: float,
    headers: dict[str, str],
    body: bytes | None = None,
    http1: bool = False,
) -> Run:
    """Load url (or each of several URLs in turn, same host) for `seconds` after `warmup` with
    connections x streams requests in flight."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "requests.tsv"
        command = [
            binary(),
            f"--duration={round(seconds)}",
            *([f"--warm-up-time={round(warmup)}"] if warmup else []),
            f"--clients={connections}",
            f"--max-concurrent-streams={streams}",
            "--threads=1",
            f"--log-file={log}",
        ]
        if http1:
            command.append("--h1")
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        if body is not None:
            data = Path(folder) / "body"
            data.write_bytes(body)
            command.append(f"--data={data}")
        if isinstance(url, str):
            command.append(url)
        else:
            uris = Path(folder) / "uris"
            uris.write_text("\n".join(url) + "\n")
            command.append(f"--input-file={uris}")
        subprocess.run(command, check=True, capture_output=True, text=True)
        statuses: list[int] = []
        latencies: list[float] = []
        for line in log.read_text().splitlines():
            _start, status, micros = line.split("\t")[:3]
            statuses.append(int(status))
            latencies.append(int(micros) / 1000)
    return Run(seconds=seconds, statuses=statuses, latencies_ms=latencies)
