"""Composition root of storage_svc: peers, blob store, verifier, servicer and definition."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import warnings

import grpc
from PIL import Image as PillowImage

from meshgram.storage.v1 import storage_pb2_grpc
from meshkit.access_tokens import JwksFetcher
from meshkit.background import BackgroundTask, Jobs, RoundFigures, repeat
from meshkit.peers import VerifyingPeers
from meshkit.public_api import STORAGE_SERVICE
from meshkit.server import ServiceDefinition, serve
from meshkit.settings import load_settings
from storage_svc.blobs import BlobStore, LocalBlobStore
from storage_svc.clients import DataAccessCollections, DataAccessMedia
from storage_svc.collector import BlobCollector
from storage_svc.images import ImageService
from storage_svc.media_urls import MediaUrlSigner, parse_keys
from storage_svc.metrics import StorageCollector
from storage_svc.servicer import StorageServicer
from storage_svc.settings import SERVICE_NAME, StorageSettings
from storage_svc.uploads import Spool, UploadSessions

# gRPC clients are told to send upload chunks of up to 1 MiB (storage.proto), and Envoy turns a
# REST body into one chunk per read, bounded by its 1 MiB connection buffer but able to overshoot
# it a little; twice that plus framing room keeps both working while bounding every message.
log = logging.getLogger("storage_svc.server")
# mallopt parameters (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# A one-shot upload older than this is a leftover: the longest call lasts 120 s at the edge.
LEFTOVER_UPLOAD_SECONDS = 3600.0

MAX_UPLOAD_MESSAGE_BYTES = 2 * 1024 * 1024 + 64 * 1024


def build_definition(
    settings: StorageSettings, *, jwks_fetcher: JwksFetcher | None = None
) -> ServiceDefinition:
    """Wire storage_svc from settings; jwks_fetcher replaces the JWKS call to auth_svc (tests)."""
    peers = VerifyingPeers.open(settings, jwks_fetcher=jwks_fetcher)
    blobs = blob_store(settings)
    spool = Spool(settings.spool_dir)
    sessions = UploadSessions(
        settings.spool_dir,
        max_bytes=settings.max_image_bytes,
        ttl_seconds=settings.upload_session_ttl_seconds,
        max_open_per_owner=settings.max_open_uploads,
    )
    jobs = Jobs()
    collector = BlobCollector(
        DataAccessCollections(peers.data_access, peers.data_access_caller),
        blobs,
        interval_seconds=settings.blob_collect_seconds,
        orphan_scan_seconds=settings.orphan_scan_seconds,
        rounds=jobs.figures("blob collection"),
    )
    expiry = BackgroundTask(
        "upload expiry",
        lambda: _expire_uploads(spool, sessions, settings, jobs.figures("upload expiry")),
    )
    images = ImageService(
        DataAccessMedia(peers.data_access, peers.data_access_caller),
        blobs,
        MediaUrlSigner(
            parse_keys(settings.media_url_key_spec()), ttl_seconds=settings.media_url_ttl_seconds
        ),
        spool,
        sessions,
        scratch_dir=settings.spool_dir,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        keep_originals=settings.keep_originals,
        quota_bytes=settings.quota_bytes,
        max_concurrent_processing=settings.max_concurrent_processing,
        access_cache_seconds=settings.access_cache_seconds,
        shared_cache_seconds=settings.shared_cache_seconds,
    )
    servicer = StorageServicer(
        images, peers.verifier, unverified_email_may=settings.unverified_email_may
    )

    def register(server: grpc.aio.Server) -> None:
        """Add the servicer and start the blob collector and the upload expiry."""
        storage_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)
        collector.start()
        expiry.start()

    definition = peers.definition(
        name=SERVICE_NAME,
        service=STORAGE_SERVICE,
        register=register,
        max_message_bytes=MAX_UPLOAD_MESSAGE_BYTES,
    )
    definition.on_shutdown[:0] = [collector.stop, expiry.stop]
    definition.collectors = [StorageCollector(images.figures, collector.figures)]
    definition.jobs = jobs
    definition.on_startup.append(blobs.open)
    definition.on_shutdown.append(blobs.close)
    return definition


def blob_store(settings: StorageSettings) -> BlobStore:
    """The blob store the settings name: the local folder, or an S3-compatible bucket."""
    if settings.blob_backend == "local":
        return LocalBlobStore(settings.blob_dir)
    # Imported here: botocore takes tens of MB that a folder store does without.
    from storage_svc.s3_blobs import S3BlobStore

    secret = settings.s3_secret_access_key
    return S3BlobStore(
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        prefix=settings.s3_prefix,
        timeout_seconds=settings.call_timeout_seconds * 3,
        create_bucket=settings.s3_create_bucket,
    )


async def _expire_uploads(
    spool: Spool, sessions: UploadSessions, settings: StorageSettings, figures: RoundFigures
) -> None:
    """Delete expired upload sessions, and one-shot upload files a stopped process left behind,
    every collector interval, counting the rounds in figures."""

    async def sweep() -> None:
        """One round, counting the sessions and leftover files deleted."""
        figures.handled += await sessions.sweep_expired()
        figures.handled += await spool.sweep(LEFTOVER_UPLOAD_SECONDS)

    await repeat(
        sweep,
        interval_seconds=settings.blob_collect_seconds,
        log=log,
        failure="upload expiry failed",
        figures=figures,
    )


def main() -> None:
    """Run storage_svc until SIGTERM or SIGINT; exit with a readable message when the settings are
    unusable (a missing caller credential, for one)."""
    # Pillow only warns between its limit and twice its limit; here that is a rejected upload.
    warnings.simplefilter("error", PillowImage.DecompressionBombWarning)
    limit_heap_growth()
    asyncio.run(_run(load_settings(StorageSettings, SERVICE_NAME)))


def limit_heap_growth() -> None:
    """Keep decoded pictures from bloating the process: glibc's malloc gives every thread an arena
    of its own and keeps freed blocks in them, so the picture buffers of a few uploads, each
    decoded in some worker thread, pile up as memory never returned. Two arenas, and blocks of
    1 MiB or more mapped (and unmapped when freed) on their own, keep the peak near what is in
    use. No effect where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, 2)
    mallopt(_M_MMAP_THRESHOLD, 1024 * 1024)


async def _run(settings: StorageSettings) -> None:
    """Build and serve inside the event loop that owns the channels."""
    await serve(build_definition(settings), settings)
