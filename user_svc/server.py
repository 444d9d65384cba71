"""Composition root of user_svc: channels, token verifier, servicer and the server definition."""

from __future__ import annotations

import asyncio

import grpc

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2, user_pb2_grpc
from meshkit.access_tokens import AccessTokenVerifier, JwksFetcher
from meshkit.clients import PeerCaller, open_channel
from meshkit.server import ServiceDefinition, run, serve
from user_svc.clients import (
    DataAccessProfiles,
    auth_jwks_fetcher,
    data_access_caller,
    is_serving,
)
from user_svc.profiles import ProfileService
from user_svc.servicer import UserServicer
from user_svc.settings import SERVICE_NAME, UserSettings

USER_SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name

# Reflection describes the whole public API from any service, so grpcurl works against each.
PUBLIC_SERVICES = (
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
    USER_SERVICE,
    storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name,
)


def build_definition(
    settings: UserSettings, *, jwks_fetcher: JwksFetcher | None = None
) -> ServiceDefinition:
    """Wire user_svc from settings; jwks_fetcher replaces the JWKS call to auth_svc (tests)."""
    data_access = open_channel(settings.data_access_addr)
    auth = open_channel(settings.auth_addr)
    data_peer = data_access_caller(
        timeout=settings.call_timeout_seconds, caller_token=settings.caller_token()
    )
    auth_peer = PeerCaller(timeout=settings.call_timeout_seconds)
    profiles = ProfileService(DataAccessProfiles(data_access, data_peer))
    verifier = AccessTokenVerifier(jwks_fetcher or auth_jwks_fetcher(auth, auth_peer))
    servicer = UserServicer(profiles, verifier)

    def register(server: grpc.aio.Server) -> None:
        user_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)

    async def check_dependencies() -> bool:
        answers = await asyncio.gather(
            is_serving(data_access, data_peer), is_serving(auth, auth_peer)
        )
        return all(answers)

    return ServiceDefinition(
        name=SERVICE_NAME,
        register=register,
        service_names=[USER_SERVICE],
        reflection_names=PUBLIC_SERVICES,
        check_dependencies=check_dependencies,
        on_shutdown=[data_access.close, auth.close],
    )


def main() -> None:
    """Run user_svc until SIGTERM or SIGINT."""
    run(_run(UserSettings()))


async def _run(settings: UserSettings) -> None:
    """Build and serve inside the event loop that owns the channels."""
    await serve(build_definition(settings), settings)
