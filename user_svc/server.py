"""Composition root of user_svc: peers, token verifier, servicer and the server definition."""

from __future__ import annotations

import asyncio

import grpc
from prometheus_client.registry import Collector

from meshgram.user.v1 import user_pb2_grpc
from meshkit.access_tokens import JwksFetcher
from meshkit.peers import VerifyingPeers
from meshkit.public_api import USER_SERVICE
from meshkit.server import ServiceDefinition, serve
from meshkit.settings import load_settings
from user_svc.cache import CachedProfiles, ProfileCache
from user_svc.clients import (
    DataAccessGraph,
    DataAccessLifecycle,
    DataAccessModeration,
    DataAccessProfiles,
)
from user_svc.feed import ChangeSubscriber
from user_svc.graph import SocialService
from user_svc.lifecycle import AccountDeletion
from user_svc.metrics import ProfileCacheCollector
from user_svc.moderation import ModerationService
from user_svc.profiles import ProfileService, ProfileStore
from user_svc.servicer import UserServicer
from user_svc.settings import SERVICE_NAME, UserSettings


def build_definition(
    settings: UserSettings, *, jwks_fetcher: JwksFetcher | None = None
) -> ServiceDefinition:
    """Wire user_svc from settings; jwks_fetcher replaces the JWKS call to auth_svc (tests)."""
    peers = VerifyingPeers.open(settings, jwks_fetcher=jwks_fetcher)
    store: ProfileStore = DataAccessProfiles(peers.data_access, peers.data_access_caller)
    subscriber: ChangeSubscriber | None = None
    collectors: list[Collector] = []
    if settings.cache_enabled:
        cache = ProfileCache(
            max_entries=settings.cache_max_entries,
            max_bytes=settings.cache_max_bytes,
            fresh_seconds=settings.cache_fresh_seconds,
        )
        store = CachedProfiles(store, cache)
        subscriber = ChangeSubscriber(
            peers.data_access,
            peers.data_access_caller,
            cache,
            silence_seconds=settings.cache_fresh_seconds,
        )
        collectors.append(ProfileCacheCollector(cache, subscriber.figures))
    graph = DataAccessGraph(peers.data_access, peers.data_access_caller)
    servicer = UserServicer(
        ProfileService(store, username_cooldown_seconds=settings.username_change_cooldown_seconds),
        SocialService(store, graph),
        ModerationService(DataAccessModeration(peers.data_access, peers.data_access_caller)),
        AccountDeletion(
            DataAccessLifecycle(peers.data_access, peers.data_access_caller),
            grace_seconds=settings.account_deletion_grace_seconds,
            reauthentication_window=settings.reauthentication_window_seconds,
        ),
        peers.verifier,
        unverified_email_may=settings.unverified_email_may,
    )

    def register(server: grpc.aio.Server) -> None:
        """Add the servicer and start following the change feed."""
        user_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
        if subscriber is not None:
            subscriber.start()

    definition = peers.definition(name=SERVICE_NAME, service=USER_SERVICE, register=register)
    if subscriber is not None:
        definition.on_shutdown.insert(0, subscriber.stop)
    definition.collectors = collectors
    return definition


def main() -> None:
    """Run user_svc until SIGTERM or SIGINT; exit with a readable message when the settings are
    unusable (a missing caller credential, for one)."""
    asyncio.run(_run(load_settings(UserSettings, SERVICE_NAME)))


async def _run(settings: UserSettings) -> None:
    """Build and serve inside the event loop that owns the channels."""
    await serve(build_definition(settings), settings)
