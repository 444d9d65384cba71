"""AuthService end to end through real stubs: auth_svc -> data_access -> PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meshgram.auth.v1 import auth_pb2
from meshkit.access_tokens import AccessTokenVerifier
from tests.helpers import failure_of, health_status
from tests.integration.conftest import REUSE_WINDOW_SECONDS

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    from meshgram.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub as Stub


def unique() -> str:
    """A short unique suffix for emails and usernames."""
    return uuid.uuid4().hex[:10]


async def register(stub: Stub, email: str, username: str, password: str) -> auth_pb2.Account:
    """Register and return the created account."""
    response = await stub.Register(
        auth_pb2.RegisterRequest(email=email, username=username, password=password)
    )
    return response.account


async def login(stub: Stub, email: str, password: str) -> auth_pb2.TokenPair:
    """Log in and return the token pair."""
    response = await stub.Login(auth_pb2.LoginRequest(email=email, password=password))
    return response.tokens


async def refresh(stub: Stub, token: str) -> auth_pb2.TokenPair:
    """Refresh and return the new token pair."""
    response = await stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=token))
    return response.tokens


async def test_register_login_refresh_reuse_logout(auth_stub: Stub) -> None:
    suffix = unique()
    account = await register(
        auth_stub, f"Flow.{suffix}@Example.com", f"Flow_{suffix}", "amber kettle s3cret"
    )
    assert account.email == f"flow.{suffix}@example.com"
    assert account.username == f"flow_{suffix}"
    uuid.UUID(account.id)

    first = await login(auth_stub, f"FLOW.{suffix}@example.com", "amber kettle s3cret")
    assert first.token_type == "Bearer"
    assert first.expires_in == 900
    # Without remember-me the session, and so its refresh token, lasts 12 hours.
    assert first.refresh_expires_in == 12 * 3600

    async def fetch_jwks() -> Iterable[Mapping[str, str]]:
        jwks = await auth_stub.GetJwks(auth_pb2.GetJwksRequest())
        return [
            {"kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg, "use": k.use}
            for k in jwks.keys
        ]

    principal = await AccessTokenVerifier(fetch_jwks).verify(first.access_token)
    assert (principal.account_id, principal.username) == (account.id, account.username)

    second = await refresh(auth_stub, first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    # Another tab refreshing the same token within the reuse window gets the same successor.
    other_tab = await refresh(auth_stub, first.refresh_token)
    assert other_tab.refresh_token == second.refresh_token

    await asyncio.sleep(REUSE_WINDOW_SECONDS + 0.3)
    reused = await failure_of(refresh(auth_stub, first.refresh_token))
    assert (reused.code, reused.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )
    # Reuse revoked the whole family: the legitimate successor is dead too.
    revoked = await failure_of(refresh(auth_stub, second.refresh_token))
    assert (revoked.code, revoked.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )

    third = await login(auth_stub, account.email, "amber kettle s3cret")
    await auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token=third.refresh_token))
    await auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token=third.refresh_token))
    logged_out = await failure_of(refresh(auth_stub, third.refresh_token))
    assert (logged_out.code, logged_out.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )


@pytest.mark.parametrize("token", ["", "never-issued", "x" * 5000])
async def test_refresh_with_unusable_token(auth_stub: Stub, token: str) -> None:
    failure = await failure_of(refresh(auth_stub, token))
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )


@pytest.mark.parametrize("token", ["", "never-issued"])
async def test_logout_always_succeeds(auth_stub: Stub, token: str) -> None:
    await auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token=token))


async def test_a_taken_username_is_said_even_when_the_email_is_taken_too(auth_stub: Stub) -> None:
    suffix = unique()
    await register(auth_stub, f"dup.{suffix}@example.com", f"dup_{suffix}", "amber kettle s3cret")
    # Usernames are public: the answer names the username, whatever the email.
    failure = await failure_of(
        register(auth_stub, f"DUP.{suffix}@EXAMPLE.com", f"DUP_{suffix}", "amber kettle s3cret")
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN")


async def test_duplicate_username(auth_stub: Stub) -> None:
    suffix = unique()
    await register(auth_stub, f"u1.{suffix}@example.com", f"same_{suffix}", "amber kettle s3cret")
    failure = await failure_of(
        register(auth_stub, f"u2.{suffix}@example.com", f"SAME_{suffix}", "amber kettle s3cret")
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN")


@pytest.mark.parametrize(
    ("email", "username", "password", "fields"),
    [
        ("not-an-email", "valid_name", "amber kettle s3cret", ["email"]),
        ("ok@example.com", "no", "amber kettle s3cret", ["username"]),
        ("ok@example.com", "bad..name", "amber kettle s3cret", ["username"]),
        ("ok@example.com", "valid_name", "7chars!", ["password"]),
        ("ok@example.com", "valid_name", "p" * 1025, ["password"]),
        ("", "", "", ["email", "username", "password"]),
    ],
)
async def test_invalid_fields(
    auth_stub: Stub, email: str, username: str, password: str, fields: list[str]
) -> None:
    failure = await failure_of(register(auth_stub, email, username, password))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason == "INVALID_FIELD"
    assert failure.fields == fields


async def test_long_unicode_password(auth_stub: Stub) -> None:
    suffix = unique()
    password = ("пароль密码🔐" * 103)[:1024]
    email = f"long.{suffix}@example.com"
    await register(auth_stub, email, f"long_{suffix}", password)
    assert (await login(auth_stub, email, password)).access_token
    wrong = await failure_of(login(auth_stub, email, password[:-1] + "x"))
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED


async def test_login_failures_are_indistinguishable(auth_stub: Stub) -> None:
    suffix = unique()
    email = f"enum.{suffix}@example.com"
    await register(auth_stub, email, f"enum_{suffix}", "amber kettle s3cret")
    attempts = [
        login(auth_stub, email, "wrong-password"),
        login(auth_stub, f"nobody.{suffix}@example.com", "amber kettle s3cret"),
        login(auth_stub, "", "amber kettle s3cret"),
        login(auth_stub, "not an email", "amber kettle s3cret"),
        login(auth_stub, email, ""),
        # Over the raw length limit: refused without normalising, yet answered the same way.
        login(auth_stub, email, "\ufdfa" * 5000),
    ]
    failures = [await failure_of(attempt) for attempt in attempts]
    assert failures[0].code == grpc.StatusCode.UNAUTHENTICATED
    assert failures[0].reason == "INVALID_CREDENTIALS"
    assert all(f == failures[0] for f in failures)


async def test_register_refuses_a_password_far_over_the_limit(auth_stub: Stub) -> None:
    suffix = unique()
    # U+FDFA expands 18-fold under NFKC; 5000 of them are 15 KB on the wire.
    failure = await failure_of(
        register(auth_stub, f"huge.{suffix}@example.com", f"huge_{suffix}", "\ufdfa" * 5000)
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["password"])


@pytest.mark.parametrize("method", [login, lambda stub, email, pw: register(stub, email, "u", pw)])
async def test_oversized_messages_are_resource_exhausted(
    auth_stub: Stub, method: Callable[[Stub, str, str], Awaitable[Any]]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(auth_stub, "big@example.com", "p" * (1024 * 1024))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_jwks(auth_stub: Stub) -> None:
    jwks = await auth_stub.GetJwks(auth_pb2.GetJwksRequest())
    assert len(jwks.keys) == 1
    key = jwks.keys[0]
    assert (key.kty, key.crv, key.alg, key.use) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert key.x
    assert key.kid


async def test_health_is_serving(auth_channel: grpc.aio.Channel) -> None:
    for service in ("", "meshgram.auth.v1.AuthService"):
        status = await health_status(auth_channel, service)
        assert status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_every_public_service(auth_channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(auth_channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names: set[str] = set()
    async for response in stub.ServerReflectionInfo(iter([request])):
        names.update(s.name for s in response.list_services_response.service)
    assert {
        "meshgram.auth.v1.AuthService",
        "meshgram.user.v1.UserService",
        "meshgram.storage.v1.StorageService",
    } <= names
    assert not any(name.startswith("meshgram.dataaccess") for name in names)


async def test_new_user_fixture(new_user: Callable[..., Awaitable[Any]]) -> None:
    made = await new_user()
    assert made.account_id
    assert made.username.startswith("user_")
    assert made.metadata == (("authorization", f"Bearer {made.access_token}"),)
