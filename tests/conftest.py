"""Session fixtures shared by every test package (async ones run on the session event loop).

- `database_url` -> str: asyncpg URL of a fresh database migrated to the latest revision. With
  DATABASE_URL set, a uniquely named database is created on that server and dropped at the end;
  otherwise an embedded PostgreSQL (pgserver) runs in a temporary folder, deleted at the end.
- `mesh_secret` -> str: a random mesh secret; `tests.helpers.caller_metadata(mesh_secret,
  "auth_svc")` (or `meshkit.caller.derive_caller_token`) gives a service's credentials.
- `data_access_address` -> "127.0.0.1:PORT": data_access served in-process (built with
  `data_access.server.build_definition`, served with `tests.helpers.serving`) against
  `database_url` with `mesh_secret`; stopped at the end.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

# Tests start subprocesses (PostgreSQL, the mesh) while in-process services hold gRPC streams
# open; grpc's fork handlers would then run in the child and may crash it (seen: pg_ctl dying
# of SIGSEGV). No test forks a process that uses gRPC, so the handlers are not needed. Set
# before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from meshkit.rate_limits import SETTING, scaled

# Every test connects from loopback, so the edge's per-address limits would add the whole
# suite up into one client: every mesh the suite starts (they read this environment) allows a
# thousand times the defaults, unless a test sets its own (test_edge_rate_limits does).
os.environ.setdefault(SETTING, scaled(1000))

import pytest
from pydantic import SecretStr

from data_access import admin
from data_access.embedded import EmbeddedPostgres
from data_access.migrate import upgrade_async
from data_access.server import build_definition
from data_access.settings import DataAccessSettings

# Helpers such as assert_public_definition assert; rewritten, their failures explain themselves.
pytest.register_assert_rewrite("tests.helpers")

from tests.helpers import serving  # noqa: E402 (after the rewrite registration above)


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A fresh, migrated database for the session (see the module docstring)."""
    name = f"meshgram_test_{secrets.token_hex(6)}"
    server_url = os.environ.get("DATABASE_URL")
    if server_url:
        url = await admin.create_database(server_url, name)
        try:
            await upgrade_async(url)
            yield url
        finally:
            await admin.drop_database(server_url, name)
        return
    embedded = EmbeddedPostgres(
        tmp_path_factory.mktemp("postgres") / "data", name, delete_on_stop=True
    )
    try:
        url = embedded.start()
        await upgrade_async(url)
        yield url
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def mesh_secret() -> str:
    """A random mesh secret for the session."""
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
async def data_access_address(database_url: str, mesh_secret: str) -> AsyncIterator[str]:
    """data_access in-process on a free loopback port; yields "127.0.0.1:PORT"."""
    settings = DataAccessSettings(host="127.0.0.1", port=0, mesh_secret=SecretStr(mesh_secret))
    async with serving(build_definition(settings, database_url), grace=1.0) as address:
        yield address
