"""Composition root of auth_svc: settings, channel to data_access, servicer, health probe."""

from __future__ import annotations

import asyncio

import grpc

from auth_svc import tokens
from auth_svc.authenticator import Authenticator, SessionPolicy
from auth_svc.clients import AccountStoreClient
from auth_svc.keys import SigningKeyError, load_signing_key
from auth_svc.passwords import PasswordHasher
from auth_svc.servicer import AuthServicer
from auth_svc.settings import SERVICE_NAME, AuthSettings
from auth_svc.tokens import AccessTokenSigner
from meshgram.auth.v1 import auth_pb2_grpc
from meshkit.clients import open_channel
from meshkit.peers import data_access_caller
from meshkit.public_api import AUTH_SERVICE, PUBLIC_SERVICES
from meshkit.server import ServiceDefinition, serve
from meshkit.settings import load_settings


def build_definition(settings: AuthSettings) -> ServiceDefinition:
    """Wire auth_svc for settings; call inside a running event loop (it opens a grpc.aio
    channel). It is ready as soon as it serves: its signing key is loaded here, so the JWKS
    and token signing never wait on data_access; shutdown closes the channel."""
    channel = open_channel(settings.data_access_addr)
    store = AccountStoreClient(channel, data_access_caller(settings))
    signing_key = load_signing_key(
        settings.jwt_private_key_file,
        create_if_missing=settings.environment == "development",
    )
    # PasswordHasher computes its dummy hash here, once, before the server takes calls.
    authenticator = Authenticator(
        store,
        PasswordHasher(settings.pepper(), settings.bcrypt_rounds),
        AccessTokenSigner(signing_key, ttl_seconds=settings.access_token_ttl_seconds),
        sessions=SessionPolicy(
            idle_seconds=settings.refresh_token_ttl_seconds,
            max_seconds=settings.session_max_seconds,
            reuse_window_seconds=settings.refresh_reuse_window_seconds,
            successor_key=tokens.successor_key(settings.pepper()),
        ),
    )
    servicer = AuthServicer(authenticator)

    def register(server: grpc.aio.Server) -> None:
        """Add AuthService to the server."""
        auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)

    async def close_channel() -> None:
        """Close the data_access channel once in-flight calls have drained."""
        await channel.close()

    return ServiceDefinition(
        name=SERVICE_NAME,
        register=register,
        service_names=[AUTH_SERVICE],
        reflection_names=list(PUBLIC_SERVICES),
        check_ready=_ready,
        on_shutdown=[close_channel],
    )


async def _ready() -> bool:
    """auth_svc's readiness: everything it needs for every call is loaded before it serves."""
    return True


async def _run(settings: AuthSettings) -> None:
    """Build and serve auth_svc until a stop signal."""
    await serve(build_definition(settings), settings)


def main() -> None:
    """Run auth_svc with settings from the environment until SIGTERM or SIGINT; exit with a
    readable message when the settings or the signing key are unusable."""
    settings = load_settings(AuthSettings, SERVICE_NAME)
    try:
        asyncio.run(_run(settings))
    except SigningKeyError as exc:
        raise SystemExit(f"auth_svc: {exc}") from None
