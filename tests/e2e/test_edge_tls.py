"""HTTPS at the edge, through a mesh of its own started with EDGE_TLS=1: native gRPC (grpcio and
grpcurl), REST and gRPC-web over TLS with the development CA, the plain port sending clients to
HTTPS, old protocol versions and weak ciphers refused, and a new certificate served without
restarting Envoy."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509

from meshgram.user.v1 import user_pb2, user_pb2_grpc
from tests.e2e.support import grpc_web_frame, grpc_web_unframe, own_mesh, rest_sign_in
from tools.dev_certs import LOCAL_HOSTS, ensure_server_certificate
from tools.edge_tls import HSTS_DEVELOPMENT
from tools.mesh import Mesh

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
CURL = shutil.which("curl")
GET_PROFILE = "/meshgram.user.v1.UserService/GetProfile"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def tls_mesh(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh whose edge serves HTTPS with the development certificate."""
    env = {"EDGE_TLS": "1", "EDGE_HTTPS_PORT": str(_free_port())}
    with own_mesh(database_url, tmp_path_factory.mktemp("edge-tls"), env) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def ca_file(tls_mesh: Mesh) -> Path:
    """The development CA a client must trust to accept the edge."""
    return tls_mesh.certs_dir / "ca.pem"


@pytest.fixture
def https(tls_mesh: Mesh, ca_file: Path) -> Iterator[httpx.Client]:
    """An HTTPS client of the edge trusting the development CA."""
    base = f"https://{tls_mesh.https_address}"
    trust = ssl.create_default_context(cafile=ca_file)
    with httpx.Client(base_url=base, verify=trust, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def signed_in(tls_mesh: Mesh, ca_file: Path) -> tuple[str, str]:
    """A user registered over HTTPS: (username, access token)."""
    base = f"https://{tls_mesh.https_address}"
    trust = ssl.create_default_context(cafile=ca_file)
    with httpx.Client(base_url=base, verify=trust, timeout=30) as client:
        user, tokens = rest_sign_in(client)
    return user.username, str(tokens["accessToken"])


def test_grpc_client_calls_over_tls_trusting_the_development_ca(
    tls_mesh: Mesh, ca_file: Path, signed_in: tuple[str, str]
) -> None:
    username, token = signed_in
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    with grpc.secure_channel(tls_mesh.https_address, credentials) as channel:
        reply = user_pb2_grpc.UserServiceStub(channel).GetProfile(
            user_pb2.GetProfileRequest(username=username),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=15,
        )
    assert reply.profile.username == username


def test_grpcurl_calls_over_tls_with_cacert(
    tls_mesh: Mesh, ca_file: Path, signed_in: tuple[str, str]
) -> None:
    username, token = signed_in
    command = [
        GRPCURL,
        "-cacert",
        str(ca_file),
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        json.dumps({"username": username}),
        tls_mesh.https_address,
        GET_PROFILE.strip("/"),
    ]
    called = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["profile"]["username"] == username


def test_rest_over_https_negotiates_http2_and_sends_hsts(
    tls_mesh: Mesh, ca_file: Path, https: httpx.Client, signed_in: tuple[str, str]
) -> None:
    username, token = signed_in
    reply = https.get(f"/v1/profiles/{username}", headers={"authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["profile"]["username"] == username
    # Development certificates must not pin a laptop's browser to HTTPS for localhost.
    assert reply.headers["strict-transport-security"] == HSTS_DEVELOPMENT

    # curl offers h2 and http/1.1 by ALPN, as browsers do; the edge picks HTTP/2.
    assert CURL is not None, "curl is needed to speak HTTP/2 over TLS"
    url = f"https://{tls_mesh.https_address}/v1/profiles/{username}"
    command = [CURL, "-sS", "--cacert", str(ca_file), "--http2", "-D", "-", "-o", "/dev/null"]
    command += ["-H", f"authorization: Bearer {token}", "-w", "version=%{http_version}", url]
    sent = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    assert sent.stdout.startswith("HTTP/2 200"), sent.stdout
    assert "version=2" in sent.stdout
    assert f"strict-transport-security: {HSTS_DEVELOPMENT}" in sent.stdout.lower()


def test_grpc_web_over_https(https: httpx.Client, signed_in: tuple[str, str]) -> None:
    username, token = signed_in
    request = user_pb2.GetProfileRequest(username=username).SerializeToString()
    reply = https.post(
        GET_PROFILE,
        content=grpc_web_frame(request),
        headers={
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "authorization": f"Bearer {token}",
        },
    )
    assert reply.status_code == 200
    messages, trailers = grpc_web_unframe(reply.content)
    assert trailers["grpc-status"] == "0"
    assert user_pb2.GetProfileResponse.FromString(messages[0]).profile.username == username


@pytest.mark.parametrize(("method", "status"), [("GET", 301), ("HEAD", 301), ("POST", 308)])
def test_plain_http_is_redirected_to_https(tls_mesh: Mesh, method: str, status: int) -> None:
    with httpx.Client(base_url=f"http://{tls_mesh.edge_address}", timeout=30) as plain:
        reply = plain.request(method, "/v1/profiles/someone?x=1", content=b"{}")
    assert reply.status_code == status
    https_port = tls_mesh.https_address.rsplit(":", 1)[1]
    assert reply.headers["location"] == f"https://127.0.0.1:{https_port}/v1/profiles/someone?x=1"


def test_grpc_on_the_plain_port_is_told_to_use_tls(tls_mesh: Mesh) -> None:
    with (
        grpc.insecure_channel(tls_mesh.edge_address) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        user_pb2_grpc.UserServiceStub(channel).GetProfile(
            user_pb2.GetProfileRequest(username="someone"), timeout=15
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "TLS" in str(refused.value.details())


def test_grpc_web_on_the_plain_port_is_told_to_use_tls(tls_mesh: Mesh) -> None:
    with httpx.Client(base_url=f"http://{tls_mesh.edge_address}", timeout=30) as plain:
        reply = plain.post(
            GET_PROFILE,
            content=grpc_web_frame(user_pb2.GetProfileRequest(username="x").SerializeToString()),
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
    assert reply.status_code == 200
    assert reply.headers["grpc-status"] == "9"
    assert "TLS" in reply.headers["grpc-message"]


def _handshake(tls_mesh: Mesh, context: ssl.SSLContext) -> ssl.SSLSocket:
    """An open TLS connection to the edge's HTTPS port with context (the caller closes it)."""
    host, port = tls_mesh.https_address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def _trusting(ca_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_file)
    return context


def test_tls_1_1_is_refused(tls_mesh: Mesh, ca_file: Path) -> None:
    context = _trusting(ca_file)
    with warnings.catch_warnings():
        # Python deprecates naming TLS 1.1 at all; this client must, to be refused.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    # Let this side offer TLS 1.1 at all, so that the refusal is the edge's.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        _handshake(tls_mesh, context).close()


def test_tls_1_2_without_an_aead_cipher_is_refused(tls_mesh: Mesh, ca_file: Path) -> None:
    context = _trusting(ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384")
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        _handshake(tls_mesh, context).close()
    # The same client with an AEAD suite gets in, and is offered HTTP/2.
    context = _trusting(ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2", "http/1.1"])
    with _handshake(tls_mesh, context) as connection:
        assert connection.version() == "TLSv1.2"
        assert connection.selected_alpn_protocol() == "h2"


def test_a_client_not_trusting_the_ca_does_not_connect(tls_mesh: Mesh) -> None:
    with (
        grpc.secure_channel(tls_mesh.https_address, grpc.ssl_channel_credentials()) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        user_pb2_grpc.UserServiceStub(channel).GetProfile(
            user_pb2.GetProfileRequest(username="someone"), timeout=15
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://{tls_mesh.https_address}/v1/profiles/someone", timeout=30)


def _served_certificate(tls_mesh: Mesh, ca_file: Path) -> x509.Certificate:
    with _handshake(tls_mesh, _trusting(ca_file)) as connection:
        der = connection.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_a_new_certificate_is_served_without_restarting_envoy(
    tls_mesh: Mesh, ca_file: Path
) -> None:
    envoy = tls_mesh.supervisor.process("envoy")
    assert envoy is not None
    before = _served_certificate(tls_mesh, ca_file)
    # `make certs --host ...` does this: the edge's certificate made again for one more name.
    ensure_server_certificate((*LOCAL_HOSTS, "rotated.example.test"), tls_mesh.certs_dir)
    deadline = time.monotonic() + 30
    served = before
    while served.serial_number == before.serial_number and time.monotonic() < deadline:
        time.sleep(0.2)
        served = _served_certificate(tls_mesh, ca_file)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "rotated.example.test" in names.get_values_for_type(x509.DNSName)
    assert tls_mesh.supervisor.process("envoy") is envoy
    assert envoy.poll() is None
