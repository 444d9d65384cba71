"""Composition root of storage_svc: peers, blob store, verifier, servicer and definition."""

from __future__ import annotations

import asyncio
import warnings

import grpc
from PIL import Image as PillowImage

from meshgram.storage.v1 import storage_pb2_grpc
from meshkit.access_tokens import JwksFetcher
from meshkit.peers import VerifyingPeers
from meshkit.public_api import STORAGE_SERVICE
from meshkit.server import ServiceDefinition, serve
from meshkit.settings import load_settings
from storage_svc.blobs import LocalBlobStore
from storage_svc.clients import DataAccessCollections, DataAccessMedia
from storage_svc.collector import BlobCollector
from storage_svc.images import ImageService
from storage_svc.servicer import StorageServicer
from storage_svc.settings import SERVICE_NAME, StorageSettings

# gRPC clients are told to send upload chunks of up to 1 MiB (storage.proto), and Envoy turns a
# REST body into one chunk per read, bounded by its 1 MiB connection buffer but able to overshoot
# it a little; twice that plus framing room keeps both working while bounding every message.
MAX_UPLOAD_MESSAGE_BYTES = 2 * 1024 * 1024 + 64 * 1024


def build_definition(
    settings: StorageSettings, *, jwks_fetcher: JwksFetcher | None = None
) -> ServiceDefinition:
    """Wire storage_svc from settings; jwks_fetcher replaces the JWKS call to auth_svc (tests)."""
    peers = VerifyingPeers.open(settings, jwks_fetcher=jwks_fetcher)
    blobs = LocalBlobStore(settings.blob_dir)
    collector = BlobCollector(
        DataAccessCollections(peers.data_access, peers.data_access_caller),
        blobs,
        interval_seconds=settings.blob_collect_seconds,
    )
    images = ImageService(
        DataAccessMedia(peers.data_access, peers.data_access_caller),
        blobs,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
    )
    servicer = StorageServicer(
        images, peers.verifier, unverified_email_may=settings.unverified_email_may
    )

    def register(server: grpc.aio.Server) -> None:
        """Add the servicer and start the blob collector."""
        storage_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)
        collector.start()

    definition = peers.definition(
        name=SERVICE_NAME,
        service=STORAGE_SERVICE,
        register=register,
        max_message_bytes=MAX_UPLOAD_MESSAGE_BYTES,
    )
    definition.on_shutdown.insert(0, collector.stop)
    return definition


def main() -> None:
    """Run storage_svc until SIGTERM or SIGINT; exit with a readable message when the settings are
    unusable (a missing caller credential, for one)."""
    # Pillow only warns between its limit and twice its limit; here that is a rejected upload.
    warnings.simplefilter("error", PillowImage.DecompressionBombWarning)
    asyncio.run(_run(load_settings(StorageSettings, SERVICE_NAME)))


async def _run(settings: StorageSettings) -> None:
    """Build and serve inside the event loop that owns the channels."""
    await serve(build_definition(settings), settings)
