"""A replica of each public service dies (SIGKILL) while clients read through the edge: no read
fails, since the edge retries calls the protos mark safe to repeat on another replica, and the
supervisor brings the dead replica back.

Runs its own mesh (auth_svc, user_svc and storage_svc twice each), so that killing processes
cannot disturb the other end-to-end tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.support import NewUser, free_ports, png_bytes, rest_sign_in
from tools.mesh import Mesh

REPLICAS = {"auth_svc": 2, "user_svc": 2, "storage_svc": 2}
CLIENTS = 8
LOAD_SECONDS = 8.0
KILL_AFTER_SECONDS = 2.0


@pytest.fixture(scope="module")
def own_mesh(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A private mesh on its own ports with two replicas of each public service."""
    state: Path = tmp_path_factory.mktemp("failover")
    mesh = Mesh(
        database_url=database_url,
        ports=free_ports(REPLICAS),
        state_dir=state,
        extra_env={
            "MESHGRAM_ENV": "development",
            "AUTH_BCRYPT_ROUNDS": "4",
            # The session mesh delivers the shared database's mail, not this one.
            "AUTH_MAIL_SENDING": "false",
            "STORAGE_BLOB_DIR": str(state / "blobs"),
        },
        log_dir=state / "logs",
        replicas=REPLICAS,
    )
    mesh.start(timeout=90)
    yield mesh
    mesh.stop()


def kill(mesh: Mesh, name: str) -> int:
    """SIGKILL a supervised process (no chance to drain); return the pid it had."""
    process = mesh.supervisor.process(name)
    assert process is not None, name
    os.kill(process.pid, signal.SIGKILL)
    return process.pid


def prepare(base: str) -> tuple[NewUser, dict[str, str], dict[str, Any]]:
    """A signed-in user with an image: what the load reads."""
    with httpx.Client(base_url=base, timeout=30) as http:
        user, tokens = rest_sign_in(http)
        auth = {"authorization": f"Bearer {tokens['accessToken']}"}
        image = http.post("/v1/images", content=png_bytes(), headers=auth).json()["image"]
    return user, auth, image


async def test_reads_survive_a_replica_of_each_service_dying(own_mesh: Mesh) -> None:
    base = f"http://{own_mesh.edge_address}"
    user, auth, image = await asyncio.to_thread(prepare, base)
    reads = [
        f"/v1/profiles/{user.username}",  # user_svc, signed out
        "/v1/profiles/me",  # user_svc, with the token checked by user_svc
        f"/v1/images/{image['id']}",  # storage_svc
        f"/media/{image['id']}/w320",  # storage_svc, the bytes
        "/.well-known/jwks.json",  # auth_svc
    ]
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    stop_at = time.monotonic() + LOAD_SECONDS

    async def client(number: int, session: httpx.AsyncClient) -> None:
        turn = number
        while time.monotonic() < stop_at:
            path = reads[turn % len(reads)]
            turn += 1
            try:
                answer = await session.get(path, headers=auth if path.endswith("/me") else {})
            except httpx.HTTPError as error:
                failures.append(f"{path}: {type(error).__name__}")
                continue
            outcomes[str(answer.status_code)] += 1
            if answer.status_code != 200:
                failures.append(f"{path}: {answer.status_code} {answer.text[:200]}")

    async def killer() -> list[int]:
        await asyncio.sleep(KILL_AFTER_SECONDS)
        return [kill(own_mesh, name) for name in ("auth_svc-2", "user_svc-2", "storage_svc-2")]

    async with httpx.AsyncClient(base_url=base, timeout=30) as session:
        results = await asyncio.gather(killer(), *(client(n, session) for n in range(CLIENTS)))
    killed = results[0]

    assert failures == [], (failures[:10], outcomes)
    assert outcomes["200"] > 100
    # The supervisor started each killed replica again.
    for name, old_pid in zip(("auth_svc-2", "user_svc-2", "storage_svc-2"), killed, strict=True):
        deadline = time.monotonic() + 30
        while True:
            process = own_mesh.supervisor.process(name)
            if process is not None and process.pid != old_pid and process.poll() is None:
                break
            assert time.monotonic() < deadline, f"{name} was not restarted"
            await asyncio.sleep(0.2)
