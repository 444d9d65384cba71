"""Composition root of data_access: settings, database, repositories, servicers, caller checks."""

from __future__ import annotations

import asyncio

import grpc

from data_access.account_tokens import AccountTokenStore
from data_access.accounts import AccountStore
from data_access.blob_collections import BlobCollections
from data_access.callers import CallerInterceptor, CallerPolicy
from data_access.changes import ChangeFeed
from data_access.database import open_database
from data_access.embedded import configured_database
from data_access.images import ImageStore
from data_access.lifecycle import AccountLifecycle
from data_access.login_attempts import LoginAttemptStore
from data_access.metrics import PoolCollector
from data_access.mfa import MfaStore
from data_access.moderation import ModerationStore
from data_access.outbox import MailOutbox
from data_access.profiles import ProfileStore
from data_access.rate_windows import RateWindowStore
from data_access.refresh_tokens import RefreshTokenStore
from data_access.security_events import SecurityEventStore
from data_access.servicers import (
    AccountLifecycleServicer,
    AccountSecurityServicer,
    AccountStoreServicer,
    ChangeFeedServicer,
    MailOutboxServicer,
    MediaStoreServicer,
    ModerationServicer,
    ProfileStoreServicer,
    SocialGraphServicer,
)
from data_access.sessions import SessionStore
from data_access.settings import SERVICE_NAME, DataAccessSettings
from data_access.social_graph import SocialGraph
from data_access.sweeper import EXPIRY_JOBS, PURGE, PURGE_BATCH, Sweeper, change_log_job
from data_access.validation import SEALED_MAIL_MAX_BYTES
from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.background import Jobs
from meshkit.server import ServiceDefinition, serve
from meshkit.settings import load_settings

# A request carries at most one sealed mail, besides fields of a few kilobytes.
MAX_MESSAGE_BYTES = SEALED_MAIL_MAX_BYTES + 64 * 1024

SERVICE_NAMES = tuple(
    service.full_name for service in dataaccess_pb2.DESCRIPTOR.services_by_name.values()
)


def build_definition(settings: DataAccessSettings, database_url: str) -> ServiceDefinition:
    """Wire data_access against database_url (any postgres URL form; migrated beforehand).

    Health is SERVING only while the database answers and the change feed listens; shutdown
    stops the sweepers and the feed and closes the pool. Build it on the event loop that will
    serve it.
    """
    database = open_database(
        database_url,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_max_overflow,
        application_name=SERVICE_NAME,
    )
    feed = ChangeFeed(database, heartbeat_seconds=settings.change_heartbeat_seconds)
    jobs = Jobs()
    change_log = change_log_job(settings.change_retention_seconds)
    sweepers = [
        *(
            Sweeper(
                database,
                job,
                interval_seconds=settings.refresh_token_sweep_seconds,
                figures=jobs.figures(job.name),
            )
            for job in EXPIRY_JOBS
        ),
        Sweeper(
            database,
            PURGE,
            interval_seconds=settings.refresh_token_sweep_seconds,
            batch_size=PURGE_BATCH,
            figures=jobs.figures(PURGE.name),
        ),
        Sweeper(
            database,
            change_log,
            interval_seconds=settings.change_retention_seconds / 10,
            figures=jobs.figures(change_log.name),
        ),
    ]
    sessions = SessionStore(database)
    accounts = AccountStoreServicer(
        AccountStore(database),
        RefreshTokenStore(database),
        AccountTokenStore(database),
        sessions,
    )
    security = AccountSecurityServicer(
        LoginAttemptStore(database),
        MfaStore(database),
        sessions,
        SecurityEventStore(database),
        RateWindowStore(database),
    )
    mail = MailOutboxServicer(MailOutbox(database))
    profiles = ProfileStoreServicer(ProfileStore(database, feed))
    graph = SocialGraphServicer(SocialGraph(database, feed))
    moderation = ModerationServicer(ModerationStore(database))
    lifecycle = AccountLifecycleServicer(AccountLifecycle(database, feed))
    media = MediaStoreServicer(ImageStore(database, feed), BlobCollections(database))
    changes = ChangeFeedServicer(feed)

    def register(server: grpc.aio.Server) -> None:
        """Add the servicers and start the sweepers and the change feed."""
        dataaccess_pb2_grpc.add_AccountStoreServiceServicer_to_server(accounts, server)
        dataaccess_pb2_grpc.add_AccountSecurityServiceServicer_to_server(security, server)
        dataaccess_pb2_grpc.add_MailOutboxServiceServicer_to_server(mail, server)
        dataaccess_pb2_grpc.add_ProfileStoreServiceServicer_to_server(profiles, server)
        dataaccess_pb2_grpc.add_SocialGraphServiceServicer_to_server(graph, server)
        dataaccess_pb2_grpc.add_ModerationServiceServicer_to_server(moderation, server)
        dataaccess_pb2_grpc.add_AccountLifecycleServiceServicer_to_server(lifecycle, server)
        dataaccess_pb2_grpc.add_MediaStoreServiceServicer_to_server(media, server)
        dataaccess_pb2_grpc.add_ChangeFeedServiceServicer_to_server(changes, server)
        # Registration runs inside the serving loop: the one moment background tasks can start.
        for sweeper in sweepers:
            sweeper.start()
        feed.start()

    async def ready() -> bool:
        """SERVING while the database answers and the feed listens."""
        return await feed.wait_live(1.0) and await database.ping()

    return ServiceDefinition(
        name=SERVICE_NAME,
        register=register,
        service_names=SERVICE_NAMES,
        reflection_names=SERVICE_NAMES,
        check_ready=ready,
        interceptors=[
            CallerInterceptor(
                CallerPolicy(settings.mesh_secret_value(), trust_domain=settings.trust_domain)
            )
        ],
        on_drained=[feed.stop],
        on_shutdown=[*(sweeper.stop for sweeper in sweepers), database.dispose],
        collectors=[PoolCollector(database.engine.pool, settings.pool_max_overflow)],
        jobs=jobs,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )


def main() -> None:
    """Run data_access until SIGTERM: against DATABASE_URL, or the embedded PostgreSQL (kept
    running as long as this process) when it is unset; exit with a readable message when the
    settings are unusable (a missing mesh secret, for one)."""
    settings = load_settings(DataAccessSettings, SERVICE_NAME)
    with configured_database(settings.database_url, settings.pg_data_dir) as database_url:
        asyncio.run(_serve(settings, database_url))


async def _serve(settings: DataAccessSettings, database_url: str) -> None:
    """Build the definition inside the event loop and serve it."""
    await serve(build_definition(settings, database_url), settings)
