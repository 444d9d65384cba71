"""What the synchronous and the asyncio sessions share: the kept token pair, when to renew it,
how the edge says a token has expired, and the bearer metadata."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from meshgram.auth.v1 import auth_pb2

REFRESH_MARGIN_SECONDS = 30.0
"""Renew an access token this long before it expires (or a tenth of its lifetime, if shorter)."""

# Values of the public error contract; the servers' copy is meshkit.reasons, which this
# distribution does not carry.
ERROR_DOMAIN = "meshgram.dev"
TOKEN_EXPIRED = "TOKEN_EXPIRED"

# AuthService calls carry their credentials in the request (or need none); sending them a bearer
# would gain nothing, and renewing a token before RefreshToken itself would never end.
_NO_BEARER_PREFIX = "/meshgram.auth.v1.AuthService/"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"

Metadatum = tuple[str, str | bytes]


@dataclass(frozen=True)
class Tokens:
    """The token pair a session holds, with the time at which it renews the access token."""

    access_token: str
    refresh_token: str
    refresh_at: float
    """Reading of the session's clock (time.monotonic by default) from which the access token is
    renewed before use; 0 renews it before the next call."""

    @classmethod
    def issued(cls, pair: auth_pb2.TokenPair, now: float) -> Tokens:
        """Keep a pair from Login or RefreshToken received at clock reading `now`."""
        lifetime = max(float(pair.expires_in), 0.0)
        margin = min(REFRESH_MARGIN_SECONDS, lifetime / 10)
        return cls(pair.access_token, pair.refresh_token, now + lifetime - margin)

    def due(self, now: float) -> bool:
        """Whether the access token should be renewed before a call made at `now`."""
        return now >= self.refresh_at


def method_name(method: str | bytes) -> str:
    """The full method name as text (grpc.aio hands interceptors bytes, grpc hands them str)."""
    return method.decode() if isinstance(method, bytes) else method


def wants_bearer(method: str | bytes, metadata: Iterable[Metadatum] | None) -> bool:
    """Whether the session should send its access token with this call: not to AuthService,
    and not when the caller set an authorization of its own (which then goes unchanged)."""
    if method_name(method).startswith(_NO_BEARER_PREFIX):
        return False
    return all(key != "authorization" for key, _ in metadata or ())


def with_bearer(metadata: Iterable[Metadatum] | None, tokens: Tokens | None) -> list[Metadatum]:
    """The call's metadata plus the access token, if the session holds one."""
    pairs = list(metadata or ())
    if tokens is not None:
        pairs.append(("authorization", f"Bearer {tokens.access_token}"))
    return pairs


def token_expired(code: grpc.StatusCode | None, trailing: Iterable[Metadatum] | None) -> bool:
    """Whether a call failed only because its access token had expired (reason TOKEN_EXPIRED)."""
    if code != grpc.StatusCode.UNAUTHENTICATED:
        return False
    for key, value in trailing or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return False
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                reason: str = info.reason
                return reason == TOKEN_EXPIRED
    return False


def channel_credentials(tls: bool | grpc.ChannelCredentials) -> grpc.ChannelCredentials | None:
    """Credentials for a TLS channel (True: the system's root certificates), None for plaintext."""
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    return grpc.ssl_channel_credentials() if tls else None
