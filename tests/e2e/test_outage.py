"""When a dependency goes away: clients get a retryable UNAVAILABLE (HTTP 503), never INTERNAL,
and the system recovers by itself once the dependency is back.

Runs its own mesh, so stopping a service cannot disturb the other end-to-end tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.support import new_user, own_mesh
from tools.mesh import Mesh


@pytest.fixture(scope="module")
def private_mesh(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A second, private mesh on its own ports."""
    with own_mesh(database_url, tmp_path_factory.mktemp("outage"), {}) as mesh:
        yield mesh


def statuses_until(http: httpx.Client, token: str, wanted: int, seconds: float) -> list[int]:
    """GET /v1/profiles/me until it answers `wanted` (or time runs out); return every status."""
    seen: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(
            http.get("/v1/profiles/me", headers={"authorization": f"Bearer {token}"}).status_code
        )
        if seen[-1] == wanted:
            break
        time.sleep(0.2)
    return seen


def test_database_service_outage_is_503_and_heals(private_mesh: Mesh) -> None:
    user = new_user()
    with httpx.Client(base_url=f"http://{private_mesh.edge_address}", timeout=30) as http:
        http.post(
            "/v1/auth:register",
            json={"email": user.email, "username": user.username, "password": user.password},
        )
        login = http.post("/v1/auth:login", json={"email": user.email, "password": user.password})
        token = login.json()["tokens"]["accessToken"]
        assert statuses_until(http, token, 200, 5)[-1] == 200

        private_mesh.stop_service("data_access")
        down = statuses_until(http, token, 503, 10)
        # While data_access is gone the answer is "try again", never a 500.
        assert down[-1] == 503
        assert 500 not in down
        reply = http.get("/v1/profiles/me", headers={"authorization": f"Bearer {token}"})
        assert reply.status_code == 503
        assert reply.headers["content-type"] == "application/json"
        # ... from the service itself, which stays in the edge's rotation: not "no healthy
        # upstream" from the edge.
        assert reply.json()["details"][0]["reason"] == "DEPENDENCY_UNAVAILABLE"
        time.sleep(5)  # past two of the edge's health checks
        # What needs neither data_access nor PostgreSQL keeps working: the JWKS, and token
        # checks with the cached keys (a bad token is still told apart from an outage).
        assert http.get("/.well-known/jwks.json").status_code == 200
        garbage = http.get("/v1/profiles/me", headers={"authorization": "Bearer nonsense"})
        assert garbage.status_code == 401
        # An id that is no UUID names no image: answered without asking data_access.
        missing = http.get("/v1/images/some-image-id")
        assert missing.status_code == 404
        still_down = http.get("/v1/profiles/me", headers={"authorization": f"Bearer {token}"})
        assert still_down.json()["details"][0]["reason"] == "DEPENDENCY_UNAVAILABLE"

        private_mesh.start_service("data_access")
        healed = statuses_until(http, token, 200, 15)
        assert healed[-1] == 200
        assert 500 not in healed
