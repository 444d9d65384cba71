"""storage_svc (and a user_svc to read profiles back) in-process against the session's mesh.

Fixtures:
- `blob_dir` (session) -> the temporary folder behind storage_svc's local blob store.
- `max_image_bytes` (session) -> the upload limit of that storage_svc: small, so oversize uploads
  stay cheap.
- `storage_address` (session) -> "127.0.0.1:PORT" of storage_svc.
- `storage` (session) -> StorageService stub on `storage_address`.

`users` (UserService stub on an in-process user_svc of the same mesh, to see avatars land on
profiles) comes from tests/integration/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from meshgram.storage.v1 import storage_pb2_grpc
from storage_svc.server import build_definition
from storage_svc.settings import StorageSettings
from tests.helpers import service_settings, serving


@pytest.fixture(scope="session")
def blob_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's storage_svc keeps blobs."""
    return tmp_path_factory.mktemp("blobs")


@pytest.fixture(scope="session")
def max_image_bytes() -> int:
    """Upload limit of the session's storage_svc."""
    return 256 * 1024


@pytest.fixture(scope="session")
async def storage_address(
    data_access_address: str,
    mesh_secret: str,
    auth_address: str,
    blob_dir: Path,
    max_image_bytes: int,
) -> AsyncIterator[str]:
    """storage_svc verifying tokens against auth_svc's JWKS."""
    settings = service_settings(
        StorageSettings,
        mesh_secret,
        data_access_address,
        auth_addr=auth_address,
        call_timeout_seconds=5,
        blob_dir=blob_dir,
        max_image_bytes=max_image_bytes,
    )
    async with serving(build_definition(settings)) as address:
        yield address


@pytest.fixture(scope="session")
async def storage(storage_address: str) -> AsyncIterator[storage_pb2_grpc.StorageServiceStub]:
    """StorageService stub on the session's storage_svc."""
    async with grpc.aio.insecure_channel(storage_address) as channel:
        yield storage_pb2_grpc.StorageServiceStub(channel)
