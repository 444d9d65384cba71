"""`python -m bench.tracing`: what tracing costs. The same uncached profile read (REST, through
the edge, user_svc, data_access and PostgreSQL) on a mesh of its own, once with tracing off
(the default) and once with every request traced to a local OTLP receiver; prints both rows and
the spans the receiver took per request."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping

from bench import h2load
from bench.system import cpu_measured, database_url, new_mesh, processes, sign_up
from tools.otlp_receiver import otlp_receiver

ROLES = ("envoy", "user_svc", "data_access", "auth_svc")


def measure(
    url: str, env: Mapping[str, str], *, seconds: float, connections: int
) -> tuple[h2load.Run, dict[str, float]]:
    """Start a mesh with env added, read one account's profile over REST for `seconds` with
    `connections` clients, and return the run and each role's CPU seconds; stop the mesh."""
    mesh = new_mesh(url, replicas={}, cache=False, bcrypt_rounds=4)
    mesh = dataclasses.replace(mesh, extra_env={**mesh.extra_env, **env})
    mesh.start(timeout=120)
    try:
        [account] = sign_up(mesh.edge_address, 1)
        url = f"http://{mesh.edge_address}/v1/profiles/{account.username}"
        headers = {"authorization": f"Bearer {account.access_token}"}
        # Warmed up outside the measured block, so the CPU figures cover the counted requests.
        h2load.run(url, connections=connections, seconds=2, warmup=0, headers=headers)
        cpu: dict[str, float] = {}
        with cpu_measured(lambda: processes(mesh, None), cpu):
            run = h2load.run(
                url, connections=connections, seconds=seconds, warmup=0, headers=headers
            )
        return run, cpu
    finally:
        mesh.stop()


def main() -> None:
    """Measure the read with tracing off, then on, and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=16)
    options = parser.parse_args()
    header = "| tracing | requests | failed | req/s | p50 ms | p99 ms | CPU ms/request: "
    print(header + " | ".join(ROLES) + " | spans/request |")
    print("| --- " + "| ---: " * (6 + len(ROLES)) + "|")
    for url in database_url():
        with otlp_receiver() as receiver:
            for label, env in (
                ("off", {}),
                (
                    "on, every request, to a local receiver",
                    {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
                ),
            ):
                before = len(receiver.spans())
                run, cpu = measure(
                    url, env, seconds=options.seconds, connections=options.connections
                )
                count = len(run.latencies_ms)
                received = receiver.spans()[before:]
                # Per traced request: every request (warm-up and sign-up too) has one edge span.
                edge = sum(1 for span in received if span.service == "edge")
                spans = len(received) / edge if edge else 0.0
                per_request = [f"{cpu.get(role, 0.0) * 1000 / max(count, 1):.2f}" for role in ROLES]
                print(
                    f"| {label} | {count:,} | {run.http_errors} | {run.rps:,.0f} | "
                    f"{run.p50:.1f} | {run.percentile(99):.1f} | "
                    + " | ".join(per_request)
                    + f" | {spans:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
