"""Drive the edge with grpc_load.mjs, a native gRPC generator on Node's http2, and read its log.

h2load (bench.h2load) sends one fixed body with fixed headers. Two scenarios need more: a
different request body each time (GetProfile over many usernames, Zipf-skewed) and a token and
body per account (a read/write mix that checks each read against the last acknowledged write).
Like h2load, the generator is a separate process without Python on its request path.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.h2load import Run

SCRIPT = Path(__file__).with_name("grpc_load.mjs")
# Seconds allowed beyond warm-up and run for start-up, draining in-flight calls and writing out.
SLACK_SECONDS = 60


@dataclass(frozen=True)
class WriteMixOutcome:
    """What the read/write mix saw: calls of each kind and reads older than the last write."""

    reads: int
    writes: int
    stale_within: int
    stale_past: int


def binary() -> str:
    """Path of node, or a clear error telling how to install it."""
    found = shutil.which("node")
    if found is None:
        raise SystemExit("node not found: install Node.js 20 or later (bench/grpc_load.mjs)")
    return found


def run_requests(
    url: str,
    *,
    connections: int,
    streams: int,
    seconds: float,
    warmup: float,
    path: str,
    headers: Mapping[str, str],
    bodies: Sequence[bytes],
    order: Sequence[int],
) -> Run:
    """Call gRPC method `path` at url, sending bodies[i] for i in order, cycling."""
    if not bodies or not order:
        raise ValueError("bodies and order must not be empty")
    if not all(0 <= index < len(bodies) for index in order):
        raise ValueError("order holds an index that is not one of bodies")
    run, _, _ = _launch(
        url,
        connections=connections,
        streams=streams,
        seconds=seconds,
        warmup=warmup,
        mode={
            "mode": "requests",
            "path": path,
            "headers": dict(headers),
            "bodies_b64": [base64.b64encode(body).decode("ascii") for body in bodies],
            "order": list(order),
        },
    )
    return run


def run_write_mix(
    url: str,
    *,
    connections: int,
    streams: int,
    seconds: float,
    warmup: float,
    write_share: float,
    bound_ms: float,
    tokens: Sequence[str],
) -> tuple[Run, WriteMixOutcome]:
    """Read and write own bios, one account per token, counting reads older than the last write."""
    _check_one_per_slot(tokens, connections, streams)
    run, lines, _ = _launch(
        url,
        connections=connections,
        streams=streams,
        seconds=seconds,
        warmup=warmup,
        mode={
            "mode": "write-mix",
            "write_share": write_share,
            "bound_ms": bound_ms,
            "clients": [{"token": token} for token in tokens],
        },
    )
    kinds = [kind for kind, _ in lines]
    stale = [verdict for _, verdict in lines]
    outcome = WriteMixOutcome(
        reads=kinds.count("read"),
        writes=kinds.count("write"),
        stale_within=stale.count("within"),
        stale_past=stale.count("past"),
    )
    return run, outcome


def run_refresh_chain(
    url: str,
    *,
    connections: int,
    streams: int,
    seconds: float,
    warmup: float,
    refresh_tokens: Sequence[str],
) -> tuple[Run, list[str]]:
    """Refresh one session per slot again and again, each time with the token the previous
    refresh returned; return the run and each session's latest refresh token."""
    _check_one_per_slot(refresh_tokens, connections, streams)
    run, _, summary = _launch(
        url,
        connections=connections,
        streams=streams,
        seconds=seconds,
        warmup=warmup,
        mode={
            "mode": "refresh-chain",
            "clients": [{"refresh_token": token} for token in refresh_tokens],
        },
    )
    return run, [str(token) for token in summary["refresh_tokens"]]


def _check_one_per_slot(tokens: Sequence[str], connections: int, streams: int) -> None:
    """ValueError unless there is exactly one token per request slot."""
    if len(tokens) != connections * streams:
        raise ValueError(f"need connections x streams = {connections * streams} tokens")


def _launch(
    url: str,
    *,
    connections: int,
    streams: int,
    seconds: float,
    warmup: float,
    mode: dict[str, object],
) -> tuple[Run, list[tuple[str, str]], dict[str, Any]]:
    """Run the generator; return the Run, each measured request's (kind, stale) and the
    generator's summary."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "requests.tsv"
        plan = Path(folder) / "plan.json"
        common = {
            "url": url,
            "connections": connections,
            "streams": streams,
            "seconds": seconds,
            "warmup": warmup,
            "log": str(log),
        }
        plan.write_text(json.dumps({**common, **mode}))
        done = subprocess.run(
            [binary(), str(SCRIPT), str(plan)],
            capture_output=True,
            text=True,
            timeout=seconds + warmup + SLACK_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"grpc_load.mjs failed ({done.returncode}): {done.stderr.strip()}")
        summary = json.loads(done.stdout)
        statuses: list[int] = []
        latencies: list[float] = []
        lines: list[tuple[str, str]] = []
        for line in log.read_text().splitlines():
            _start, status, micros, kind, stale = line.split("\t")
            # The log holds gRPC statuses (0..16), 1000 + HTTP status when it is not 200, and
            # 2000 for transport failures. Run counts HTTP statuses, so gRPC OK becomes 200 and
            # every other value stays as it is: none lies in 200..299, so Run.http_errors counts
            # every failed call, gRPC errors included.
            code = int(status)
            statuses.append(200 if code == 0 else code)
            latencies.append(int(micros) / 1000)
            lines.append((kind, stale))
    if summary["requests"] != len(statuses):
        raise RuntimeError(f"summary counts {summary['requests']} requests, log {len(statuses)}")
    return Run(seconds=seconds, statuses=statuses, latencies_ms=latencies), lines, summary
