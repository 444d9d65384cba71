"""A service's peers: their health, the caller for data_access, and the wiring shared by the
services that verify access tokens (data_access for their data, auth_svc for the JWKS)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import overload

import grpc
from grpc_health.v1 import health_pb2

from meshkit.access_tokens import AccessTokenVerifier, JwksFetcher
from meshkit.clients import PeerCaller, open_channel
from meshkit.jwks import auth_jwks_fetcher
from meshkit.public_api import PUBLIC_SERVICES
from meshkit.server import DEFAULT_MAX_MESSAGE_BYTES, ServiceDefinition
from meshkit.settings import DataAccessClientSettings, TokenVerifyingSettings

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"

HealthRequest = health_pb2.HealthCheckRequest
HealthResponse = health_pb2.HealthCheckResponse


@overload
def health_check(
    channel: grpc.aio.Channel,
) -> grpc.aio.UnaryUnaryMultiCallable[HealthRequest, HealthResponse]: ...
@overload
def health_check(
    channel: grpc.Channel,
) -> grpc.UnaryUnaryMultiCallable[HealthRequest, HealthResponse]: ...
def health_check(
    channel: grpc.aio.Channel | grpc.Channel,
) -> (
    grpc.aio.UnaryUnaryMultiCallable[HealthRequest, HealthResponse]
    | grpc.UnaryUnaryMultiCallable[HealthRequest, HealthResponse]
):
    """Return grpc.health.v1.Health/Check on channel (aio or blocking) as a typed callable."""
    # The typing stubs of grpc_health declare HealthStub without its methods; a callable built
    # from the method path keeps every health call type-checked.
    return channel.unary_unary(
        HEALTH_CHECK_METHOD,
        request_serializer=HealthRequest.SerializeToString,
        response_deserializer=HealthResponse.FromString,
    )


def data_access_caller(settings: DataAccessClientSettings) -> PeerCaller:
    """Return the caller for data_access: the settings' deadline and the service's credentials."""
    return PeerCaller(
        timeout=settings.call_timeout_seconds,
        caller=settings.service_name,
        caller_token=settings.caller_token(),
    )


@dataclass(frozen=True)
class VerifyingPeers:
    """Channels to data_access and auth_svc, their callers, and the verifier of access tokens."""

    data_access: grpc.aio.Channel
    data_access_caller: PeerCaller
    auth: grpc.aio.Channel
    verifier: AccessTokenVerifier

    @classmethod
    def open(
        cls, settings: TokenVerifyingSettings, *, jwks_fetcher: JwksFetcher | None = None
    ) -> VerifyingPeers:
        """Open both channels (inside the serving event loop); jwks_fetcher replaces the JWKS
        call to auth_svc (tests)."""
        tls = settings.mesh_tls()
        data_access = open_channel(settings.data_access_addr, tls)
        auth = open_channel(settings.auth_addr, tls)
        auth_caller = PeerCaller(timeout=settings.call_timeout_seconds)
        return cls(
            data_access=data_access,
            data_access_caller=data_access_caller(settings),
            auth=auth,
            verifier=AccessTokenVerifier(jwks_fetcher or auth_jwks_fetcher(auth, auth_caller)),
        )

    async def serving(self) -> bool:
        """The readiness probe: the verifier holds the JWKS, fetched from auth_svc by this probe
        when it does not yet, so tokens can be verified."""
        # Only the keys matter. data_access is left out on purpose: while it is down, calls that
        # need it answer UNAVAILABLE themselves, and everything else (token checks) still works.
        # Once the keys are held, auth_svc being slow or down does not matter either.
        return await self.verifier.ensure_keys()

    async def close(self) -> None:
        """Close both channels once in-flight calls have drained."""
        await self.data_access.close()
        await self.auth.close()

    def definition(
        self,
        *,
        name: str,
        service: str,
        register: Callable[[grpc.aio.Server], None],
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> ServiceDefinition:
        """The definition of a public service built on these peers: it implements `service`,
        reflects the whole public API, is ready while it can verify tokens, and closes its
        channels last."""
        return ServiceDefinition(
            name=name,
            register=register,
            service_names=[service],
            reflection_names=PUBLIC_SERVICES,
            check_ready=self.serving,
            on_shutdown=[self.close],
            max_message_bytes=max_message_bytes,
        )
