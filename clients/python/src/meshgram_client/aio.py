"""The asyncio session (grpc.aio): `session = await login(target, email, password)`, then
`await session.users.GetMyProfile(user_pb2.GetMyProfileRequest())`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.storage.v1 import storage_pb2_grpc
from meshgram.user.v1 import user_pb2_grpc
from meshgram_client._tokens import (
    Tokens,
    channel_credentials,
    token_expired,
    wants_bearer,
    with_bearer,
)

if TYPE_CHECKING:
    from meshgram.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from meshgram.storage.v1.storage_pb2_grpc import StorageServiceAsyncStub
    from meshgram.user.v1.user_pb2_grpc import UserServiceAsyncStub

__all__ = ["Session", "Tokens", "login"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class Session:
    """A channel to the edge that keeps a login's token pair and sends the access token with
    every call, renewing it shortly before it expires, or once when a call is refused with
    TOKEN_EXPIRED (unary calls only: a request stream cannot be sent again).

    Use it as `async with Session(target) as session`, or close() it.
    """

    auth: AuthServiceAsyncStub
    users: UserServiceAsyncStub
    storage: StorageServiceAsyncStub

    def __init__(
        self,
        target: str,
        *,
        tls: bool | grpc.ChannelCredentials = False,
        options: Sequence[tuple[str, Any]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open a channel to `target` ("host:port"): plaintext, or TLS when `tls` is True (the
        system's root certificates) or channel credentials."""
        self._tokens: Tokens | None = None
        self._lock = asyncio.Lock()
        self._clock = clock
        # grpc.aio files each interceptor under one kind of call only, so one object per kind.
        interceptors: list[grpc.aio.ClientInterceptor] = [
            _UnaryUnary(self),
            _UnaryStream(self),
            _StreamUnary(self),
            _StreamStream(self),
        ]
        credentials = channel_credentials(tls)
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(
                target, options=options, interceptors=interceptors
            )
        else:
            self.channel = grpc.aio.secure_channel(
                target, credentials, options=options, interceptors=interceptors
            )
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.users = user_pb2_grpc.UserServiceStub(self.channel)
        self.storage = storage_pb2_grpc.StorageServiceStub(self.channel)

    @property
    def tokens(self) -> Tokens | None:
        """The token pair sent with calls, None before login and after logout."""
        return self._tokens

    @tokens.setter
    def tokens(self, tokens: Tokens | None) -> None:
        """Adopt a token pair obtained elsewhere (None forgets the current one)."""
        self._tokens = tokens

    async def login(self, email: str, password: str) -> Tokens:
        """Log in with AuthService.Login and keep the issued token pair."""
        reply = await self.auth.Login(auth_pb2.LoginRequest(email=email, password=password))
        async with self._lock:
            self._tokens = Tokens.issued(reply.tokens, self._clock())
            return self._tokens

    async def logout(self) -> None:
        """End the login with AuthService.Logout and forget the token pair."""
        async with self._lock:
            tokens, self._tokens = self._tokens, None
            if tokens is not None:
                await self.auth.Logout(auth_pb2.LogoutRequest(refresh_token=tokens.refresh_token))

    async def close(self) -> None:
        """Close the channel; calls still in flight are cancelled."""
        await self.channel.close()

    async def __aenter__(self) -> Session:
        """Return the session itself."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the session's channel."""
        await self.close()

    async def _tokens_for_call(self) -> Tokens | None:
        """The tokens to send with a call starting now, renewed first when due."""
        tokens = self._tokens
        if tokens is None or not tokens.due(self._clock()):
            return tokens
        return await self._renew(tokens)

    async def _renew(self, stale: Tokens) -> Tokens | None:
        """Exchange `stale`'s refresh token for a new pair, unless another call already did."""
        # Calls that find the token stale at the same time wait here for one renewal: the
        # server revokes the whole login when a refresh token is presented twice.
        async with self._lock:
            if self._tokens is stale:
                reply = await self.auth.RefreshToken(
                    auth_pb2.RefreshTokenRequest(refresh_token=stale.refresh_token)
                )
                self._tokens = Tokens.issued(reply.tokens, self._clock())
            return self._tokens


async def login(
    target: str,
    email: str,
    password: str,
    *,
    tls: bool | grpc.ChannelCredentials = False,
    options: Sequence[tuple[str, Any]] = (),
) -> Session:
    """Open a Session to the edge at `target` and log in."""
    session = Session(target, tls=tls, options=options)
    try:
        await session.login(email, password)
    except BaseException:
        await session.close()
        raise
    return session


def _authorized(
    details: grpc.aio.ClientCallDetails, tokens: Tokens | None
) -> grpc.aio.ClientCallDetails:
    """The call's details with the access token added to its metadata."""
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*with_bearer(details.metadata, tokens)),
        details.credentials,
        details.wait_for_ready,
    )


class _Interceptor:
    """What the four interceptors share: the session whose access token they send."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def _prepare(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        """The details to call with: the session's access token added when the call wants it."""
        if not wants_bearer(details.method, details.metadata):
            return details
        return _authorized(details, await self._session._tokens_for_call())


class _UnaryUnary(_Interceptor, grpc.aio.UnaryUnaryClientInterceptor):
    """Sends the access token, and retries once with a renewed one after TOKEN_EXPIRED."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request],
            Awaitable[grpc.aio.UnaryUnaryCall[_Request, _Response]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> grpc.aio.UnaryUnaryCall[_Request, _Response]:
        """Run the call with the access token; once more after a renewal if it had expired."""
        if not wants_bearer(client_call_details.method, client_call_details.metadata):
            return await continuation(client_call_details, request)
        tokens = await self._session._tokens_for_call()
        call = await continuation(_authorized(client_call_details, tokens), request)
        # The clock said the token was fresh, yet the server found it expired (a clock that
        # jumped, a suspended laptop): renew it and send the same request again.
        if tokens is not None and token_expired(await call.code(), await call.trailing_metadata()):
            renewed = await self._session._renew(tokens)
            call = await continuation(_authorized(client_call_details, renewed), request)
        return call


class _UnaryStream(_Interceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Sends the access token with server-streaming calls."""

    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request],
            Awaitable[grpc.aio.UnaryStreamCall[_Request, _Response]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> grpc.aio.UnaryStreamCall[_Request, _Response]:
        """Run the call with the access token."""
        return await continuation(await self._prepare(client_call_details), request)


class _StreamUnary(_Interceptor, grpc.aio.StreamUnaryClientInterceptor):
    """Sends the access token with client-streaming calls."""

    async def intercept_stream_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, AsyncIterable[_Request] | Iterable[_Request]],
            Awaitable[grpc.aio.StreamUnaryCall[_Request, _Response]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[_Request] | Iterable[_Request],
    ) -> grpc.aio.StreamUnaryCall[_Request, _Response]:
        """Run the call with the access token."""
        return await continuation(await self._prepare(client_call_details), request_iterator)


class _StreamStream(_Interceptor, grpc.aio.StreamStreamClientInterceptor):
    """Sends the access token with bidirectional-streaming calls."""

    async def intercept_stream_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, AsyncIterable[_Request] | Iterable[_Request]],
            Awaitable[grpc.aio.StreamStreamCall[_Request, _Response]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[_Request] | Iterable[_Request],
    ) -> grpc.aio.StreamStreamCall[_Request, _Response]:
        """Run the call with the access token."""
        return await continuation(await self._prepare(client_call_details), request_iterator)
