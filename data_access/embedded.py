"""PostgreSQL URLs in SQLAlchemy's asyncpg form, and the embedded PostgreSQL (pgserver) that
serves when DATABASE_URL is unset."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

ASYNCPG_DRIVER = "postgresql+asyncpg"
DEFAULT_DATABASE = "meshgram"
_ACCEPTED_DRIVERS = frozenset({"postgresql", "postgres", ASYNCPG_DRIVER})


def to_asyncpg_url(url: str) -> str:
    """Return a postgresql://, postgres:// or postgresql+asyncpg:// URL in the asyncpg form.

    Raises ValueError for anything else, so a typo in DATABASE_URL stops the process at start.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("not a database URL (expected postgresql://...)") from None
    if parsed.drivername not in _ACCEPTED_DRIVERS:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}; use postgresql://"
        )
    parsed = parsed.set(drivername=ASYNCPG_DRIVER)
    # libpq spells it sslmode, asyncpg spells it ssl; managed servers' URLs often carry it.
    sslmode = parsed.query.get("sslmode")
    if sslmode is not None:
        parsed = parsed.difference_update_query(["sslmode"]).update_query_dict({"ssl": sslmode})
    return parsed.render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """Return url (in the asyncpg form) naming another database on the same server."""
    parsed = make_url(to_asyncpg_url(url)).set(database=database)
    return parsed.render_as_string(hide_password=False)


@contextmanager
def configured_database(configured: str | None, pg_data_dir: Path) -> Iterator[str]:
    """Yield the configured URL in the asyncpg form or, when there is none, the URL of the
    embedded database in pg_data_dir, kept running until the block ends."""
    if configured:
        yield to_asyncpg_url(configured)
        return
    with EmbeddedPostgres(pg_data_dir) as embedded:
        yield embedded.url


def _get_server(data_dir: Path, cleanup_mode: str) -> PostgresServer:
    """Start or join the pgserver PostgreSQL of data_dir, silencing its import-time warning."""
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime folder at import time; without
        # XDG_RUNTIME_DIR platformdirs warns and falls back to /tmp, which suits us.
        warnings.filterwarnings(
            "ignore", message="XDG_RUNTIME_DIR is not set", category=UserWarning
        )
        from pgserver.postgres_server import get_server

    return get_server(data_dir, cleanup_mode=cleanup_mode)


class EmbeddedPostgres:
    """A PostgreSQL server running from a local data folder, shared by every process using it.

    pgserver counts the processes holding the folder (one handle per process); the server stops
    when the last one calls stop() or exits. With delete_on_stop the folder is removed then.
    """

    def __init__(
        self,
        data_dir: Path | str,
        database: str = DEFAULT_DATABASE,
        *,
        delete_on_stop: bool = False,
    ) -> None:
        # admin imports this module's URL helpers, so it is imported late here.
        from data_access.admin import check_database_name

        self._data_dir = Path(data_dir).expanduser().resolve()
        self._database = check_database_name(database)
        self._delete_on_stop = delete_on_stop
        self._server: PostgresServer | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """asyncpg URL of the database; RuntimeError before start()."""
        if self._url is None:
            raise RuntimeError("the embedded PostgreSQL is not started")
        return self._url

    def start(self) -> str:
        """Start the server (or join the one already running on data_dir), create the database
        when missing and return its asyncpg URL."""
        if self._url is not None:
            return self._url
        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = _get_server(self._data_dir, "delete" if self._delete_on_stop else "stop")
        server_url = to_asyncpg_url(self._server.get_uri())
        _run_blocking(_ensure_database(server_url, self._database))
        self._url = with_database(server_url, self._database)
        return self._url

    def stop(self) -> None:
        """Release this process's handle; the server stops once no process holds one."""
        server, self._server, self._url = self._server, None, None
        if server is not None:
            server.cleanup()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


async def _ensure_database(server_url: str, database: str) -> None:
    """Create database on the server unless it exists."""
    from data_access.admin import create_database

    await create_database(server_url, database, exist_ok=True)


def _run_blocking(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion from synchronous code, even inside a running event loop."""
    # A private thread has no event loop, so asyncio.run works whatever the caller runs in.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-pg") as pool:
        pool.submit(asyncio.run, coroutine).result()
