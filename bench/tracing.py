"""`python -m bench.tracing`: what tracing costs. The same uncached profile read (REST, through
the edge, user_svc, data_access and PostgreSQL) on two meshes of its own, side by side on one
database: one with tracing off (the default), one tracing every request to a local OTLP
receiver, one keeping a tenth of the traces. The load alternates between them in short rounds,
so a busy neighbour on a shared machine weighs on all alike; prints one row per mesh and the
spans its receiver took per request."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from bench import h2load
from bench.profiles import slug
from bench.system import STATE, Account, cpu_measured, database_url, new_mesh, processes, sign_up
from tools.mesh import Mesh
from tools.otlp_receiver import OtlpReceiver, otlp_receiver

ROLES = ("envoy", "user_svc", "data_access")


@dataclass
class Side:
    """One mesh under test and what its rounds added up to."""

    label: str
    mesh: Mesh
    account: Account
    receiver: OtlpReceiver | None
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The profile read this side is loaded with."""
        return f"http://{self.mesh.edge_address}/v1/profiles/{self.account.username}"

    @property
    def headers(self) -> dict[str, str]:
        """Its account's credentials."""
        return {"authorization": f"Bearer {self.account.access_token}"}


@contextlib.contextmanager
def started(url: str, label: str, sampling: Mapping[str, str] | None) -> Iterator[Side]:
    """A mesh (logs in var/bench/logs/<label>) with one account signed up: untraced when
    sampling is None, else tracing to a receiver of its own with the given sampler settings."""
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        receiver = None
        if sampling is not None:
            receiver = stack.enter_context(otlp_receiver())
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **sampling}
        mesh = new_mesh(url, replicas={}, cache=False, bcrypt_rounds=4)
        mesh = dataclasses.replace(
            mesh, extra_env={**mesh.extra_env, **env}, log_dir=STATE / "logs" / slug(label)
        )
        mesh.start(timeout=120)
        stack.callback(mesh.stop)
        [account] = sign_up(mesh.edge_address, 1)
        yield Side(label, mesh, account, receiver)


def load(side: Side, seconds: float, connections: int) -> None:
    """Load side for `seconds`, adding the requests and the CPU they cost to its totals."""
    cpu: dict[str, float] = {}
    with cpu_measured(lambda: processes(side.mesh, None), cpu):
        run = h2load.run(
            side.url, connections=connections, seconds=seconds, warmup=0, headers=side.headers
        )
    side.latencies_ms += run.latencies_ms
    side.failed += run.http_errors
    side.seconds += seconds
    for role, used in cpu.items():
        side.cpu[role] = side.cpu.get(role, 0.0) + used


def row(side: Side) -> str:
    """The Markdown row of one side."""
    run = h2load.Run(seconds=side.seconds, statuses=[], latencies_ms=side.latencies_ms)
    count = len(side.latencies_ms)
    per_request = [f"{side.cpu.get(role, 0.0) * 1000 / max(count, 1):.2f}" for role in ROLES]
    spans = "0"
    if side.receiver is not None:
        received = side.receiver.spans()
        # Every request (warm-up and sign-up too) has one edge span.
        edge = sum(1 for span in received if span.service == "edge")
        spans = f"{len(received) / edge:.1f}" if edge else "0"
    return (
        f"| {side.label} | {count:,} | {side.failed} | {run.rps:,.0f} | {run.p50:.1f} | "
        f"{run.percentile(99):.1f} | " + " | ".join(per_request) + f" | {spans} |"
    )


def main() -> None:
    """Measure the read on both meshes in alternating rounds and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="load per mesh, in all")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=16)
    options = parser.parse_args()
    each = max(1.0, options.seconds / options.rounds)
    for url in database_url():
        ratio = {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        }
        with (
            started(url, "off", None) as off,
            started(url, "on, every request traced", {}) as on,
            started(url, "on, 10 % of traces kept", ratio) as sampled,
        ):
            sides = [off, on, sampled]
            for side in sides:
                h2load.run(
                    side.url,
                    connections=options.connections,
                    seconds=2,
                    warmup=0,
                    headers=side.headers,
                )
            for _ in range(options.rounds):
                for side in sides:
                    load(side, each, options.connections)
            header = "| tracing | requests | failed | req/s | p50 ms | p99 ms | CPU ms/request: "
            print(header + " | ".join(ROLES) + " | spans per traced request |")
            print("| --- " + "| ---: " * (6 + len(ROLES)) + "|")
            for side in sides:
                print(row(side), flush=True)


if __name__ == "__main__":
    main()
