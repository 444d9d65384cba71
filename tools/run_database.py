"""The database `make run` uses, for the operator's commands (`make seed`, `make admin`):
DATABASE_URL when set, else the embedded PostgreSQL in DATA_ACCESS_PG_DATA_DIR (var/pgdata) —
the server `make run` runs on it when it is up, else one started for the command and stopped
afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from sqlalchemy.engine import URL  # noqa: TID251 (builds a URL; no database access)

from data_access.embedded import DEFAULT_DATABASE, configured_database, to_asyncpg_url
from data_access.settings import DatabaseSettings
from tools.mesh import ROOT


def running_server_url(data_dir: Path, database: str = DEFAULT_DATABASE) -> str | None:
    """The URL of database on the PostgreSQL server running on data_dir (`make run`'s), through
    its Unix socket; None when no server runs there.

    Joining it through pgserver (EmbeddedPostgres) instead would stop it on leaving, since
    pgserver stops a server once its last pgserver user is gone.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, status = int(lines[0]), int(lines[3]), lines[4], lines[7]
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        alive = psutil.Process(pid).name() == "postgres"
    except psutil.Error:
        return None
    if not alive or status.strip() != "ready" or not socket_dir:
        return None
    url = URL.create(
        "postgresql+asyncpg",
        username="postgres",
        password="",
        port=port,
        database=database,
        query={"host": socket_dir},
    )
    return url.render_as_string(hide_password=False)


@contextmanager
def make_run_database() -> Iterator[str]:
    """Yield the URL of the database `make run` uses (see the module's docstring)."""
    settings = DatabaseSettings()
    if settings.database_url:
        yield to_asyncpg_url(settings.database_url)
        return
    data_dir = settings.pg_data_dir
    if not data_dir.is_absolute():
        data_dir = ROOT / data_dir
    running = running_server_url(data_dir)
    if running is not None:
        yield running
        return
    with configured_database(None, data_dir) as url:
        yield url
