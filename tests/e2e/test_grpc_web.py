"""gRPC-web as a browser speaks it (frames built by hand per the gRPC-web spec) and CORS."""

from __future__ import annotations

import base64

import httpx

from meshgram.auth.v1 import auth_pb2
from meshgram.user.v1 import user_pb2
from tests.e2e.support import grpc_web_frame, grpc_web_text_decode, grpc_web_unframe, new_user

ORIGIN = "http://app.example.test"
WEB_HEADERS = {
    "content-type": "application/grpc-web+proto",
    "x-grpc-web": "1",
    "origin": ORIGIN,
}


def web_call(
    http: httpx.Client, path: str, message: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST one gRPC-web framed message."""
    return http.post(
        path, content=grpc_web_frame(message), headers={**WEB_HEADERS, **(headers or {})}
    )


def test_register_login_and_profile_over_grpc_web(http: httpx.Client) -> None:
    user = new_user()
    register = auth_pb2.RegisterRequest(
        email=user.email, username=user.username, password=user.password
    )
    reply = web_call(http, "/meshgram.auth.v1.AuthService/Register", register.SerializeToString())
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    messages, trailers = grpc_web_unframe(reply.content)
    assert trailers["grpc-status"] == "0"
    account = auth_pb2.RegisterResponse.FromString(messages[0]).account
    assert account.username == user.username

    login = auth_pb2.LoginRequest(email=user.email, password=user.password)
    reply = web_call(http, "/meshgram.auth.v1.AuthService/Login", login.SerializeToString())
    messages, trailers = grpc_web_unframe(reply.content)
    tokens = auth_pb2.LoginResponse.FromString(messages[0]).tokens

    reply = web_call(
        http,
        "/meshgram.user.v1.UserService/GetMyProfile",
        user_pb2.GetMyProfileRequest().SerializeToString(),
        {"authorization": f"Bearer {tokens.access_token}"},
    )
    messages, trailers = grpc_web_unframe(reply.content)
    assert trailers["grpc-status"] == "0"
    assert user_pb2.GetMyProfileResponse.FromString(messages[0]).profile.username == user.username


def test_grpc_web_text_encoding(http: httpx.Client) -> None:
    request = base64.b64encode(grpc_web_frame(auth_pb2.GetJwksRequest().SerializeToString()))
    reply = http.post(
        "/meshgram.auth.v1.AuthService/GetJwks",
        content=request,
        headers={
            **WEB_HEADERS,
            "content-type": "application/grpc-web-text",
            "accept": "application/grpc-web-text",
        },
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/grpc-web-text")
    messages, trailers = grpc_web_unframe(grpc_web_text_decode(reply.content))
    assert trailers["grpc-status"] == "0"
    assert auth_pb2.GetJwksResponse.FromString(messages[0]).keys


def test_grpc_web_errors_are_readable_by_the_browser(http: httpx.Client) -> None:
    reply = web_call(
        http,
        "/meshgram.user.v1.UserService/GetMyProfile",
        user_pb2.GetMyProfileRequest().SerializeToString(),
    )
    # A trailers-only reply: the status arrives as headers, which CORS must expose.
    assert reply.headers["grpc-status"] == "16"
    exposed = reply.headers["access-control-expose-headers"].lower()
    assert "grpc-status" in exposed
    assert "grpc-message" in exposed


def test_cors_preflight_allows_the_configured_origin(http: httpx.Client) -> None:
    reply = http.options(
        "/meshgram.auth.v1.AuthService/Login",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,authorization",
        },
    )
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in reply.headers["access-control-allow-headers"].lower()


def test_cors_preflight_from_another_origin_is_not_allowed(http: httpx.Client) -> None:
    reply = http.options(
        "/meshgram.auth.v1.AuthService/Login",
        headers={
            "origin": "http://evil.example.test",
            "access-control-request-method": "POST",
        },
    )
    assert reply.status_code < 500
    assert "access-control-allow-origin" not in reply.headers


def test_rest_paths_get_cors_too(http: httpx.Client) -> None:
    preflight = http.options(
        "/v1/auth:login",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    jwks = http.get("/.well-known/jwks.json", headers={"origin": ORIGIN})
    assert jwks.status_code == 200
    assert jwks.headers["access-control-allow-origin"] == ORIGIN
