"""Composition root of user_svc: peers, token verifier, servicer and the server definition."""

from __future__ import annotations

import asyncio

import grpc

from meshgram.user.v1 import user_pb2_grpc
from meshkit.access_tokens import JwksFetcher
from meshkit.peers import VerifyingPeers
from meshkit.public_api import USER_SERVICE
from meshkit.server import ServiceDefinition, serve
from meshkit.settings import load_settings
from user_svc.clients import DataAccessProfiles
from user_svc.profiles import ProfileService
from user_svc.servicer import UserServicer
from user_svc.settings import SERVICE_NAME, UserSettings


def build_definition(
    settings: UserSettings, *, jwks_fetcher: JwksFetcher | None = None
) -> ServiceDefinition:
    """Wire user_svc from settings; jwks_fetcher replaces the JWKS call to auth_svc (tests)."""
    peers = VerifyingPeers.open(settings, jwks_fetcher=jwks_fetcher)
    profiles = ProfileService(DataAccessProfiles(peers.data_access, peers.data_access_caller))
    servicer = UserServicer(profiles, peers.verifier)

    def register(server: grpc.aio.Server) -> None:
        user_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)

    return peers.definition(name=SERVICE_NAME, service=USER_SERVICE, register=register)


def main() -> None:
    """Run user_svc until SIGTERM or SIGINT; exit with a readable message when the settings are
    unusable (a missing caller credential, for one)."""
    asyncio.run(_run(load_settings(UserSettings, SERVICE_NAME)))


async def _run(settings: UserSettings) -> None:
    """Build and serve inside the event loop that owns the channels."""
    await serve(build_definition(settings), settings)
