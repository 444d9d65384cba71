"""Access tokens verified at the edge (EDGE_JWT): forged, expired and missing tokens are refused
by Envoy with exactly the answer the service gives, over REST, native gRPC and gRPC-web, without
the call reaching the service; a valid token passes with its claims forwarded; a client's copy
of the claims headers is removed; a rotated-in key is accepted without restarting Envoy."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_svc.keyring import read_keys
from auth_svc.keys import rotate
from meshgram.user.v1 import user_pb2
from meshkit.access_tokens import ACCOUNT_HEADER, CLAIMS_HEADER
from tests.e2e.support import (
    expired_copy,
    grpc_web_frame,
    grpc_web_unframe,
    log_lines,
    own_mesh,
    rest_sign_in,
    wait_for_request,
)
from tools.mesh import Mesh

PROTECTED_REST = "/v1/profiles/me"
PROTECTED_GRPC = "/meshgram.user.v1.UserService/GetMyProfile"
PUBLISH_DELAY_SECONDS = 4


@pytest.fixture(scope="module")
def jwt_mesh(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh of its own whose edge starts without token checks (the services' answers are
    recorded first), refetching the keys every second; a rotated key signs after 4 s."""
    env = {
        "EDGE_JWT": "0",
        "EDGE_JWKS_REFRESH_SECONDS": "1",
        "AUTH_JWT_KEY_PUBLISH_DELAY_SECONDS": str(PUBLISH_DELAY_SECONDS),
        "AUTH_JWT_KEYS_RELOAD_SECONDS": "0.5",
    }
    with own_mesh(database_url, tmp_path_factory.mktemp("edge-jwt"), env) as mesh:
        yield mesh


def edge_checks(mesh: Mesh, on: bool) -> None:
    """Restart the mesh's edge with token checks on or off, unless they already are."""
    wanted = "1" if on else "0"
    if mesh.extra_env.get("EDGE_JWT") != wanted:
        mesh.restart_edge({"EDGE_JWT": wanted})


def stat(mesh: Mesh, name: str) -> int:
    """One counter of the edge's admin stats (0 when it does not exist yet)."""
    url = f"http://127.0.0.1:{mesh.ports.admin}/stats?filter=^{name}$"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def signing_key(mesh: Mesh) -> Path:
    """The file of the key auth_svc signs with now."""
    return read_keys(mesh.state_dir / "keys" / "jwt", retention_seconds=0).signing(time.time()).path


def segment(part: dict[str, Any]) -> str:
    """One JWS segment: JSON, base64url without padding."""
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def forged_tokens(token: str, mesh: Mesh) -> dict[str, str]:
    """Ways to get a token wrong, by name, made from a real one."""
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    head, _, signature = token.split(".")
    altered = {**claims, "sub": "00000000-0000-0000-0000-000000000000"}
    unsigned = {"alg": "none", "typ": "JWT", "kid": header["kid"]}
    return {
        "wrong key": jwt.encode(
            claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": header["kid"]}
        ),
        "alg none": f"{segment(unsigned)}.{segment(claims)}.",
        "altered payload": f"{head}.{segment(altered)}.{signature}",
        "expired": expired_copy(token, signing_key(mesh)),
        "not a JWT": "not-a-token",
    }


def rest_answer(mesh: Mesh, authorization: str | None) -> dict[str, Any]:
    """What a REST client sees of a protected read."""
    headers = {} if authorization is None else {"authorization": authorization}
    reply = httpx.get(f"http://{mesh.edge_address}{PROTECTED_REST}", headers=headers, timeout=30)
    return {
        "status": reply.status_code,
        "content-type": reply.headers.get("content-type"),
        "www-authenticate": reply.headers.get("www-authenticate"),
        "body": reply.text,
        "request_id": reply.headers["x-request-id"],
    }


def grpc_web_answer(mesh: Mesh, authorization: str | None) -> dict[str, Any]:
    """What a gRPC-web client sees of a protected read (headers and trailers together)."""
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
    if authorization is not None:
        headers["authorization"] = authorization
    reply = httpx.post(
        f"http://{mesh.edge_address}{PROTECTED_GRPC}",
        content=grpc_web_frame(user_pb2.GetMyProfileRequest().SerializeToString()),
        headers=headers,
        timeout=30,
    )
    _, trailers = grpc_web_unframe(reply.content)
    seen = {**{k.lower(): v for k, v in reply.headers.items()}, **trailers}
    return {
        "status": reply.status_code,
        "grpc-status": seen.get("grpc-status"),
        "grpc-message": seen.get("grpc-message"),
        "details": _details(seen.get("grpc-status-details-bin")),
        "www-authenticate": seen.get("www-authenticate"),
    }


def _details(value: str | None) -> bytes | None:
    """A grpc-status-details-bin value decoded (padded or not)."""
    if value is None:
        return None
    return base64.b64decode(value + "=" * (-len(value) % 4))


async def grpc_answer(mesh: Mesh, authorization: str | None) -> dict[str, Any]:
    """What a native gRPC client sees of a protected read."""
    metadata = () if authorization is None else (("authorization", authorization),)
    async with grpc.aio.insecure_channel(mesh.edge_address) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(PROTECTED_GRPC)
        try:
            await call(b"", metadata=metadata, timeout=30)
        except grpc.aio.AioRpcError as error:
            trailers = dict(error.trailing_metadata() or ())
            return {
                "code": error.code(),
                "message": error.details(),
                "details": trailers.get("grpc-status-details-bin"),
            }
    return {"code": grpc.StatusCode.OK}


async def answers(mesh: Mesh, cases: dict[str, str | None]) -> dict[str, dict[str, Any]]:
    """Every protocol's answer to every case (an authorization header value, or none)."""
    out = {}
    for name, authorization in cases.items():
        out[f"{name} over REST"] = rest_answer(mesh, authorization)
        out[f"{name} over gRPC-web"] = grpc_web_answer(mesh, authorization)
        out[f"{name} over gRPC"] = await grpc_answer(mesh, authorization)
    return out


async def test_the_edge_refuses_bad_tokens_as_the_service_does(jwt_mesh: Mesh) -> None:
    edge_checks(jwt_mesh, on=False)
    with httpx.Client(base_url=f"http://{jwt_mesh.edge_address}", timeout=30) as http:
        _, tokens = rest_sign_in(http)
    cases: dict[str, str | None] = {
        "no token": None,
        "another scheme": "Basic dXNlcjpwYXNz",
        **{
            name: f"Bearer {t}"
            for name, t in forged_tokens(tokens["accessToken"], jwt_mesh).items()
        },
    }
    by_service = await answers(jwt_mesh, cases)
    # The service answered each one itself (and logged it).
    for name, answer in by_service.items():
        if name.endswith("over REST"):
            assert answer["status"] == 401, (name, answer)
            assert wait_for_request(jwt_mesh, "user_svc", answer["request_id"]), name

    edge_checks(jwt_mesh, on=True)
    reached = stat(jwt_mesh, "cluster.user_svc.upstream_rq_total")
    by_edge = await answers(jwt_mesh, cases)
    assert stat(jwt_mesh, "cluster.user_svc.upstream_rq_total") == reached
    assert stat(jwt_mesh, "http.edge.jwt_authn.denied") >= len(by_edge)

    refused_ids = set()
    for name, answer in by_edge.items():
        expected = dict(by_service[name])
        if name.endswith("over REST"):
            # Request ids differ between any two requests.
            refused_ids.add(answer.pop("request_id"))
            expected.pop("request_id")
        assert answer == expected, name
    # The service never heard of the refused calls (it logs every failed call it answers).
    logged = {line.get("request_id") for line in log_lines(jwt_mesh, "user_svc")}
    assert not refused_ids & logged
    assert by_edge["expired over REST"]["www-authenticate"] == 'Bearer realm="meshgram"'
    assert json.loads(by_edge["expired over REST"]["body"])["details"][0]["reason"] == (
        "TOKEN_EXPIRED"
    )
    assert by_edge["no token over gRPC"]["code"] == grpc.StatusCode.UNAUTHENTICATED
    assert by_edge["wrong key over gRPC-web"]["grpc-status"] == "16"


def test_a_valid_token_passes_with_its_claims_and_client_copies_are_removed(
    jwt_mesh: Mesh,
) -> None:
    edge_checks(jwt_mesh, on=True)
    with httpx.Client(base_url=f"http://{jwt_mesh.edge_address}", timeout=30) as http:
        user, tokens = rest_sign_in(http)
        bearer = {"authorization": f"Bearer {tokens['accessToken']}"}
        account_id = jwt.decode(tokens["accessToken"], options={"verify_signature": False})["sub"]
        forged = {ACCOUNT_HEADER: "someone-else", CLAIMS_HEADER: "e30"}

        mine = http.get(PROTECTED_REST, headers={**bearer, **forged})
        assert mine.status_code == 200, mine.text
        assert mine.json()["profile"]["username"] == user.username

        # A call the service fails (no such profile) is logged there, with the account the
        # edge vouched for: the token's, not the client's copy.
        missing = http.get("/v1/profiles/nobody_here_at_all", headers={**bearer, **forged})
        assert missing.status_code == 404
        [line] = wait_for_request(jwt_mesh, "user_svc", missing.headers["x-request-id"])
        assert line["edge_account_id"] == account_id

        # Without a token (the profile read allows none) the client's copy is gone too.
        anonymous = http.get("/v1/profiles/nobody_here_at_all", headers=forged)
        assert anonymous.status_code == 404
        [line] = wait_for_request(jwt_mesh, "user_svc", anonymous.headers["x-request-id"])
        assert "edge_account_id" not in line

        # A present but broken token on that public read is refused, as the service does.
        broken = http.get(
            "/v1/profiles/nobody_here_at_all", headers={"authorization": "Bearer not-a-token"}
        )
        assert broken.status_code == 401
        assert broken.json()["details"][0]["reason"] == "TOKEN_INVALID"

        # Calls that need no token pass with none.
        assert http.get("/.well-known/jwks.json").status_code == 200


def test_a_rotated_key_is_accepted_without_restarting_the_edge(jwt_mesh: Mesh) -> None:
    edge_checks(jwt_mesh, on=True)
    keys_dir = jwt_mesh.state_dir / "keys" / "jwt"
    with httpx.Client(base_url=f"http://{jwt_mesh.edge_address}", timeout=30) as http:
        _, tokens = rest_sign_in(http)
        old_kid = jwt.get_unverified_header(tokens["accessToken"])["kid"]
        fetched = stat(jwt_mesh, "http.edge.jwt_authn.jwks_fetch_success")
        rotation = rotate(
            keys_dir,
            legacy_file=None,
            publish_delay_seconds=PUBLISH_DELAY_SECONDS,
            retention_seconds=3600,
        )
        assert rotation.created.kid != old_kid
        # Log in until auth_svc signs with the new key (after its publish delay).
        deadline = time.monotonic() + 30
        while True:
            _, tokens = rest_sign_in(http)
            if jwt.get_unverified_header(tokens["accessToken"])["kid"] == rotation.created.kid:
                break
            assert time.monotonic() < deadline, "auth_svc never signed with the rotated key"
            time.sleep(0.5)
        mine = http.get(
            PROTECTED_REST, headers={"authorization": f"Bearer {tokens['accessToken']}"}
        )
        assert mine.status_code == 200, mine.text
    assert stat(jwt_mesh, "http.edge.jwt_authn.jwks_fetch_success") > fetched


def test_without_keys_the_edge_asks_to_retry(jwt_mesh: Mesh) -> None:
    edge_checks(jwt_mesh, on=True)
    with httpx.Client(base_url=f"http://{jwt_mesh.edge_address}", timeout=30) as http:
        _, tokens = rest_sign_in(http)
        # A token the edge has not verified yet, once the keys it holds are older than their
        # refresh interval (1 s here) and auth_svc cannot give new ones.
        jwt_mesh.stop_service("auth_svc")
        try:
            time.sleep(1.5)
            reply = http.get(
                PROTECTED_REST, headers={"authorization": f"Bearer {tokens['accessToken']}"}
            )
            assert reply.status_code == 503, reply.text
            assert reply.json()["details"][0]["reason"] == "DEPENDENCY_UNAVAILABLE"
            assert reply.json()["message"] == "the signing keys cannot be fetched, please retry"
        finally:
            jwt_mesh.start_service("auth_svc")
        # Back as soon as auth_svc is: the next call fetches the keys.
        deadline = time.monotonic() + 30
        while True:
            reply = http.get(
                PROTECTED_REST, headers={"authorization": f"Bearer {tokens['accessToken']}"}
            )
            if reply.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert reply.status_code == 200, reply.text
