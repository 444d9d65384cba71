"""A crashed process comes back by itself: a public service killed with SIGKILL while a client
keeps calling through the edge serves again within a few seconds, nobody lifting a finger."""

from __future__ import annotations

import os
import signal
import time

import httpx

from tests.e2e.support import new_user
from tools.mesh import Mesh

# Restart delay (0.5 s) + interpreter start-up + Envoy's next health check (every 2 s).
RECOVERY_SECONDS = 8.0


def test_a_killed_service_serves_again_without_help(mesh: Mesh) -> None:
    user = new_user()
    with httpx.Client(base_url=f"http://{mesh.edge_address}", timeout=10) as http:
        http.post(
            "/v1/auth:register",
            json={"email": user.email, "username": user.username, "password": user.password},
        ).raise_for_status()
        login = http.post("/v1/auth:login", json={"email": user.email, "password": user.password})
        headers = {"authorization": f"Bearer {login.json()['tokens']['accessToken']}"}
        assert http.get("/v1/profiles/me", headers=headers).status_code == 200

        victim = mesh.supervisor.process("user_svc")
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()

        statuses: list[int] = []
        while time.monotonic() - killed < RECOVERY_SECONDS:
            statuses.append(http.get("/v1/profiles/me", headers=headers).status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.05)
        recovered = time.monotonic() - killed

    assert statuses[-1] == 200, f"still failing after {recovered:.1f}s: {statuses}"
    # While it was down the edge said "try again", never "internal error".
    assert set(statuses[:-1]) <= {502, 503}, statuses
    replacement = mesh.supervisor.process("user_svc")
    assert replacement is not None
    assert replacement.pid != victim.pid
