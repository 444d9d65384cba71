"""`make bench`: throughput and latency of the running mesh, measured through Envoy.

Start the system first (`make run`), then run `make bench` in another terminal. Load comes from
h2load in a separate process and reaches the services only through the edge, as clients do.
gRPC outcomes are counted from Envoy's per-method gRPC statistics, since a gRPC error still
travels in an HTTP 200.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import urllib.request
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import bcrypt
import httpx

from bench import h2load

TARGET_PROFILE_RPS = 1500
TARGET_PROFILE_P99_MS = 50.0
TARGET_LOGIN_SHARE = 0.80
# An empty protobuf message in one gRPC frame: no compression flag, zero length.
EMPTY_GRPC_MESSAGE = b"\x00\x00\x00\x00\x00"
PROFILE_STATS = "cluster.user_svc.grpc.meshgram.user.v1.UserService.GetMyProfile"
LOGIN_STATS = "cluster.auth_svc.grpc.meshgram.auth.v1.AuthService.Login"


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    scenario: str
    concurrency: int
    run: h2load.Run
    failures: int


def sign_up(edge: str) -> tuple[str, str, str]:
    """Register a throwaway user; return its email, password and an access token."""
    tag = uuid.uuid4().hex[:12]
    email, password = f"bench-{tag}@example.com", f"bench password {tag}"
    with httpx.Client(base_url=f"http://{edge}", timeout=30) as client:
        client.post(
            "/v1/auth:register",
            json={"email": email, "username": f"bench_{tag}", "password": password},
        ).raise_for_status()
        reply = client.post("/v1/auth:login", json={"email": email, "password": password})
        reply.raise_for_status()
    return email, password, str(reply.json()["tokens"]["accessToken"])


def grpc_counters(admin: str, prefix: str) -> tuple[int, int]:
    """(successes, failures) Envoy has counted for one gRPC method so far."""
    with urllib.request.urlopen(
        f"http://{admin}/stats?format=json&filter=^{prefix}\\.", timeout=5
    ) as r:
        stats = {s["name"]: s.get("value", 0) for s in json.load(r)["stats"] if "name" in s}
    return int(stats.get(f"{prefix}.success", 0)), int(stats.get(f"{prefix}.failure", 0))


def checkpw_for(rounds: int, seconds: float) -> int:
    """How many bcrypt.checkpw calls at `rounds` one core completes in `seconds`."""
    hashed = bcrypt.hashpw(b"p" * 44, bcrypt.gensalt(rounds))
    done, stop_at = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        bcrypt.checkpw(b"p" * 44, hashed)
        done += 1
    return done


def bcrypt_capacity(rounds: int, seconds: float) -> float:
    """checkpw calls per second all cores of this machine sustain at `rounds`."""
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores) as pool:
        return sum(pool.map(checkpw_for, [rounds] * cores, [seconds] * cores)) / seconds


def table(rows: Sequence[Row], capacity: float, rounds: int) -> str:
    """Render the results as a Markdown table."""
    lines = [
        "| scenario | concurrency | requests | failed | req/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        r = row.run
        lines.append(
            f"| {row.scenario} | {row.concurrency} | {len(r.latencies_ms)} | {row.failures} "
            f"| {r.rps:,.0f} | {r.p50:.1f} | {r.percentile(99):.1f} |"
        )
    lines.append(
        f"| bcrypt checkpw alone, cost {rounds}, all cores | — | — | — | {capacity:,.1f} | — | — |"
    )
    return "\n".join(lines)


def main() -> None:
    """Run every scenario and print the table and the verdict on each target."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edge", default=os.environ.get("BENCH_EDGE", "127.0.0.1:8080"))
    parser.add_argument("--admin", default=os.environ.get("BENCH_ADMIN", "127.0.0.1:9901"))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0, help="per scenario")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--login-concurrency", type=int, default=8)
    parser.add_argument(
        "--bcrypt-rounds", type=int, default=int(os.environ.get("AUTH_BCRYPT_ROUNDS", "12"))
    )
    args = parser.parse_args()
    base = f"http://{args.edge}"
    email, password, token = sign_up(args.edge)
    bearer = {"authorization": f"Bearer {token}"}
    rows: list[Row] = []

    before = grpc_counters(args.admin, PROFILE_STATS)
    grpc_run = h2load.run(
        f"{base}/meshgram.user.v1.UserService/GetMyProfile",
        connections=8,
        streams=args.concurrency // 8,
        seconds=args.seconds,
        warmup=args.warmup,
        headers={**bearer, "content-type": "application/grpc", "te": "trailers"},
        body=EMPTY_GRPC_MESSAGE,
    )
    after = grpc_counters(args.admin, PROFILE_STATS)
    rows.append(
        Row(
            "get-my-profile, native gRPC (h2c)",
            args.concurrency,
            grpc_run,
            failures=after[1] - before[1] + grpc_run.http_errors,
        )
    )

    rest_run = h2load.run(
        f"{base}/v1/profiles/me",
        connections=args.concurrency,
        seconds=args.seconds,
        warmup=args.warmup,
        headers=bearer,
        http1=True,
    )
    rows.append(
        Row(
            "get-my-profile, REST (HTTP/1.1)",
            args.concurrency,
            rest_run,
            failures=rest_run.http_errors,
        )
    )

    login_body = json.dumps({"email": email, "password": password}).encode()
    login_run = h2load.run(
        f"{base}/v1/auth:login",
        connections=args.login_concurrency,
        seconds=args.seconds,
        warmup=args.warmup,
        headers={"content-type": "application/json"},
        body=login_body,
        http1=True,
    )
    rows.append(
        Row("login, REST", args.login_concurrency, login_run, failures=login_run.http_errors)
    )

    capacity = bcrypt_capacity(args.bcrypt_rounds, 5.0)
    print(
        f"\nmeshgram bench: {platform.node()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, edge {args.edge}"
    )
    print(f"{args.seconds:.0f}s per scenario after {args.warmup:.0f}s warm-up, load by h2load\n")
    print(table(rows, capacity, args.bcrypt_rounds))
    print()
    for row in rows[:2]:
        r = row.run
        met = r.rps >= TARGET_PROFILE_RPS and r.percentile(99) <= TARGET_PROFILE_P99_MS
        share = r.rps / TARGET_PROFILE_RPS
        print(
            f"target {row.scenario}: >= {TARGET_PROFILE_RPS} req/s, p99 <= "
            f"{TARGET_PROFILE_P99_MS:.0f} ms: {r.rps:,.0f} req/s ({share:.0%}), "
            f"p99 {r.percentile(99):.1f} ms: {'met' if met else 'MISSED'}"
        )
    share = login_run.rps / capacity if capacity else 0.0
    print(
        f"target login: >= {TARGET_LOGIN_SHARE:.0%} of bcrypt capacity: {share:.0%}: "
        f"{'met' if share >= TARGET_LOGIN_SHARE else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
