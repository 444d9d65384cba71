"""`make bench`: throughput and latency of the running mesh, measured through Envoy.

Start the system first (`make run`), then run `make bench` in another terminal. The load comes
from separate processes; the mesh is driven only through the edge, as clients would.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid
from concurrent.futures import ProcessPoolExecutor

import bcrypt
import httpx

from bench import load, scenarios

TARGET_PROFILE_RPS = 1500
TARGET_PROFILE_P99_MS = 50.0
TARGET_LOGIN_SHARE = 0.80


def _sign_up(edge: str) -> tuple[str, str, str]:
    """Register a throwaway user; return email, password and an access token."""
    tag = uuid.uuid4().hex[:12]
    email, password = f"bench-{tag}@example.com", f"bench password {tag}"
    with httpx.Client(base_url=f"http://{edge}", timeout=30) as client:
        created = client.post(
            "/v1/auth:register",
            json={"email": email, "username": f"bench_{tag}", "password": password},
        )
        created.raise_for_status()
        tokens = client.post("/v1/auth:login", json={"email": email, "password": password})
        tokens.raise_for_status()
    return email, password, str(tokens.json()["tokens"]["accessToken"])


def _checkpw_loop(rounds: int, seconds: float) -> int:
    """Count bcrypt.checkpw calls at `rounds` completed in `seconds` on one core."""
    hashed = bcrypt.hashpw(b"x" * 44, bcrypt.gensalt(rounds))
    done = 0
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        bcrypt.checkpw(b"x" * 44, hashed)
        done += 1
    return done


def bcrypt_capacity(rounds: int, seconds: float) -> float:
    """checkpw calls per second that all cores of this machine can do at `rounds`."""
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores) as pool:
        counts = list(pool.map(_checkpw_loop, [rounds] * cores, [seconds] * cores))
    return sum(counts) / seconds


def main() -> None:
    """Run every scenario and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edge", default=os.environ.get("BENCH_EDGE", "127.0.0.1:8080"))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--processes", type=int, default=2, help="load-generating processes")
    parser.add_argument("--login-concurrency", type=int, default=8)
    parser.add_argument(
        "--bcrypt-rounds",
        type=int,
        default=int(os.environ.get("AUTH_BCRYPT_ROUNDS", "12")),
        help="the cost auth_svc runs with",
    )
    args = parser.parse_args()

    email, password, token = _sign_up(args.edge)
    results = [
        load.run(
            "get-my-profile gRPC",
            scenarios.grpc_profile(args.edge, token),
            concurrency=args.concurrency,
            duration=args.duration,
            processes=args.processes,
        ),
        load.run(
            "get-my-profile REST",
            scenarios.rest_profile(args.edge, token, args.concurrency),
            concurrency=args.concurrency,
            duration=args.duration,
            processes=args.processes,
        ),
        load.run(
            "login gRPC",
            scenarios.grpc_login(args.edge, email, password),
            concurrency=args.login_concurrency,
            duration=args.duration,
            processes=1,
        ),
    ]
    capacity = bcrypt_capacity(args.bcrypt_rounds, min(args.duration, 5.0))

    print(
        f"\nmeshgram bench — {platform.node()}, {os.cpu_count()} cores, {platform.python_version()}"
    )
    print(
        f"edge {args.edge}, {args.duration:.0f}s per scenario after 2s warm-up, load from {args.processes} processes\n"
    )
    print("| scenario | concurrency | requests | errors | req/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r.name} | {r.concurrency} | {r.requests} | {r.errors} | {r.rps:,.0f} "
            f"| {r.p50:.1f} | {r.p99:.1f} |"
        )
    login = results[2]
    print(
        f"| bcrypt checkpw alone (cost {args.bcrypt_rounds}, all cores) | — | — | — | {capacity:,.1f} | — | — |"
    )
    print()
    for r in results[:2]:
        verdict = (
            "met" if r.rps >= TARGET_PROFILE_RPS and r.p99 <= TARGET_PROFILE_P99_MS else "MISSED"
        )
        print(
            f"target {r.name}: ≥{TARGET_PROFILE_RPS} req/s with p99 ≤ {TARGET_PROFILE_P99_MS:.0f} ms "
            f"→ {r.rps:,.0f} req/s, p99 {r.p99:.1f} ms: {verdict}"
        )
    share = login.rps / capacity if capacity else 0.0
    verdict = "met" if share >= TARGET_LOGIN_SHARE else "MISSED"
    print(f"target login: ≥{TARGET_LOGIN_SHARE:.0%} of bcrypt capacity → {share:.0%}: {verdict}")


if __name__ == "__main__":
    main()
