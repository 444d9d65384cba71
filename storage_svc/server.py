"""Composition root of storage_svc: channels, blob store, verifier, servicer and definition."""

from __future__ import annotations

import asyncio
import warnings

import grpc
from PIL import Image as PillowImage

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2, storage_pb2_grpc
from meshgram.user.v1 import user_pb2
from meshkit.access_tokens import AccessTokenVerifier, JwksFetcher
from meshkit.clients import PeerCaller, open_channel
from meshkit.server import ServiceDefinition, run, serve
from storage_svc.blobs import LocalBlobStore
from storage_svc.clients import (
    DataAccessMedia,
    auth_jwks_fetcher,
    data_access_caller,
    is_serving,
)
from storage_svc.images import ImageService
from storage_svc.servicer import StorageServicer
from storage_svc.settings import SERVICE_NAME, StorageSettings

STORAGE_SERVICE = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name

# Reflection describes the whole public API from any service, so grpcurl works against each.
PUBLIC_SERVICES = (
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
    user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    STORAGE_SERVICE,
)


def build_definition(
    settings: StorageSettings, *, jwks_fetcher: JwksFetcher | None = None
) -> ServiceDefinition:
    """Wire storage_svc from settings; jwks_fetcher replaces the JWKS call to auth_svc (tests)."""
    data_access = open_channel(settings.data_access_addr)
    auth = open_channel(settings.auth_addr)
    data_peer = data_access_caller(
        timeout=settings.call_timeout_seconds, caller_token=settings.caller_token()
    )
    auth_peer = PeerCaller(timeout=settings.call_timeout_seconds)
    images = ImageService(
        DataAccessMedia(data_access, data_peer),
        LocalBlobStore(settings.blob_dir),
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
    )
    verifier = AccessTokenVerifier(jwks_fetcher or auth_jwks_fetcher(auth, auth_peer))
    servicer = StorageServicer(images, verifier)

    def register(server: grpc.aio.Server) -> None:
        storage_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)

    async def check_dependencies() -> bool:
        answers = await asyncio.gather(
            is_serving(data_access, data_peer), is_serving(auth, auth_peer)
        )
        return all(answers)

    return ServiceDefinition(
        name=SERVICE_NAME,
        register=register,
        service_names=[STORAGE_SERVICE],
        reflection_names=PUBLIC_SERVICES,
        check_dependencies=check_dependencies,
        on_shutdown=[data_access.close, auth.close],
    )


def main() -> None:
    """Run storage_svc until SIGTERM or SIGINT."""
    # Pillow only warns between its limit and twice its limit; here that is a rejected upload.
    warnings.simplefilter("error", PillowImage.DecompressionBombWarning)
    run(_run(StorageSettings()))


async def _run(settings: StorageSettings) -> None:
    """Build and serve inside the event loop that owns the channels."""
    await serve(build_definition(settings), settings)
