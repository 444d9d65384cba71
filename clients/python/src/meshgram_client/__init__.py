"""Python client for meshgram's public gRPC API, through the edge.

    from meshgram_client import login, user_pb2
    session = login("127.0.0.1:8080", "ada@example.com", "correct horse battery staple")
    print(session.users.GetMyProfile(user_pb2.GetMyProfileRequest()).profile)

`Session` (here) and `meshgram_client.aio.Session` (asyncio) keep a login's token pair, send the
access token with every call and renew it before it expires. The generated modules (`auth_pb2`,
`user_pb2`, `storage_pb2` and their `*_pb2_grpc` stubs) come from the `meshgram` package that
this distribution installs beside `meshgram_client`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.storage.v1 import storage_pb2, storage_pb2_grpc
from meshgram.user.v1 import user_pb2, user_pb2_grpc
from meshgram_client._tokens import (
    Tokens,
    channel_credentials,
    token_expired,
    wants_bearer,
    with_bearer,
)

if TYPE_CHECKING:
    from grpc import _CallFuture, _CallIterator

__all__ = ["Session", "Tokens", "auth_pb2", "login", "storage_pb2", "user_pb2"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class Session:
    """A channel to the edge that keeps a login's token pair and sends the access token with
    every call, renewing it shortly before it expires, or once when a call is refused with
    TOKEN_EXPIRED (unary calls only: a request stream cannot be sent again). Safe to share
    between threads.

    Use it as `with Session(target) as session`, or close() it.
    """

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
        self._lock = threading.Lock()
        self._clock = clock
        credentials = channel_credentials(tls)
        if credentials is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            channel = grpc.secure_channel(target, credentials, options=options)
        self.channel = grpc.intercept_channel(channel, _Bearer(self))
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

    def login(self, email: str, password: str) -> Tokens:
        """Log in with AuthService.Login and keep the issued token pair."""
        reply = self.auth.Login(auth_pb2.LoginRequest(email=email, password=password))
        with self._lock:
            self._tokens = Tokens.issued(reply.tokens, self._clock())
            return self._tokens

    def logout(self) -> None:
        """End the login with AuthService.Logout and forget the token pair."""
        with self._lock:
            tokens, self._tokens = self._tokens, None
            if tokens is not None:
                self.auth.Logout(auth_pb2.LogoutRequest(refresh_token=tokens.refresh_token))

    def close(self) -> None:
        """Close the channel; calls still in flight are cancelled."""
        self.channel.close()

    def __enter__(self) -> Session:
        """Return the session itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the session's channel."""
        self.close()

    def _tokens_for_call(self) -> Tokens | None:
        """The tokens to send with a call starting now, renewed first when due."""
        tokens = self._tokens
        if tokens is None or not tokens.due(self._clock()):
            return tokens
        return self._renew(tokens)

    def _renew(self, stale: Tokens) -> Tokens | None:
        """Exchange `stale`'s refresh token for a new pair, unless another call already did."""
        # Threads that find the token stale at the same time wait here for one renewal: the
        # server revokes the whole login when a refresh token is presented twice.
        with self._lock:
            if self._tokens is stale:
                reply = self.auth.RefreshToken(
                    auth_pb2.RefreshTokenRequest(refresh_token=stale.refresh_token)
                )
                self._tokens = Tokens.issued(reply.tokens, self._clock())
            return self._tokens


def login(
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
        session.login(email, password)
    except BaseException:
        session.close()
        raise
    return session


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    """grpc asks interceptors for an object with these attributes and offers no class of its own."""

    method: str
    timeout: float | None
    metadata: tuple[tuple[str, str | bytes], ...] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


def _authorized(details: grpc.ClientCallDetails, tokens: Tokens | None) -> grpc.ClientCallDetails:
    """The call's details with the access token added to its metadata."""
    return _CallDetails(
        details.method,
        details.timeout,
        tuple(with_bearer(details.metadata, tokens)),
        details.credentials,
        details.wait_for_ready,
        details.compression,
    )


class _Bearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Sends the session's access token with every call that wants it."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def _prepare(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        """The details to call with: the session's access token added when the call wants it."""
        if not wants_bearer(details.method, details.metadata):
            return details
        return _authorized(details, self._session._tokens_for_call())

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, _Request], _CallFuture[_Response]],
        client_call_details: grpc.ClientCallDetails,
        request: _Request,
    ) -> _CallFuture[_Response]:
        """Run the call with the access token; once more after a renewal if it had expired.

        Deciding that needs the outcome, so a `.future()` call is complete when returned.
        """
        if not wants_bearer(client_call_details.method, client_call_details.metadata):
            return continuation(client_call_details, request)
        tokens = self._session._tokens_for_call()
        outcome = continuation(_authorized(client_call_details, tokens), request)
        # The clock said the token was fresh, yet the server found it expired (a clock that
        # jumped, a suspended laptop): renew it and send the same request again.
        if tokens is not None and token_expired(outcome.code(), outcome.trailing_metadata()):
            renewed = self._session._renew(tokens)
            outcome = continuation(_authorized(client_call_details, renewed), request)
        return outcome

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, _Request], _CallIterator[_Response]],
        client_call_details: grpc.ClientCallDetails,
        request: _Request,
    ) -> _CallIterator[_Response]:
        """Run the call with the access token."""
        return continuation(self._prepare(client_call_details), request)

    def intercept_stream_unary(
        self,
        continuation: Callable[
            [grpc.ClientCallDetails, Iterator[_Request]], _CallFuture[_Response]
        ],
        client_call_details: grpc.ClientCallDetails,
        request_iterator: Iterator[_Request],
    ) -> _CallFuture[_Response]:
        """Run the call with the access token."""
        return continuation(self._prepare(client_call_details), request_iterator)

    def intercept_stream_stream(
        self,
        continuation: Callable[
            [grpc.ClientCallDetails, Iterator[_Request]], _CallIterator[_Response]
        ],
        client_call_details: grpc.ClientCallDetails,
        request_iterator: Iterator[_Request],
    ) -> _CallIterator[_Response]:
        """Run the call with the access token."""
        return continuation(self._prepare(client_call_details), request_iterator)
