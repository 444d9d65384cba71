"""meshgram_client's token keeping without a network: the interceptors are driven directly with
a fake continuation (standing in for the server) and a fake AuthService stub."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import meshgram_client
import meshgram_client.aio
import pytest
from google.rpc import error_details_pb2, status_pb2
from meshgram_client import Tokens
from meshgram_client._tokens import token_expired, wants_bearer

from meshgram.auth.v1 import auth_pb2
from meshgram.user.v1 import user_pb2

PROFILE = "/meshgram.user.v1.UserService/GetMyProfile"
LOGIN = "/meshgram.auth.v1.AuthService/Login"
TARGET = "127.0.0.1:9"  # never dialled: channels connect on their first call, and none is made


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def expired_trailers(reason: str = "TOKEN_EXPIRED") -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata of an UNAUTHENTICATED answer with an ErrorInfo reason, as the edge
    sends it."""
    status = status_pb2.Status(code=grpc.StatusCode.UNAUTHENTICATED.value[0])
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain="meshgram.dev"))
    return (("grpc-status-details-bin", status.SerializeToString()),)


def pair(number: int, expires_in: int = 900) -> auth_pb2.TokenPair:
    """The number-th token pair the fake auth_svc hands out."""
    return auth_pb2.TokenPair(
        access_token=f"access-{number}",
        refresh_token=f"refresh-{number}",
        token_type="Bearer",
        expires_in=expires_in,
    )


@dataclass
class FakeServer:
    """Answers calls like the edge: TOKEN_EXPIRED for tokens it lists as expired, OK otherwise;
    hands out pair 1, 2, 3… and refuses a refresh token presented twice."""

    expired: set[str] = field(default_factory=set)
    sent: list[tuple[str, str | None]] = field(default_factory=list)
    refreshes: list[str] = field(default_factory=list)
    issued: int = 0
    delay: float = 0.0

    def answer(self, details: grpc.ClientCallDetails) -> tuple[grpc.StatusCode, tuple[Any, ...]]:
        """Record the call's authorization; return its status code and trailers."""
        authorization = dict(details.metadata or ()).get("authorization")
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.sent.append((method, authorization))
        if authorization and authorization.removeprefix("Bearer ") in self.expired:
            return grpc.StatusCode.UNAUTHENTICATED, expired_trailers()
        return grpc.StatusCode.OK, ()

    def refresh(self, refresh_token: str) -> auth_pb2.RefreshTokenResponse:
        """Issue the next pair for a refresh token not presented before."""
        assert refresh_token not in self.refreshes, "refresh token presented twice"
        self.refreshes.append(refresh_token)
        return auth_pb2.RefreshTokenResponse(tokens=self.next_pair())

    def next_pair(self) -> auth_pb2.TokenPair:
        """The next pair in the sequence."""
        self.issued += 1
        return pair(self.issued)


class FakeAsyncAuth:
    """The slice of AuthServiceAsyncStub a session uses."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.logged_out: list[str] = []

    async def Login(self, request: auth_pb2.LoginRequest) -> auth_pb2.LoginResponse:
        return auth_pb2.LoginResponse(tokens=self.server.next_pair())

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest
    ) -> auth_pb2.RefreshTokenResponse:
        # Yield so that concurrent calls pile up behind the renewal in progress.
        await asyncio.sleep(self.server.delay)
        return self.server.refresh(request.refresh_token)

    async def Logout(self, request: auth_pb2.LogoutRequest) -> auth_pb2.LogoutResponse:
        self.logged_out.append(request.refresh_token)
        return auth_pb2.LogoutResponse()


class FakeSyncAuth:
    """The slice of AuthServiceStub a synchronous session uses."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.lock = threading.Lock()

    def RefreshToken(self, request: auth_pb2.RefreshTokenRequest) -> auth_pb2.RefreshTokenResponse:
        time.sleep(self.server.delay)
        with self.lock:
            return self.server.refresh(request.refresh_token)


class FakeAsyncCall:
    """What an aio continuation returns, reduced to what the interceptor reads."""

    def __init__(self, code: grpc.StatusCode, trailers: tuple[Any, ...]) -> None:
        self._code = code
        self._trailers = trailers

    async def code(self) -> grpc.StatusCode:
        return self._code

    async def trailing_metadata(self) -> tuple[Any, ...]:
        return self._trailers


class FakeOutcome:
    """What a sync continuation returns, reduced to what the interceptor reads."""

    def __init__(self, code: grpc.StatusCode, trailers: tuple[Any, ...]) -> None:
        self._code = code
        self._trailers = trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._trailers


def aio_details(method: str, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    """Call details as grpc.aio hands them to interceptors (the method as bytes)."""
    return grpc.aio.ClientCallDetails(
        method.encode(), 5.0, grpc.aio.Metadata(*metadata), None, None
    )


def sync_details(method: str, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    """Call details as grpc hands them to interceptors."""
    return meshgram_client._CallDetails(method, 5.0, metadata, None, None, None)


AioSetup = tuple[meshgram_client.aio.Session, FakeServer, Clock]
SyncSetup = tuple[meshgram_client.Session, FakeServer, Clock]


@pytest.fixture
async def aio_session() -> AsyncIterator[AioSetup]:
    """An asyncio session on the fake server, logged in (pair 1) at the fake clock's time."""
    server = FakeServer()
    clock = Clock()
    session = meshgram_client.aio.Session(TARGET, clock=clock)
    session.auth = FakeAsyncAuth(server)  # type: ignore[assignment]
    await session.login("ada@example.com", "correct horse battery staple")
    yield session, server, clock
    await session.close()


@pytest.fixture
def sync_session() -> Iterator[SyncSetup]:
    """A synchronous session on the fake server, holding pair 1."""
    server = FakeServer()
    clock = Clock()
    session = meshgram_client.Session(TARGET, clock=clock)
    session.auth = FakeSyncAuth(server)  # type: ignore[assignment]
    session.tokens = Tokens.issued(server.next_pair(), clock())
    yield session, server, clock
    session.close()


def move_to_renewal(
    session: meshgram_client.Session | meshgram_client.aio.Session, clock: Clock
) -> None:
    """Move the clock to the moment the session's access token is due for renewal."""
    assert session.tokens is not None
    clock.now = session.tokens.refresh_at


async def aio_call(session: meshgram_client.aio.Session, server: FakeServer, method: str) -> Any:
    """Run one unary call through the session's unary interceptor against the fake server."""

    async def continuation(details: Any, request: Any) -> FakeAsyncCall:
        await asyncio.sleep(0)
        return FakeAsyncCall(*server.answer(details))

    interceptor = meshgram_client.aio._UnaryUnary(session)
    return await interceptor.intercept_unary_unary(
        continuation, aio_details(method), user_pb2.GetMyProfileRequest()
    )


def sync_call(session: meshgram_client.Session, server: FakeServer, method: str) -> Any:
    """Run one unary call through the synchronous session's interceptor against the server."""
    interceptor = meshgram_client._Bearer(session)
    return interceptor.intercept_unary_unary(
        lambda details, request: FakeOutcome(*server.answer(details)),
        sync_details(method),
        user_pb2.GetMyProfileRequest(),
    )


def test_renewal_is_due_30_seconds_or_a_tenth_of_the_lifetime_before_expiry() -> None:
    assert Tokens.issued(pair(1, expires_in=900), 100.0).refresh_at == 100.0 + 870
    assert Tokens.issued(pair(1, expires_in=10), 100.0).refresh_at == 100.0 + 9
    tokens = Tokens.issued(pair(1, expires_in=10), 0.0)
    assert not tokens.due(8.9)
    assert tokens.due(9.0)


def test_only_token_expired_from_meshgram_counts_as_expiry() -> None:
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert token_expired(unauthenticated, expired_trailers())
    assert not token_expired(unauthenticated, expired_trailers("TOKEN_INVALID"))
    assert not token_expired(grpc.StatusCode.PERMISSION_DENIED, expired_trailers())
    assert not token_expired(unauthenticated, ())
    assert not token_expired(unauthenticated, (("grpc-status-details-bin", b"\x0a\x7f"),))
    foreign = status_pb2.Status(code=16)
    foreign.details.add().Pack(
        error_details_pb2.ErrorInfo(reason="TOKEN_EXPIRED", domain="elsewhere.example")
    )
    assert not token_expired(
        unauthenticated, (("grpc-status-details-bin", foreign.SerializeToString()),)
    )


def test_auth_service_and_callers_own_authorization_get_no_bearer() -> None:
    assert wants_bearer(PROFILE, ())
    assert wants_bearer(PROFILE.encode(), None)
    assert not wants_bearer(LOGIN, ())
    assert not wants_bearer(LOGIN.encode(), ())
    assert not wants_bearer(PROFILE, (("authorization", "Bearer mine"),))


async def test_aio_calls_carry_the_access_token(aio_session: AioSetup) -> None:
    session, server, _ = aio_session
    await aio_call(session, server, PROFILE)
    assert server.sent == [(PROFILE, "Bearer access-1")]
    assert server.refreshes == []


async def test_aio_concurrent_calls_due_for_renewal_share_one_refresh(
    aio_session: AioSetup,
) -> None:
    session, server, clock = aio_session
    server.delay = 0.01
    move_to_renewal(session, clock)
    calls = await asyncio.gather(*(aio_call(session, server, PROFILE) for _ in range(20)))
    assert server.refreshes == ["refresh-1"]
    assert [await call.code() for call in calls] == [grpc.StatusCode.OK] * 20
    assert {authorization for _, authorization in server.sent} == {"Bearer access-2"}
    assert session.tokens.access_token == "access-2"
    assert session.tokens.refresh_at == clock.now + 870


async def test_aio_token_expired_is_renewed_once_and_the_calls_retried(
    aio_session: AioSetup,
) -> None:
    session, server, _ = aio_session
    server.delay = 0.01
    server.expired.add("access-1")
    calls = await asyncio.gather(*(aio_call(session, server, PROFILE) for _ in range(10)))
    assert server.refreshes == ["refresh-1"]
    assert [await call.code() for call in calls] == [grpc.StatusCode.OK] * 10
    assert sorted(authorization for _, authorization in server.sent) == (
        ["Bearer access-1"] * 10 + ["Bearer access-2"] * 10
    )


async def test_aio_retries_only_once(aio_session: AioSetup) -> None:
    session, server, _ = aio_session
    server.expired.update({"access-1", "access-2"})
    call = await aio_call(session, server, PROFILE)
    assert await call.code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.refreshes == ["refresh-1"]
    assert len(server.sent) == 2


async def test_aio_auth_calls_neither_carry_nor_renew_the_token(aio_session: AioSetup) -> None:
    session, server, clock = aio_session
    move_to_renewal(session, clock)
    await aio_call(session, server, LOGIN)
    assert server.sent == [(LOGIN, None)]
    assert server.refreshes == []


async def test_aio_without_a_login_calls_go_without_a_token() -> None:
    server = FakeServer()
    async with meshgram_client.aio.Session(TARGET) as session:
        await aio_call(session, server, PROFILE)
    assert server.sent == [(PROFILE, None)]


async def test_aio_callers_own_authorization_is_left_alone(aio_session: AioSetup) -> None:
    session, server, _ = aio_session

    async def continuation(details: Any, request: Any) -> FakeAsyncCall:
        return FakeAsyncCall(*server.answer(details))

    mine = aio_details(PROFILE, (("authorization", "Bearer mine"),))
    interceptor = meshgram_client.aio._UnaryUnary(session)
    await interceptor.intercept_unary_unary(continuation, mine, user_pb2.GetMyProfileRequest())
    assert server.sent == [(PROFILE, "Bearer mine")]


async def test_aio_streaming_calls_carry_a_renewed_token(aio_session: AioSetup) -> None:
    session, server, clock = aio_session
    move_to_renewal(session, clock)

    async def continuation(details: Any, request: Any) -> FakeAsyncCall:
        return FakeAsyncCall(*server.answer(details))

    upload = "/meshgram.storage.v1.StorageService/UploadImage"
    interceptor = meshgram_client.aio._StreamUnary(session)
    await interceptor.intercept_stream_unary(continuation, aio_details(upload), iter(()))
    assert server.sent == [(upload, "Bearer access-2")]


async def test_aio_logout_ends_the_login_and_forgets_the_tokens(aio_session: AioSetup) -> None:
    session, _, _ = aio_session
    await session.logout()
    assert session.auth.logged_out == ["refresh-1"]
    assert session.tokens is None


def test_sync_calls_carry_the_access_token(
    sync_session: SyncSetup,
) -> None:
    session, server, _ = sync_session
    sync_call(session, server, PROFILE)
    sync_call(session, server, LOGIN)
    assert server.sent == [(PROFILE, "Bearer access-1"), (LOGIN, None)]


def test_sync_threads_due_for_renewal_share_one_refresh(
    sync_session: SyncSetup,
) -> None:
    session, server, clock = sync_session
    server.delay = 0.05
    move_to_renewal(session, clock)
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: sync_call(session, server, PROFILE), range(16)))
    assert server.refreshes == ["refresh-1"]
    assert [outcome.code() for outcome in outcomes] == [grpc.StatusCode.OK] * 16
    assert {authorization for _, authorization in server.sent} == {"Bearer access-2"}


def test_sync_token_expired_is_renewed_once_and_retried_once(
    sync_session: SyncSetup,
) -> None:
    session, server, _ = sync_session
    server.expired.add("access-1")
    assert sync_call(session, server, PROFILE).code() == grpc.StatusCode.OK
    assert server.sent == [(PROFILE, "Bearer access-1"), (PROFILE, "Bearer access-2")]
    server.expired.update({"access-2", "access-3"})
    assert sync_call(session, server, PROFILE).code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.refreshes == ["refresh-1", "refresh-2"]
    assert [authorization for _, authorization in server.sent[2:]] == [
        "Bearer access-2",
        "Bearer access-3",
    ]
