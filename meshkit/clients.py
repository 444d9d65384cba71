"""Outbound calls to peer services: channels, per-call metadata, deadlines and error mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from meshkit.caller import CALLER_HEADER, CALLER_TOKEN_HEADER
from meshkit.grpc_errors import from_rpc_error
from meshkit.mesh_tls import MeshTls, server_name
from meshkit.reasons import Reason
from meshkit.request_context import REQUEST_ID_HEADER, current_request_id
from meshkit.tracing import client_interceptors

ResponseT = TypeVar("ResponseT")

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    # A target naming several replicas ("ipv4:host:port,host:port" or a DNS name with several
    # addresses) spreads calls over all of them instead of sticking to the first.
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    # A restarted peer is dialled again within a second: gRPC's own back-off grows to 120 s,
    # and calls meanwhile fail as UNAVAILABLE although the peer is back.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


def open_channel(address: str, tls: MeshTls | None = None) -> grpc.aio.Channel:
    """Open a channel to a peer (a gRPC target: host:port, dns:///name:port or
    ipv4:host:port,host:port for several replicas): mutual TLS with this workload's certificate
    when tls is given, else plaintext (loopback development only); calls carry the trace
    context when the process traces."""
    interceptors = client_interceptors()
    if tls is None:
        return grpc.aio.insecure_channel(
            address, options=_CHANNEL_OPTIONS, interceptors=interceptors
        )
    options = list(_CHANNEL_OPTIONS)
    name = server_name(address)
    if name is not None:
        # A target of several addresses has no host name of its own to check the server's
        # certificate against; every replica's certificate names its first host.
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.aio.secure_channel(
        address, tls.channel_credentials(), options=options, interceptors=interceptors
    )


# Reasons with which data_access refuses the calling service itself, never the end user.
_CALLER_REFUSED = frozenset({Reason.CALLER_UNKNOWN, Reason.CALLER_NOT_ALLOWED})


class PeerRefusedCallerError(RuntimeError):
    """A peer rejected this service's caller credentials: a deployment mistake, not a client's."""


class PeerCaller:
    """Calls one peer with a deadline, the request id and (optionally) caller credentials."""

    def __init__(
        self, *, timeout: float, caller: str | None = None, caller_token: str | None = None
    ) -> None:
        self._timeout = timeout
        static: list[tuple[str, str]] = []
        if caller is not None and caller_token is not None:
            static = [(CALLER_HEADER, caller), (CALLER_TOKEN_HEADER, caller_token)]
        self._static = tuple(static)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata for the next outbound call: request id plus caller credentials."""
        return ((REQUEST_ID_HEADER, current_request_id()), *self._static)

    async def unary(self, method: Callable[..., Awaitable[ResponseT]], request: Any) -> ResponseT:
        """Make a unary call; a peer's error comes back as the matching DomainError."""
        try:
            return await method(request, timeout=self._timeout, metadata=self.metadata())
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
        if error.reason in _CALLER_REFUSED:
            # Passing this through would tell an end user "unauthenticated" about our own
            # deployment mistake; it must end as INTERNAL, with the cause in our logs.
            raise PeerRefusedCallerError(
                f"a peer refused this service's credentials ({error.reason})"
            )
        raise error
