"""A replica of each public service dies (SIGKILL) while clients read through the edge: no read
fails, since the edge retries calls the protos mark safe to repeat on another replica, and the
supervisor brings the dead replica back. While clients write: a write may fail (UNAVAILABLE,
retry), but every acknowledged write is stored, and none twice.

Runs its own mesh (auth_svc, user_svc and storage_svc twice each), so that killing processes
cannot disturb the other end-to-end tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.support import NewUser, free_ports, new_user, noise_png, png_bytes, rest_sign_in
from tools.mesh import Mesh

REPLICAS = {"auth_svc": 2, "user_svc": 2, "storage_svc": 2}
CLIENTS = 8
LOAD_SECONDS = 8.0
KILL_AFTER_SECONDS = 2.0
VICTIMS = ("auth_svc-2", "user_svc-2", "storage_svc-2")


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


async def wait_restarted(mesh: Mesh, names: tuple[str, ...], old_pids: list[int]) -> None:
    """Wait until the supervisor has started each killed process again."""
    for name, old_pid in zip(names, old_pids, strict=True):
        deadline = time.monotonic() + 30
        while True:
            process = mesh.supervisor.process(name)
            if process is not None and process.pid != old_pid and process.poll() is None:
                break
            assert time.monotonic() < deadline, f"{name} was not restarted"
            await asyncio.sleep(0.2)


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
        return [kill(own_mesh, name) for name in VICTIMS]

    async with httpx.AsyncClient(base_url=base, timeout=30) as session:
        killing = asyncio.create_task(killer())
        await asyncio.gather(*(client(n, session) for n in range(CLIENTS)))
        killed = await killing

    assert failures == [], (failures[:10], outcomes)
    assert outcomes["200"] > 100
    # The supervisor started each killed replica again.
    await wait_restarted(own_mesh, VICTIMS, killed)


def stored_images(base: str, auth: dict[str, str]) -> list[dict[str, Any]]:
    """Every image of the signed-in user, page by page."""
    found: list[dict[str, Any]] = []
    params = {"pageSize": "100"}
    with httpx.Client(base_url=base, timeout=30) as http:
        while True:
            page = http.get("/v1/images", params=params, headers=auth)
            assert page.status_code == 200, page.text
            found += page.json().get("images", [])
            params["pageToken"] = page.json().get("nextPageToken", "")
            if not params["pageToken"]:
                return found


async def test_acknowledged_writes_survive_a_replica_of_each_service_dying(
    own_mesh: Mesh,
) -> None:
    base = f"http://{own_mesh.edge_address}"
    _, auth, _ = await asyncio.to_thread(prepare, base)
    uploaded: list[str] = []  # ids of acknowledged uploads (storage_svc)
    registered: list[str] = []  # usernames of acknowledged registrations (auth_svc)
    renamed: list[tuple[str, bool]] = []  # display names sent in order, acknowledged? (user_svc)
    failures: list[str] = []
    stop_at = time.monotonic() + LOAD_SECONDS

    async def answer_of(call: Awaitable[httpx.Response], what: str) -> httpx.Response | None:
        """The call's answer when it succeeded; a failure is noted."""
        try:
            answer = await call
        except httpx.HTTPError as error:
            failures.append(f"{what}: {type(error).__name__}")
            return None
        if answer.status_code != 200:
            failures.append(f"{what}: {answer.status_code} {answer.text[:200]}")
            return None
        return answer

    async def uploader(session: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            # Random pixels: every upload has its own digest, so one stored twice shows.
            call = session.post("/v1/images", content=noise_png(8, 8), headers=auth)
            answer = await answer_of(call, "upload")
            if answer is not None:
                uploaded.append(answer.json()["image"]["id"])

    async def registrar(session: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            user = new_user()
            body = {"email": user.email, "username": user.username, "password": user.password}
            if await answer_of(session.post("/v1/auth:register", json=body), "register"):
                registered.append(user.username.lower())

    async def renamer(session: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            name = f"Writer {uuid.uuid4().hex[:12]}"
            call = session.patch(
                "/v1/profiles/me?updateMask=displayName", json={"displayName": name}, headers=auth
            )
            renamed.append((name, await answer_of(call, "rename") is not None))

    async def killer() -> list[int]:
        await asyncio.sleep(KILL_AFTER_SECONDS)
        return [kill(own_mesh, name) for name in VICTIMS]

    async with httpx.AsyncClient(base_url=base, timeout=30) as session:
        # One renamer, so that the name stored last is known.
        writers = [uploader(session), registrar(session)] * 2 + [renamer(session)]
        killing = asyncio.create_task(killer())
        await asyncio.gather(*writers)
        killed = await killing
    await wait_restarted(own_mesh, VICTIMS, killed)
    print(
        f"\nreplica failover under writes: {len(uploaded)} uploads, {len(registered)} "
        f"registrations, {sum(ok for _, ok in renamed)} renames acknowledged; "
        f"failed: {Counter(f.split(' ')[0] + ' ' + f.split(' ')[1] for f in failures)}"
    )

    # A write cut short says "retry" and nothing else.
    assert all(": 503 " in failure for failure in failures), failures[:10]
    assert uploaded
    assert registered
    images = await asyncio.to_thread(stored_images, base, auth)
    assert Counter(image["id"] for image in images).most_common(1)[0][1] == 1
    assert Counter(image["sha256"] for image in images).most_common(1)[0][1] == 1
    assert set(uploaded) <= {image["id"] for image in images}
    async with httpx.AsyncClient(base_url=base, timeout=30) as session:
        for username in registered:
            profile = await session.get(f"/v1/profiles/{username}")
            assert profile.status_code == 200, (username, profile.text)
        me = await session.get("/v1/profiles/me", headers=auth)
    # The last acknowledged name, or one sent after it whose answer was lost.
    last = max(i for i, (_, acknowledged) in enumerate(renamed) if acknowledged)
    assert me.json()["profile"]["displayName"] in {name for name, _ in renamed[last:]}
