"""Answers that keep the contract whoever composes them, the edge or a service: every error a
gRPC code and a readable message, one verdict per request, the status the client got in the
access log, and conditional downloads."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from typing import Any

import grpc
import httpx
import pytest

from meshgram.auth.v1 import auth_pb2
from meshgram.user.v1 import user_pb2, user_pb2_grpc
from tests.e2e.support import (
    NewUser,
    grpc_web_frame,
    grpc_web_unframe,
    png_bytes,
    raw_grpc_status,
    rest_sign_in,
    wait_for_request,
)
from tools.mesh import Mesh

WEB = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
GET_MY_PROFILE = "/meshgram.user.v1.UserService/GetMyProfile"


def signed_in(http: httpx.Client) -> tuple[NewUser, str]:
    """A fresh registered user and its access token."""
    user, tokens = rest_sign_in(http)
    return user, str(tokens["accessToken"])


def reason(body: dict[str, Any]) -> str:
    """The ErrorInfo reason of a JSON error ("" when there is none)."""
    for detail in body.get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return str(detail["reason"])
    return ""


# --- query parameters may not rebind fields that the path or the body set


@pytest.mark.parametrize(
    ("method", "path", "parameter"),
    [
        ("GET", "/v1/profiles/ada?username=bob", "username"),
        ("GET", "/v1/profiles/ada?%75sername=bob", "username"),
        ("PATCH", "/v1/profiles/me?profile.bio=x", "profile.bio"),
        ("GET", "/v1/images/abc?image_id=def", "image_id"),
        ("POST", "/v1/auth:login?email=someone@example.com", "email"),
    ],
)
def test_query_cannot_rebind_a_path_or_body_field(
    http: httpx.Client, method: str, path: str, parameter: str
) -> None:
    _, token = signed_in(http)
    reply = http.request(method, path, json={}, headers={"authorization": f"Bearer {token}"})
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert f'"{parameter}"' in body["message"]
    assert reason(body) == "MALFORMED_REQUEST"


@pytest.mark.parametrize("query", ["?a", "?updateMask", "?a&b"])
def test_a_query_parameter_without_a_value_is_refused(http: httpx.Client, query: str) -> None:
    _, token = signed_in(http)
    reply = http.get("/v1/profiles/me" + query, headers={"authorization": f"Bearer {token}"})
    assert reply.status_code == 400
    assert "has no value" in reply.json()["message"]


def test_query_still_carries_fields_nothing_else_binds(http: httpx.Client) -> None:
    user, token = signed_in(http)
    reply = http.patch(
        "/v1/profiles/me?updateMask=bio",
        json={"bio": "from the body", "displayName": "ignored: not in the mask"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["profile"]["bio"] == "from the body"
    assert reply.json()["profile"]["username"] == user.username


# --- header sizes: one limit, at the edge, the same answer every time


def test_a_long_garbage_token_is_always_unauthenticated(http: httpx.Client) -> None:
    # 12 KiB: between grpc's default soft and hard metadata limits, where answers were random.
    headers = {"authorization": "Bearer " + "a" * 12_000}
    answers = {http.get("/v1/profiles/me", headers=headers).status_code for _ in range(8)}
    assert answers == {401}


def test_headers_over_the_edge_limit_are_431_with_a_grpc_code(http: httpx.Client) -> None:
    reply = http.get("/v1/profiles/me", headers={"authorization": "Bearer " + "a" * 20_000})
    assert reply.status_code == 431
    body = reply.json()
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert reason(body) == "HEADERS_TOO_LARGE"
    assert "authorization" not in body["message"]


async def test_native_grpc_with_oversized_metadata_is_refused_not_random(
    edge_channel: grpc.aio.Channel,
) -> None:
    stub = user_pb2_grpc.UserServiceStub(edge_channel)
    codes = set()
    for size in (12_000, 12_000, 40_000, 40_000):
        try:
            await stub.GetMyProfile(
                user_pb2.GetMyProfileRequest(),
                metadata=(("authorization", "Bearer " + "a" * size),),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            codes.add((size, error.code()))
    assert codes == {
        (12_000, grpc.StatusCode.UNAUTHENTICATED),
        (40_000, grpc.StatusCode.RESOURCE_EXHAUSTED),
    }


def test_a_header_name_grpc_cannot_carry_is_invalid_argument(http: httpx.Client) -> None:
    # "|" is a legal HTTP header-name character but not a gRPC metadata one: a service would
    # fail such a call as INTERNAL.
    reply = http.get("/.well-known/jwks.json", headers={"|": "x"})
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert '"|"' in body["message"]


@pytest.mark.parametrize(
    "header",
    [
        {"x-trace-bin": "!!!"},  # binary metadata that is not base64
        {"x-trace-bin": "AQI="},
        {"grpc-status-details-bin": "%%%"},
        {"grpc-previous-rpc-attempts": "x"},
        {"grpc-encoding": "gzip"},  # on a REST call, whose body the edge encodes itself
        {"grpc-status": "13"},
    ],
)
def test_grpc_headers_from_a_rest_client_do_not_break_the_call(
    http: httpx.Client, header: dict[str, str]
) -> None:
    # Each of these made grpcio fail the call as INTERNAL (HTTP 500).
    assert http.get("/.well-known/jwks.json", headers=header).status_code == 200
    login = http.post(
        "/v1/auth:login",
        # An address of its own each time: failures for one address from here would lock it.
        json={"email": f"nobody.{uuid.uuid4().hex[:10]}@example.com", "password": "x" * 9},
        headers=header,
    )
    assert login.status_code == 401


def test_an_unknown_grpc_encoding_is_invalid_argument(http: httpx.Client) -> None:
    reply = http.post(
        "/meshgram.auth.v1.AuthService/GetJwks",
        content=grpc_web_frame(b""),
        headers={**WEB, "grpc-encoding": "br"},
    )
    assert reply.headers["grpc-status"] == str(grpc.StatusCode.INVALID_ARGUMENT.value[0])
    # The text is in grpc-message, not in the body, where gRPC-web clients read frames.
    assert "br" in reply.headers["grpc-message"]
    assert reply.content == b""


def test_grpc_web_edge_answers_carry_their_text_in_grpc_message(http: httpx.Client) -> None:
    reply = http.post(
        "/meshgram.auth.v1.AuthService/GetJwks",
        content=grpc_web_frame(b""),
        headers={"content-type": "application/grpc-web+json"},
    )
    assert reply.headers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
    assert reply.headers["grpc-message"]
    assert reply.content == b""


def test_native_grpc_without_te_trailers_is_served(mesh: Mesh) -> None:
    # grpcio resets such a stream (the caller read UNAVAILABLE, "remote reset"); curl and some
    # proxies leave the header out.
    status = raw_grpc_status(
        mesh.edge_address, "/meshgram.auth.v1.AuthService/GetJwks", b"\x00" * 5, {}
    )
    assert status == "0"


def test_a_secret_after_a_non_utf8_byte_is_not_echoed(http: httpx.Client) -> None:
    reply = http.post(
        "/v1/auth:login",
        content=b'{"email":"ada@example.com","password":"p\xe4sswort-geheim-1234"}',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 400
    assert "geheim" not in reply.text
    assert reply.json()["message"]


def test_head_on_a_rest_route_is_405_with_allow(http: httpx.Client) -> None:
    reply = http.head("/v1/profiles/me")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "DELETE, GET, PATCH"


def test_an_unknown_transfer_coding_has_a_grpc_code(mesh: Mesh) -> None:
    host, port = mesh.edge_address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/auth:login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n"
            b"Connection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"501"
    assert json.loads(body)["code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]


def test_a_method_the_codec_refuses_still_gets_a_message(http: httpx.Client) -> None:
    reply = http.request("QUERY", "/.well-known/jwks.json")
    assert reply.status_code == 400
    assert reply.json()["message"]


def test_bad_json_gets_a_readable_message_and_details(http: httpx.Client) -> None:
    reply = http.post(
        "/v1/auth:login",
        content=b'{"email":"\\ud800"}',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "\n" not in body["message"]
    assert "^" not in body["message"]
    assert body["message"]
    assert reason(body) == "MALFORMED_REQUEST"


def test_http_1_0_clients_are_served(mesh: Mesh) -> None:
    host, port = mesh.edge_address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /.well-known/jwks.json HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"200", head
    assert b'"keys"' in body


# --- a REST path asked with a method it does not serve


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/profiles/me", "DELETE, GET, PATCH"),
        ("PUT", "/v1/auth:login", "POST"),
        ("TRACE", "/.well-known/jwks.json", "GET"),
        ("POST", "/v1/images/abc:download", "GET"),
    ],
)
def test_a_known_path_with_another_method_is_405_with_allow(
    http: httpx.Client, method: str, path: str, allow: str
) -> None:
    reply = http.request(method, path)
    assert reply.status_code == 405
    assert reply.headers["allow"] == allow
    body = reply.json()
    assert body["code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert reason(body) == "METHOD_NOT_ALLOWED"
    assert allow in body["message"]


# --- gRPC and gRPC-web paths take POST only


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_other_methods_on_grpc_web_paths_are_unimplemented(http: httpx.Client, method: str) -> None:
    reply = http.request(method, GET_MY_PROFILE, headers=WEB)
    assert reply.status_code < 500
    assert reply.headers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_grpc_paths_without_grpc_are_404_json(
    http: httpx.Client, method: str
) -> None:
    reply = http.request(method, GET_MY_PROFILE)
    assert reply.status_code == 404
    assert reply.json()["code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]


def test_invalid_base64_in_grpc_web_text_is_invalid_argument(http: httpx.Client) -> None:
    reply = http.post(
        GET_MY_PROFILE,
        content=b"!!!!",
        headers={"content-type": "application/grpc-web-text", "x-grpc-web": "1"},
    )
    assert reply.headers["grpc-status"] == str(grpc.StatusCode.INVALID_ARGUMENT.value[0])


@pytest.mark.parametrize("text", [False, True], ids=["grpc-web", "grpc-web-text"])
@pytest.mark.parametrize("method", ["Login", "GetJwks"])
def test_an_oversized_grpc_web_body_is_refused_as_too_large(
    http: httpx.Client, method: str, text: bool
) -> None:
    # Login's limit is shared by the edge replicas (a call to the limiter), GetJwks's is kept in
    # each replica: either way the body is judged by its size, never left to time out.
    frame = grpc_web_frame(b"\n" * 2_000_000)
    reply = http.post(
        f"/meshgram.auth.v1.AuthService/{method}",
        content=base64.b64encode(frame) if text else frame,
        headers={
            "content-type": "application/grpc-web-text" if text else "application/grpc-web+proto",
            "x-grpc-web": "1",
        },
    )
    assert reply.headers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])


# --- the access log records the status the client received


def test_access_log_records_the_grpc_status_each_client_received(
    http: httpx.Client, mesh: Mesh
) -> None:
    user, _ = signed_in(http)
    short = http.post(
        "/v1/auth:register", json={"email": "x@example.com", "username": "x", "password": "a"}
    )
    taken = http.post(
        "/v1/auth:register",
        json={"email": user.email, "username": user.username, "password": user.password},
    )
    web_ok = http.post(
        "/meshgram.auth.v1.AuthService/GetJwks",
        content=grpc_web_frame(auth_pb2.GetJwksRequest().SerializeToString()),
        headers=WEB,
    )
    assert grpc_web_unframe(web_ok.content)[1]["grpc-status"] == "0"
    bad_base64 = http.post(
        GET_MY_PROFILE,
        content=b"!!!!",
        headers={"content-type": "application/grpc-web-text", "x-grpc-web": "1"},
    )
    unknown = http.get("/v1/no/such/route")
    expected = {short: "3", taken: "6", web_ok: "0", bad_base64: "3", unknown: "12"}
    for reply, code in expected.items():
        [line] = wait_for_request(mesh, "envoy", reply.headers["x-request-id"])
        assert line["grpc_status"] == code, (line, reply.text)


# --- conditional downloads


def test_download_answers_304_when_if_none_match_names_it(http: httpx.Client) -> None:
    _, token = signed_in(http)
    auth = {"authorization": f"Bearer {token}"}
    image = http.post("/v1/images", content=png_bytes(), headers=auth).json()["image"]
    first = http.get(f"/v1/images/{image['id']}:download", headers=auth)
    assert first.status_code == 200
    assert first.headers["x-content-type-options"] == "nosniff"
    etag = first.headers["etag"]

    again = http.get(f"/v1/images/{image['id']}:download", headers={**auth, "if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert "meshgram-status" not in again.headers

    stale = http.get(
        f"/v1/images/{image['id']}:download", headers={**auth, "if-none-match": '"stale"'}
    )
    assert stale.status_code == 200
    assert stale.content == first.content
