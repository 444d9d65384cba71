"""The system a benchmark runs against: its own database and mesh, seeded accounts, and the CPU
each process spends.

The benchmark starts its own mesh (on free ports, with its own PostgreSQL database) so that a
run can switch the profile cache off half-way and restart user_svc, and so that it never fills a
developer's database with seeded accounts.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import psutil

from data_access import admin
from data_access.embedded import EmbeddedPostgres
from data_access.migrate import upgrade_async
from meshkit.rate_limits import SETTING, scaled
from tools import seed as seeding
from tools.mesh import ROOT, Mesh, MeshPorts, mesh_secrets

STATE = ROOT / "var" / "bench"
DATABASE = "meshgram_bench"
SEEDED_PREFIX = seeding.SEEDED_PREFIX
seeded_usernames = seeding.seeded_usernames


@dataclass(frozen=True)
class Account:
    """A signed-up account the load can act as."""

    username: str
    email: str
    password: str
    access_token: str
    refresh_token: str


def database_url() -> Iterator[str]:
    """Yield the URL of the benchmark's database, migrated: a database of its own on the
    DATABASE_URL server when set, else an embedded PostgreSQL in var/bench/pgdata."""
    server = os.environ.get("DATABASE_URL")
    if server:
        url = asyncio.run(admin.create_database(server, DATABASE, exist_ok=True))
        asyncio.run(upgrade_async(url))
        yield url
        return
    with EmbeddedPostgres(STATE / "pgdata", DATABASE) as embedded:
        asyncio.run(upgrade_async(embedded.url))
        yield embedded.url


def new_mesh(
    url: str,
    *,
    replicas: Mapping[str, int],
    cache: bool,
    bcrypt_rounds: int,
    mtls: bool = True,
    tls: bool = False,
    env: Mapping[str, str] = {},
) -> Mesh:
    """A mesh for the benchmark on free ports (not started): mutual TLS inside unless mtls is
    false, HTTPS at the edge when tls is true, plus env."""
    return Mesh(
        database_url=url,
        ports=MeshPorts.free_for(replicas),
        state_dir=STATE,
        replicas=replicas,
        extra_env={
            "MESHGRAM_ENV": "development",
            "AUTH_BCRYPT_ROUNDS": str(bcrypt_rounds),
            "USER_CACHE_ENABLED": str(cache).lower(),
            # Every load generator is one loopback address: the limits stay in the path (and
            # in the figures) without refusing the load.
            SETTING: scaled(100_000),
            **env,
        },
        log_dir=STATE / "logs",
        mtls=mtls,
        edge_tls=tls,
    )


def sign_up(edge: str, count: int, *, ca: Path | None = None) -> list[Account]:
    """Register and log in `count` throwaway accounts through the edge at host:port: over plain
    HTTP, or over HTTPS trusting the CA certificate file ca when given."""
    accounts = []
    base, verify = (f"http://{edge}", True) if ca is None else (f"https://{edge}", _trusting(ca))
    with httpx.Client(base_url=base, timeout=60, verify=verify) as client:
        for _ in range(count):
            tag = uuid.uuid4().hex[:12]
            email, password = f"bench-{tag}@example.com", f"bench password {tag}"
            username = f"bench_{tag}"
            client.post(
                "/v1/auth:register",
                json={"email": email, "username": username, "password": password},
            ).raise_for_status()
            reply = client.post("/v1/auth:login", json={"email": email, "password": password})
            reply.raise_for_status()
            tokens = reply.json()["tokens"]
            accounts.append(
                Account(
                    username,
                    email,
                    password,
                    str(tokens["accessToken"]),
                    str(tokens["refreshToken"]),
                )
            )
    return accounts


def _trusting(ca: Path) -> ssl.SSLContext:
    """A client TLS context that trusts the certificates signed by ca."""
    return ssl.create_default_context(cafile=str(ca))


async def seed_accounts(mesh: Mesh, count: int) -> int:
    """Create the seeded accounts seed_00000... (tools.seed: profiles with names, follows, the
    documented password) that do not exist yet in the mesh's database; return how many were
    created."""
    env = {**os.environ, **mesh.extra_env}
    pepper = mesh_secrets(env, mesh.state_dir).password_pepper
    assert pepper is not None, "the development pepper is generated on first use"
    rounds = int(env.get("AUTH_BCRYPT_ROUNDS", "12"))
    hashed = await asyncio.to_thread(seeding.password_hash, pepper, rounds)
    done = await seeding.seed(mesh.database_url, count, hashed_password=hashed)
    return done.accounts


def zipf_order(population: int, draws: int, *, exponent: float = 1.1, seed: int = 7) -> list[int]:
    """`draws` indices into range(population), rank k drawn with weight 1 / k**exponent."""
    weights = [1.0 / (rank**exponent) for rank in range(1, population + 1)]
    ranks = random.Random(seed).choices(range(population), weights=weights, k=draws)
    # Rank 1 is not the first account created: shuffle which account holds which rank.
    holder = list(range(population))
    random.Random(seed + 1).shuffle(holder)
    return [holder[rank] for rank in ranks]


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


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far by each process of the mesh, and by finished children."""

    by_process: Mapping[str, Mapping[int, float]]
    """Per role, the CPU seconds of each of its processes by pid."""
    children: float


def processes(mesh: Mesh, postgres_data: Path | None) -> dict[str, list[psutil.Process]]:
    """The processes to account CPU to, grouped by role (listed anew each time: PostgreSQL's
    workers come and go)."""
    roles: dict[str, list[psutil.Process]] = {}
    for name in mesh.supervisor.names():
        process = mesh.supervisor.process(name)
        if process is not None and process.poll() is None:
            role = name.split("-")[0]
            roles.setdefault(role, []).append(psutil.Process(process.pid))
    if postgres_data is not None:
        lock = postgres_data / "postmaster.pid"
        if lock.exists():
            postmaster = psutil.Process(int(lock.read_text().split()[0]))
            roles["postgres"] = [postmaster, *postmaster.children(recursive=True)]
    return roles


def cpu_sample(roles: Mapping[str, Sequence[psutil.Process]]) -> CpuSample:
    """CPU seconds of each process of each role now (processes that vanished are left out)."""
    totals: dict[str, dict[int, float]] = {}
    for role, members in roles.items():
        seconds = totals.setdefault(role, {})
        for process in members:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            seconds[process.pid] = times.user + times.system
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSample(totals, usage.ru_utime + usage.ru_stime)


@contextmanager
def cpu_measured(
    list_processes: Callable[[], Mapping[str, Sequence[psutil.Process]]], into: dict[str, float]
) -> Iterator[None]:
    """Fill `into` with the CPU seconds each role (and "load generator": children that finished
    inside the block) used during the block; a process that started meanwhile counts whole, one
    that ended meanwhile counts not at all."""
    before = cpu_sample(list_processes())
    yield
    after = cpu_sample(list_processes())
    for role, by_pid in after.by_process.items():
        earlier = before.by_process.get(role, {})
        into[role] = sum(seconds - earlier.get(pid, 0.0) for pid, seconds in by_pid.items())
    into["load generator"] = after.children - before.children
