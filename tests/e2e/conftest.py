"""End-to-end fixtures: the whole mesh as real processes behind the real Envoy.

- `mesh`: data_access, auth_svc, user_svc, storage_svc and Envoy started by tools.mesh on free
  loopback ports against the test database, each restarted if it dies (`mesh.supervisor`); logs
  go to <tmp>/logs/<process>.log, and the mesh secret and password pepper are generated into
  <tmp>/secrets/ as `make run` does into var/secrets/ (unless the environment sets them).
- `edge_url`: "http://127.0.0.1:PORT" of the Envoy listener (REST and gRPC-web).
- `edge_channel`: a native gRPC channel to the Envoy listener.
- `client`: a Python client session (`meshgram_client.aio.Session`) on the Envoy listener, not
  logged in; `tests.e2e.support.sign_up(client)` registers a fresh user and logs it in.
- `signing_key_file`: the file of the Ed25519 key auth_svc signs with (to forge expired tokens in
  tests), in the mesh's key folder <tmp>/keys/jwt.
- `web_origin`: "http://127.0.0.1:PORT" of a static server for tests/e2e/web (the browser test's
  page), started before the mesh so that the edge's CORS allow-list can name it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from meshgram_client import aio

from auth_svc.keyring import read_keys
from tests.helpers import migrated_database
from tools.mesh import Mesh, MeshPorts


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder as e2e so `-m "not e2e"` can leave them out."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def e2e_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder for the mesh's keys, blobs, development secrets, Envoy config and logs (never the
    developer's var/)."""
    return tmp_path_factory.mktemp("mesh")


@pytest.fixture(scope="session")
def signing_key_file(mesh: Mesh, e2e_state: Path) -> Path:
    """Path of the private key auth_svc signs with (created by auth_svc on first start)."""
    return read_keys(e2e_state / "keys" / "jwt", retention_seconds=0).signing(time.time()).path


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without writing a line per request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def web_origin() -> Iterator[str]:
    """Serve tests/e2e/web on a free loopback port for the session; yields its origin.

    The server is bound before the mesh starts (the mesh allows this origin), so its port cannot
    be handed to one of the mesh's processes in between.
    """
    handler = partial(_QuietHandler, directory=str(Path(__file__).parent / "web"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="e2e-web", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# Shorter than the defaults, so that tests can wait past them.
REUSE_WINDOW_SECONDS = 1.0
DELETION_GRACE_SECONDS = 4.0
QUOTA_BYTES = 8 * 1024 * 1024
UPLOAD_SESSION_TTL_SECONDS = 5.0


@pytest.fixture(scope="session")
async def database_url(database_url: str) -> AsyncIterator[str]:
    """A migrated database of the end-to-end meshes' own, on the session's server: the
    integration tests' auth_svc sends the mail of its database, the session mesh that of this
    one (one sender per database holds the sending lease)."""
    async with migrated_database(database_url, "meshgram_e2e") as url:
        yield url


@pytest.fixture(scope="session")
def mesh(database_url: str, e2e_state: Path, web_origin: str) -> Iterator[Mesh]:
    """Run the complete mesh for the whole session."""
    running = Mesh(
        database_url=database_url,
        ports=MeshPorts.free(),
        state_dir=e2e_state,
        cors_origins=("http://app.example.test", web_origin),
        extra_env={
            "MESHGRAM_ENV": "development",
            # Cheap hashing keeps the suite fast; production uses the default cost.
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_REFRESH_REUSE_WINDOW_SECONDS": str(REUSE_WINDOW_SECONDS),
            # Every test connects from loopback: the suite's many deliberate failures must not
            # add up to a throttle of 127.0.0.1 (test_account_defences tests it on its own mesh).
            "AUTH_CLIENT_LOCKOUT_AFTER_FAILURES": "100000",
            "AUTH_JWT_KEYS_DIR": str(e2e_state / "keys" / "jwt"),
            "STORAGE_BLOB_DIR": str(e2e_state / "blobs"),
            "STORAGE_MAX_IMAGE_BYTES": str(2 * 1024 * 1024),
            # Originals are kept so that tests see them served to their owner only; the quota
            # is small enough for a test to reach it with a few uploads.
            "STORAGE_KEEP_ORIGINALS": "true",
            "STORAGE_QUOTA_BYTES": str(QUOTA_BYTES),
            "STORAGE_UPLOAD_SESSION_TTL_SECONDS": str(UPLOAD_SESSION_TTL_SECONDS),
            # Tests change who may see an image and look at once (unit tests cover the cache).
            "STORAGE_ACCESS_CACHE_SECONDS": "0",
            # Likewise at the edge: its media cache asks storage_svc again every time
            # (test_media_cache covers the cache's lifetime on a mesh of its own).
            "STORAGE_SHARED_CACHE_SECONDS": "0",
            # Deleted accounts go for good within seconds, so that a test can watch it happen.
            "USER_ACCOUNT_DELETION_GRACE_SECONDS": str(DELETION_GRACE_SECONDS),
            "DATA_ACCESS_REFRESH_TOKEN_SWEEP_SECONDS": "1",
            "STORAGE_BLOB_COLLECT_SECONDS": "1",
        },
        log_dir=e2e_state / "logs",
    )
    running.start(timeout=90)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def edge_url(mesh: Mesh) -> str:
    """Base URL of the edge for REST and gRPC-web."""
    return f"http://{mesh.edge_address}"


@pytest.fixture
def http(edge_url: str) -> Iterator[httpx.Client]:
    """An HTTP/1.1 client pointed at the edge (REST, and gRPC-web as browsers send it)."""
    with httpx.Client(base_url=edge_url, timeout=30) as client:
        yield client


@pytest.fixture
async def edge_channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    """A native gRPC channel to the edge."""
    async with grpc.aio.insecure_channel(mesh.edge_address) as channel:
        yield channel


@pytest.fixture
async def client(mesh: Mesh) -> AsyncIterator[aio.Session]:
    """A Python client session on the edge, not logged in."""
    async with aio.Session(mesh.edge_address) as session:
        yield session
