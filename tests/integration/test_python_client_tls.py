"""meshgram_client over TLS: a loopback server with a self-signed certificate stands in for an
edge that terminates TLS, and sees the session's bearer token."""

from __future__ import annotations

import datetime
import ipaddress
import math
from collections.abc import Iterator
from concurrent import futures

import grpc
import meshgram_client
import meshgram_client.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from meshgram_client import Tokens

from meshgram.user.v1 import user_pb2, user_pb2_grpc

# Never due for renewal: this server has no AuthService.
TOKENS = Tokens(access_token="over-tls", refresh_token="unused", refresh_at=math.inf)


def self_signed() -> tuple[bytes, bytes]:
    """A key and certificate (PEM) for 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshgram test edge")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


class EchoUsers(user_pb2_grpc.UserServiceServicer):
    """Answers GetMyProfile with the bearer token it received as the username."""

    def GetMyProfile(
        self, request: user_pb2.GetMyProfileRequest, context: grpc.ServicerContext
    ) -> user_pb2.GetMyProfileResponse:
        authorization = dict(context.invocation_metadata()).get("authorization", "")
        token = str(authorization).removeprefix("Bearer ")
        return user_pb2.GetMyProfileResponse(profile=user_pb2.Profile(username=token))


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[str, bytes]]:
    """A TLS UserService on a free loopback port; yields its address and certificate (PEM)."""
    key_pem, cert_pem = self_signed()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    user_pb2_grpc.add_UserServiceServicer_to_server(EchoUsers(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    server.start()
    try:
        yield f"127.0.0.1:{port}", cert_pem
    finally:
        server.stop(0).wait()


def test_sync_session_over_tls_sends_the_token(tls_server: tuple[str, bytes]) -> None:
    address, cert_pem = tls_server
    tls = grpc.ssl_channel_credentials(root_certificates=cert_pem)
    with meshgram_client.Session(address, tls=tls) as session:
        session.tokens = TOKENS
        reply = session.users.GetMyProfile(user_pb2.GetMyProfileRequest(), timeout=10)
    assert reply.profile.username == "over-tls"


async def test_aio_session_over_tls_sends_the_token(tls_server: tuple[str, bytes]) -> None:
    address, cert_pem = tls_server
    tls = grpc.ssl_channel_credentials(root_certificates=cert_pem)
    async with meshgram_client.aio.Session(address, tls=tls) as session:
        session.tokens = TOKENS
        reply = await session.users.GetMyProfile(user_pb2.GetMyProfileRequest(), timeout=10)
    assert reply.profile.username == "over-tls"


async def test_system_roots_do_not_trust_a_self_signed_edge(tls_server: tuple[str, bytes]) -> None:
    address, _ = tls_server
    async with meshgram_client.aio.Session(address, tls=True) as session:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await session.users.GetMyProfile(user_pb2.GetMyProfileRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
