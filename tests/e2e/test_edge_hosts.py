"""Routing by host (EDGE_DOMAIN, docs/routing.md) through the real Envoy: a mesh of this module's
own serving auth., api. and media. of meshgram.test, asked at 127.0.0.1 with Host headers (REST,
gRPC-web), :authority (native gRPC, grpcurl). Each host serves its own services over every
protocol; another host's service, an unknown Host, or a page of another host is a JSON 404 with
NOT_FOUND (grpc-status 5 for gRPC callers). One host serving everything (EDGE_DOMAIN unset) is
what the session's mesh and the other end-to-end tests run."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.user.v1 import user_pb2, user_pb2_grpc
from meshkit.reasons import Reason
from tests import sample_images
from tests.e2e.media_support import upload, variant
from tests.e2e.support import grpc_web_frame, grpc_web_unframe, own_mesh, rest_sign_in
from tests.e2e.test_grpc import GRPCURL
from tests.e2e.test_social_graph import Member, ok, reason
from tools.mesh import Mesh

DOMAIN = "meshgram.test"
NOT_FOUND = 5
WEB_HEADERS = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}


@pytest.fixture(scope="module")
def hosts_mesh(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh of its own whose edge routes by host under meshgram.test."""
    state = tmp_path_factory.mktemp("edge-hosts")
    with own_mesh(database_url, state, {"EDGE_DOMAIN": DOMAIN}) as mesh:
        yield mesh


@pytest.fixture
def edge(hosts_mesh: Mesh) -> Iterator[httpx.Client]:
    """An HTTP client to the edge's address; each request names its Host."""
    with httpx.Client(base_url=f"http://{hosts_mesh.edge_address}", timeout=30) as client:
        yield client


def host(mesh: Mesh, label: str) -> str:
    """The Host header for one host of the domain, with the edge's port as browsers send it."""
    name = f"{label}.{DOMAIN}" if label else DOMAIN
    return f"{name}:{mesh.ports.edge}"


def at(mesh: Mesh, label: str, **headers: str) -> dict[str, str]:
    """Request headers naming the host label (and any others)."""
    return {"host": host(mesh, label), **headers}


@pytest.fixture
def signed_in(hosts_mesh: Mesh) -> Member:
    """A fresh user, registered and signed in over REST on the auth host."""
    with httpx.Client(
        base_url=f"http://{hosts_mesh.edge_address}",
        headers={"host": host(hosts_mesh, "auth")},
        timeout=30,
    ) as http:
        user, tokens = rest_sign_in(http)
    return Member(user, tokens)


def assert_not_on_this_host(reply: httpx.Response) -> None:
    """The edge's JSON 404 for a path the request's Host does not serve."""
    assert reply.status_code == 404, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["code"] == NOT_FOUND
    assert reason(reply) == Reason.NOT_ON_THIS_HOST
    assert "does not serve" in reply.json()["message"]


def test_each_host_serves_its_rest_api(
    hosts_mesh: Mesh, edge: httpx.Client, signed_in: Member
) -> None:
    bearer = signed_in.auth
    sessions = edge.get("/v1/auth/sessions", headers=at(hosts_mesh, "auth", **bearer))
    assert ok(sessions)["sessions"]
    assert "keys" in ok(edge.get("/.well-known/jwks.json", headers=at(hosts_mesh, "auth")))
    profile = ok(edge.get("/v1/profiles/me", headers=at(hosts_mesh, "api", **bearer)))
    assert profile["profile"]["username"] == signed_in.user.username.lower()

    # An upload on the api host; its file on the media host, by URL and by download method.
    edge.headers["host"] = host(hosts_mesh, "api")
    image = upload(edge, signed_in, sample_images.jpeg(48, 32))
    del edge.headers["host"]
    url = variant(image, "w320")["url"]
    served = edge.get(url, headers=at(hosts_mesh, "media"))
    assert served.status_code == 200, served.text
    assert served.headers["content-type"].startswith("image/")
    download = edge.get(f"/v1/images/{image['id']}:download", headers=at(hosts_mesh, "media"))
    assert download.status_code == 200, download.text
    assert download.headers["content-type"].startswith("image/")


def test_host_names_match_whatever_their_case_and_port(
    hosts_mesh: Mesh, edge: httpx.Client
) -> None:
    for name in (f"AUTH.{DOMAIN.upper()}", f"auth.{DOMAIN}:8443", f"Auth.{DOMAIN}"):
        reply = edge.get("/.well-known/jwks.json", headers={"host": name})
        assert reply.status_code == 200, (name, reply.text)


def test_a_service_of_another_host_is_not_found_over_rest(
    hosts_mesh: Mesh, edge: httpx.Client, signed_in: Member
) -> None:
    bearer = signed_in.auth
    # The user service on the auth host, AuthService and uploads on the media host.
    assert_not_on_this_host(edge.get("/v1/profiles/me", headers=at(hosts_mesh, "auth", **bearer)))
    login = {"email": signed_in.user.email, "password": signed_in.user.password}
    assert_not_on_this_host(
        edge.post("/v1/auth:login", json=login, headers=at(hosts_mesh, "media"))
    )
    assert_not_on_this_host(edge.get("/v1/images", headers=at(hosts_mesh, "media", **bearer)))
    # Pages stay on their host: the account page on auth, the API reference on api.
    assert_not_on_this_host(edge.get("/account/verify-email", headers=at(hosts_mesh, "api")))
    assert_not_on_this_host(edge.get("/docs", headers=at(hosts_mesh, "auth")))
    assert_not_on_this_host(edge.get("/docs", headers=at(hosts_mesh, "media")))


def test_pages_are_served_on_their_host(hosts_mesh: Mesh, edge: httpx.Client) -> None:
    account = edge.get("/account/verify-email", headers=at(hosts_mesh, "auth"))
    assert account.status_code == 200
    assert account.headers["content-type"].startswith("text/html")
    docs = edge.get("/docs/openapi.json", headers=at(hosts_mesh, "api"))
    assert docs.status_code == 200
    assert docs.json()["openapi"]


@pytest.mark.parametrize(
    "name", ["elsewhere.test", f"evil-{DOMAIN}", f"{DOMAIN}.evil.test", f"data.{DOMAIN}", ""]
)
def test_a_host_outside_the_domain_is_not_found(
    hosts_mesh: Mesh, edge: httpx.Client, name: str
) -> None:
    headers = {"host": f"{name}:{hosts_mesh.ports.edge}" if name else "127.0.0.1"}
    assert_not_on_this_host(edge.get("/.well-known/jwks.json", headers=headers))
    assert_not_on_this_host(edge.post("/v1/auth:login", json={}, headers=headers))


def test_the_bare_domain_and_www_lead_to_the_api_reference(
    hosts_mesh: Mesh, edge: httpx.Client
) -> None:
    for label in ("", "www"):
        home = edge.get("/", headers=at(hosts_mesh, label))
        assert home.status_code == 302
        assert home.headers["location"] == f"http://api.{DOMAIN}/docs"
        spec = edge.get("/docs/openapi.json", headers=at(hosts_mesh, label))
        assert spec.headers["location"] == f"http://api.{DOMAIN}/docs/openapi.json"
        assert_not_on_this_host(edge.get("/v1/profiles/me", headers=at(hosts_mesh, label)))


def test_cors_preflights_are_answered_on_each_host(hosts_mesh: Mesh, edge: httpx.Client) -> None:
    origin = hosts_mesh.cors_origins[0]
    asked = {"origin": origin, "access-control-request-method": "GET"}
    for label, path in (("auth", "/v1/auth/sessions"), ("api", "/v1/profiles/me")):
        preflight = edge.options(path, headers=at(hosts_mesh, label, **asked))
        assert preflight.status_code == 200, (label, preflight.text)
        assert preflight.headers["access-control-allow-origin"] == origin


def web_call(edge: httpx.Client, headers: dict[str, str], path: str, message: bytes) -> Any:
    """One gRPC-web call: the HTTP reply, its messages and its trailers (from headers when the
    reply is trailers-only)."""
    reply = edge.post(path, content=grpc_web_frame(message), headers={**WEB_HEADERS, **headers})
    messages, trailers = grpc_web_unframe(reply.content)
    return (
        reply,
        messages,
        {**trailers, **{k: v for k, v in reply.headers.items() if k.startswith("grpc-")}},
    )


def test_grpc_web_reaches_only_the_services_of_its_host(
    hosts_mesh: Mesh, edge: httpx.Client, signed_in: Member
) -> None:
    jwks = auth_pb2.GetJwksRequest().SerializeToString()
    _, messages, trailers = web_call(
        edge, at(hosts_mesh, "auth"), "/meshgram.auth.v1.AuthService/GetJwks", jwks
    )
    assert trailers["grpc-status"] == "0"
    assert auth_pb2.GetJwksResponse.FromString(messages[0]).keys

    mine = user_pb2.GetMyProfileRequest().SerializeToString()
    path = "/meshgram.user.v1.UserService/GetMyProfile"
    _, messages, trailers = web_call(edge, at(hosts_mesh, "api", **signed_in.auth), path, mine)
    assert trailers["grpc-status"] == "0"
    assert user_pb2.GetMyProfileResponse.FromString(messages[0]).profile.username

    for label, call, body in (
        ("auth", path, mine),
        ("media", "/meshgram.auth.v1.AuthService/GetJwks", jwks),
    ):
        reply, messages, trailers = web_call(
            edge, at(hosts_mesh, label, **signed_in.auth), call, body
        )
        assert not messages
        assert trailers["grpc-status"] == str(NOT_FOUND), (label, reply.headers)
        assert "does not serve" in trailers["grpc-message"]


@pytest.fixture
async def channel_to(hosts_mesh: Mesh) -> AsyncIterator[Any]:
    """Open native gRPC channels to the edge naming a host as :authority; closed at the end."""
    opened: list[grpc.aio.Channel] = []

    def open_channel(label: str) -> grpc.aio.Channel:
        options = [("grpc.default_authority", host(hosts_mesh, label))]
        channel = grpc.aio.insecure_channel(hosts_mesh.edge_address, options=options)
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        await channel.close()


async def test_native_grpc_reaches_only_the_services_of_its_host(
    channel_to: Any, signed_in: Member
) -> None:
    metadata = (("authorization", signed_in.auth["authorization"]),)
    jwks = await auth_pb2_grpc.AuthServiceStub(channel_to("auth")).GetJwks(
        auth_pb2.GetJwksRequest(), timeout=10
    )
    assert jwks.keys
    mine = await user_pb2_grpc.UserServiceStub(channel_to("api")).GetMyProfile(
        user_pb2.GetMyProfileRequest(), metadata=metadata, timeout=10
    )
    assert mine.profile.username == signed_in.user.username.lower()

    with pytest.raises(grpc.aio.AioRpcError) as crossed:
        await user_pb2_grpc.UserServiceStub(channel_to("auth")).GetMyProfile(
            user_pb2.GetMyProfileRequest(), metadata=metadata, timeout=10
        )
    assert crossed.value.code() == grpc.StatusCode.NOT_FOUND
    assert "does not serve" in (crossed.value.details() or "")
    for label in ("media", "nowhere"):
        with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
            await auth_pb2_grpc.AuthServiceStub(channel_to(label)).GetJwks(
                auth_pb2.GetJwksRequest(), timeout=10
            )
        assert elsewhere.value.code() == grpc.StatusCode.NOT_FOUND


def grpcurl(mesh: Mesh, label: str, *args: str) -> subprocess.CompletedProcess[str]:
    """grpcurl -plaintext -authority <label's host> [args...] EDGE [method]."""
    *options, verb = args
    command = [GRPCURL, "-plaintext", "-authority", host(mesh, label), *options]
    return subprocess.run(
        [*command, mesh.edge_address, verb], capture_output=True, text=True, timeout=60, check=False
    )


def test_grpcurl_with_an_authority_lists_and_calls_through_that_host(hosts_mesh: Mesh) -> None:
    listed = grpcurl(hosts_mesh, "api", "list")
    assert listed.returncode == 0, listed.stderr
    assert "meshgram.user.v1.UserService" in listed.stdout.split()
    called = grpcurl(hosts_mesh, "auth", "-d", "{}", "meshgram.auth.v1.AuthService/GetJwks")
    assert called.returncode == 0, called.stderr
    assert '"keys"' in called.stdout
    refused = grpcurl(hosts_mesh, "media", "list")
    assert refused.returncode != 0
    assert "NotFound" in refused.stderr or "does not serve" in refused.stderr


def test_the_edges_other_answers_are_unchanged_on_a_host(
    hosts_mesh: Mesh, edge: httpx.Client
) -> None:
    # A path no host serves is still "no such route", and bad JSON still INVALID_ARGUMENT.
    unknown = edge.get("/v1/auth/nothing-here", headers=at(hosts_mesh, "auth"))
    assert unknown.status_code == 404
    assert unknown.json()["code"] == 12
    assert reason(unknown) == Reason.ROUTE_NOT_FOUND
    broken = edge.post(
        "/v1/auth:login",
        content=b"{not json",
        headers=at(hosts_mesh, "auth", **{"content-type": "application/json"}),
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == 3
