"""The edge's rate limits (docs/rate-limits.md), through the real Envoy to the real services and
PostgreSQL: a client past a limit is refused with REST 429 + JSON + Retry-After, gRPC
RESOURCE_EXHAUSTED or a gRPC-web status a browser reads; every door to a method shares one
bucket; the strict limits hold across edge replicas; reads are not held to them; other clients
are unaffected; an unreachable limiter lets calls through.

Runs its own mesh with small limits whose windows last a day (so no window ends during a test).
Each test connects from loopback addresses of its own (127.0.0.x): the edge counts per address,
so one test's counts never reach another's. Native gRPC clients connect from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.ratelimit.v1.ratelimit_pb2 import ShouldRateLimitRequest, ShouldRateLimitResponse
from meshkit.rate_limits import DOMAIN
from tests.e2e.support import NewUser, grpc_web_frame, new_user, own_mesh
from tools.edge import write
from tools.mesh import ENVOY_BIN, Mesh, MeshPorts

LOGINS = 4
RESETS = 3
READS = 12
DAY = 86_400
LIMITS = f"login={LOGINS}/1d,password_reset={RESETS}/1d,reads={READS}/1d"
WEB = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
BROWSER_ORIGIN = "http://localhost:5173"


@pytest.fixture(scope="module")
def mesh(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh of this module's own, with small limits."""
    env = {"MESHGRAM_RATE_LIMITS": LIMITS}
    with own_mesh(database_url, tmp_path_factory.mktemp("rate-limits"), env) as running:
        yield running


@pytest.fixture(scope="module")
def user(mesh: Mesh) -> NewUser:
    """A registered user, registered from an address of its own: the limits shared by edge
    replicas are counted in the database, where the suite's other meshes count theirs too, and
    they all register from 127.0.0.1."""
    created = new_user()
    with client_at(mesh.edge_address, "127.0.0.8") as http:
        answer = http.post(
            "/v1/auth:register",
            json={
                "email": created.email,
                "username": created.username,
                "password": created.password,
            },
        )
    assert answer.status_code == 200, answer.text
    return created


@contextlib.contextmanager
def client_at(edge_address: str, source: str) -> Iterator[httpx.Client]:
    """An HTTP/1.1 client of the edge whose connections come from the loopback address source."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=f"http://{edge_address}", transport=transport, timeout=30) as http:
        yield http


def rest_login(http: httpx.Client, user: NewUser, **headers: str) -> httpx.Response:
    """Log user in over REST."""
    body = {"email": user.email, "password": user.password}
    return http.post("/v1/auth:login", json=body, headers=headers)


def assert_rate_limited_json(answer: httpx.Response) -> int:
    """Check a REST refusal by the rate limits and return its Retry-After in seconds."""
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert body["details"][0]["reason"] == "RATE_LIMITED"
    assert "too many requests" in body["message"]
    retry_after = int(answer.headers["retry-after"])
    assert 1 <= retry_after <= DAY
    return retry_after


@contextlib.contextmanager
def edge_replica(mesh: Mesh, folder: Path, **changes: object) -> Iterator[str]:
    """A second Envoy in front of the same services (its own ports and media cache, plus
    changes to its configuration); yields its host:port once every cluster is healthy."""
    ports = MeshPorts.free()
    config = dataclasses.replace(
        mesh.edge_config(),
        listen_port=ports.edge,
        admin_port=ports.admin,
        media_cache_dir=folder / "cache",
        **changes,  # type: ignore[arg-type]
    )
    path = write(config, folder / "envoy.yaml")
    command = [str(ENVOY_BIN), "-c", str(path), "--base-id", str(ports.edge)]
    with (folder / "envoy.log").open("wb") as log:
        process = subprocess.Popen([*command, "--log-level", "warn"], stdout=log, stderr=log)
    try:
        _wait_healthy(ports.admin, process)
        yield f"127.0.0.1:{ports.edge}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_healthy(admin_port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until the Envoy behind admin_port has a healthy endpoint in each service cluster."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the second edge exited"
        with contextlib.suppress(urllib.error.URLError, ConnectionError):
            url = f"http://127.0.0.1:{admin_port}/clusters"
            with urllib.request.urlopen(url, timeout=1) as reply:
                text = reply.read().decode()
            healthy = {
                line.split("::", 1)[0]
                for line in text.splitlines()
                if "::health_flags::healthy" in line
            }
            if {"auth_svc", "user_svc", "storage_svc"} <= healthy:
                return
        time.sleep(0.2)
    raise TimeoutError("the second edge's clusters are not healthy")


def test_rest_login_past_the_limit_is_429_with_json_and_retry_after(
    mesh: Mesh, user: NewUser
) -> None:
    with client_at(mesh.edge_address, "127.0.0.2") as http:
        for _ in range(LOGINS):
            assert rest_login(http, user).status_code == 200
        assert_rate_limited_json(rest_login(http, user))
        # The edge counts the connection's address; a header a client writes changes nothing.
        spoofed = rest_login(http, user, **{"x-forwarded-for": "198.51.100.9"})
        assert_rate_limited_json(spoofed)
    # Another client logs in as before.
    with client_at(mesh.edge_address, "127.0.0.6") as other:
        assert rest_login(other, user).status_code == 200


async def test_rest_and_native_grpc_share_a_bucket_and_grpc_sees_resource_exhausted(
    mesh: Mesh,
) -> None:
    email = new_user().email
    async with httpx.AsyncClient(base_url=f"http://{mesh.edge_address}", timeout=30) as http:
        for _ in range(RESETS - 1):
            answer = await http.post("/v1/auth:requestPasswordReset", json={"email": email})
            assert answer.status_code == 200, answer.text
        async with grpc.aio.insecure_channel(mesh.edge_address) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            request = auth_pb2.RequestPasswordResetRequest(email=email)
            await stub.RequestPasswordReset(request)  # the last one this window
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RequestPasswordReset(request)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many requests" in (refused.value.details() or "")
        trailers = dict(refused.value.trailing_metadata() or ())
        assert 1 <= int(str(trailers["retry-after"])) <= DAY
        # ...and REST, counted in the same bucket, is refused too.
        again = await http.post("/v1/auth:requestPasswordReset", json={"email": email})
        assert_rate_limited_json(again)


def test_grpc_web_reads_resource_exhausted_and_retry_after(mesh: Mesh, user: NewUser) -> None:
    body = grpc_web_frame(
        auth_pb2.LoginRequest(email=user.email, password=user.password).SerializeToString()
    )
    headers = {**WEB, "origin": BROWSER_ORIGIN}
    with client_at(mesh.edge_address, "127.0.0.3") as http:
        for _ in range(LOGINS):
            served = http.post("/meshgram.auth.v1.AuthService/Login", content=body, headers=headers)
            assert served.status_code == 200
        refused = http.post("/meshgram.auth.v1.AuthService/Login", content=body, headers=headers)
    # Trailers-only: the status in the headers, as the edge's other answers to gRPC-web.
    assert refused.headers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert "too many requests" in refused.headers["grpc-message"]
    assert refused.content == b""
    assert 1 <= int(refused.headers["retry-after"]) <= DAY
    # A page of another origin may read all of it.
    exposed = {h.strip() for h in refused.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message", "retry-after"} <= exposed


def test_the_login_limit_holds_across_edge_replicas(
    mesh: Mesh, user: NewUser, tmp_path: Path
) -> None:
    with (
        edge_replica(mesh, tmp_path) as second,
        client_at(mesh.edge_address, "127.0.0.4") as first_edge,
        client_at(second, "127.0.0.4") as second_edge,
    ):
        for _ in range(LOGINS // 2):
            assert rest_login(first_edge, user).status_code == 200
            assert rest_login(second_edge, user).status_code == 200
        # Each edge has seen only half of the logins; together they are at the limit.
        assert_rate_limited_json(rest_login(second_edge, user))
        assert_rate_limited_json(rest_login(first_edge, user))


def test_reads_are_not_held_to_the_strict_rate(mesh: Mesh, user: NewUser) -> None:
    with client_at(mesh.edge_address, "127.0.0.5") as http:
        for _ in range(LOGINS):
            assert rest_login(http, user).status_code == 200
        assert_rate_limited_json(rest_login(http, user))
        # Refused logins leave reads alone; reads have a looser limit of their own.
        reads = [http.get("/.well-known/jwks.json").status_code for _ in range(READS)]
        assert reads == [200] * READS
        assert assert_rate_limited_json(http.get("/.well-known/jwks.json")) == DAY


def test_an_unreachable_limiter_lets_calls_through(
    mesh: Mesh, user: NewUser, tmp_path: Path
) -> None:
    # A port nothing listens on: the edge's calls to the limiter fail at once.
    dead = MeshPorts.free().edge
    with (
        edge_replica(mesh, tmp_path, rate_limiter=(f"127.0.0.1:{dead}",)) as edge,
        client_at(edge, "127.0.0.7") as http,
    ):
        answers = [rest_login(http, user).status_code for _ in range(LOGINS + 2)]
    assert answers == [200] * (LOGINS + 2)
    # The same client through the edge whose limiter answers is held to the limit.
    with client_at(mesh.edge_address, "127.0.0.7") as http:
        answers = [rest_login(http, user).status_code for _ in range(LOGINS + 1)]
    assert answers == [200] * LOGINS + [429]


async def test_the_limiter_is_not_reachable_through_the_edge(mesh: Mesh) -> None:
    # Otherwise a client could count hits against another address and lock it out.
    path = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    request = ShouldRateLimitRequest(domain=DOMAIN)
    request.descriptors.add().entries.add(key="remote_address", value="198.51.100.9")
    async with grpc.aio.insecure_channel(mesh.edge_address) as channel:
        call = channel.unary_unary(
            path,
            request_serializer=ShouldRateLimitRequest.SerializeToString,
            response_deserializer=ShouldRateLimitResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    async with httpx.AsyncClient(base_url=f"http://{mesh.edge_address}", timeout=30) as http:
        web = await http.post(
            path, content=grpc_web_frame(request.SerializeToString()), headers=WEB
        )
    assert web.headers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
