"""Zero trust inside the mesh, through real processes: every service port takes only mutual TLS
with a certificate of the mesh's CA, data_access decides each caller by the SPIFFE identity of
its certificate, and the edge reaches the services over mutual TLS, health checks included.
A plaintext mesh (MESH_MTLS=0) still serves end to end."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2

from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.mesh_tls import MeshTls
from meshkit.peers import health_check
from meshkit.reasons import Reason
from tests.e2e.support import own_mesh, rest_sign_in
from tests.helpers import error_info
from tools.dev_certs import ensure_workload_certificate
from tools.mesh import SERVICES, Mesh

ACCOUNT_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def tls_mesh(mesh: Mesh) -> Mesh:
    """The session mesh, which runs mutual TLS unless the suite was started with MESH_MTLS=0."""
    if not mesh.mtls:
        pytest.skip("the session mesh runs plaintext (MESH_MTLS=0)")
    return mesh


def _address(mesh: Mesh, service: str) -> str:
    return f"127.0.0.1:{mesh.ports.of(service)}"


def _health(channel: grpc.Channel) -> health_pb2.HealthCheckResponse:
    return health_check(channel)(health_pb2.HealthCheckRequest(), timeout=5)


def _secure(address: str, tls: MeshTls) -> grpc.Channel:
    return grpc.secure_channel(address, tls.channel_credentials())


@pytest.mark.parametrize("service", SERVICES)
def test_a_plaintext_client_is_refused_by_every_service(tls_mesh: Mesh, service: str) -> None:
    with (
        grpc.insecure_channel(_address(tls_mesh, service)) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _health(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("service", SERVICES)
def test_a_certificate_of_another_ca_is_refused(
    tls_mesh: Mesh, service: str, tmp_path: Path
) -> None:
    # Same SPIFFE identity, same host names, but signed by a CA of its own: the handshake fails.
    foreign = ensure_workload_certificate("auth_svc", directory=tmp_path / "foreign")
    assert foreign.ca.read_bytes() != tls_mesh.workload_certificate("auth_svc").ca.read_bytes()
    mesh_ca = tls_mesh.workload_certificate("auth_svc").ca.read_bytes()
    impostor = MeshTls(cert=foreign.cert.read_bytes(), key=foreign.key.read_bytes(), ca=mesh_ca)
    with (
        _secure(_address(tls_mesh, service), impostor) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _health(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_trusts_another_ca_does_not_accept_the_service(
    tls_mesh: Mesh, tmp_path: Path
) -> None:
    own = tls_mesh.workload_certificate("user_svc")
    other_ca = ensure_workload_certificate("user_svc", directory=tmp_path / "other").ca
    wary = MeshTls(cert=own.cert.read_bytes(), key=own.key.read_bytes(), ca=other_ca.read_bytes())
    with (
        _secure(_address(tls_mesh, "data_access"), wary) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _health(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("service", SERVICES)
def test_a_certificate_of_the_mesh_passes_the_health_check(tls_mesh: Mesh, service: str) -> None:
    tls = tls_mesh.workload_tls("edge")
    assert tls is not None
    with _secure(_address(tls_mesh, service), tls) as channel:
        assert _health(channel).status == health_pb2.HealthCheckResponse.SERVING


async def _get_credentials(
    mesh: Mesh, workload: str, metadata: tuple[tuple[str, str], ...] = ()
) -> dataaccess_pb2.GetCredentialsResponse:
    """Call AccountStoreService/GetCredentials (auth_svc's alone) as workload's certificate."""
    async with mesh.channel("data_access", as_workload=workload) as channel:
        store = dataaccess_pb2_grpc.AccountStoreServiceStub(channel)
        return await store.GetCredentials(
            dataaccess_pb2.GetCredentialsRequest(email="nobody@example.com"),
            metadata=metadata,
            timeout=5,
        )


@pytest.mark.parametrize("workload", ["user_svc", "storage_svc", "edge"])
async def test_a_valid_certificate_of_the_wrong_workload_is_permission_denied(
    tls_mesh: Mesh, workload: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _get_credentials(tls_mesh, workload)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(refused.value).reason == Reason.CALLER_NOT_ALLOWED


async def test_caller_headers_cannot_borrow_another_identity(tls_mesh: Mesh) -> None:
    # user_svc claims to be auth_svc in the headers of plaintext mode: its certificate decides.
    claim = (("x-mesh-caller", "auth_svc"), ("x-mesh-caller-token", "whatever"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _get_credentials(tls_mesh, "user_svc", claim)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_right_workload_reaches_its_data(tls_mesh: Mesh) -> None:
    # auth_svc's certificate passes the caller check: the answer is about the data (no such
    # account), not about the caller.
    with pytest.raises(grpc.aio.AioRpcError) as answered:
        await _get_credentials(tls_mesh, "auth_svc")
    assert answered.value.code() == grpc.StatusCode.NOT_FOUND


def _edge_stats(mesh: Mesh) -> dict[str, int]:
    url = f"http://127.0.0.1:{mesh.ports.admin}/stats?format=json&filter=ssl.handshake$"
    with urllib.request.urlopen(url, timeout=5) as reply:
        stats = json.load(reply)["stats"]
    return {item["name"]: int(item["value"]) for item in stats if "value" in item}


def test_the_edge_reaches_every_service_over_mutual_tls(tls_mesh: Mesh, edge_url: str) -> None:
    with httpx.Client(base_url=edge_url, timeout=30) as http:
        user, tokens = rest_sign_in(http)
        bearer = {"authorization": f"Bearer {tokens['accessToken']}"}
        profile = http.get("/v1/profiles/me", headers=bearer)
        assert profile.status_code == 200, profile.text
        assert profile.json()["profile"]["username"] == user.username.lower()
        images = http.get("/v1/images", headers=bearer)
        assert images.status_code == 200, images.text
    # Every upstream cluster's connections (calls and health checks) went through TLS.
    stats = _edge_stats(tls_mesh)
    for cluster in ("auth_svc", "user_svc", "storage_svc"):
        assert stats.get(f"cluster.{cluster}.ssl.handshake", 0) > 0, stats


@pytest.fixture(scope="module")
def plaintext_mesh(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A private mesh with MESH_MTLS=0 (caller tokens from the mesh secret instead)."""
    with own_mesh(database_url, tmp_path_factory.mktemp("plaintext-mesh"), {}, mtls=False) as mesh:
        yield mesh


def test_a_plaintext_mesh_serves_end_to_end_and_still_names_its_callers(
    plaintext_mesh: Mesh,
) -> None:
    edge = f"http://{plaintext_mesh.edge_address}"
    with httpx.Client(base_url=edge, timeout=30) as http:
        _, tokens = rest_sign_in(http)
        bearer = {"authorization": f"Bearer {tokens['accessToken']}"}
        assert http.get("/v1/profiles/me", headers=bearer).status_code == 200
    # Without certificates data_access still refuses a caller that proves nothing.
    with grpc.insecure_channel(_address(plaintext_mesh, "data_access")) as channel:
        store = dataaccess_pb2_grpc.AccountStoreServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            store.GetCredentials(dataaccess_pb2.GetCredentialsRequest(email="x@example.com"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not (plaintext_mesh.state_dir / "certs").exists()
