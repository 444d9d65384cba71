"""PostgreSQL URLs in SQLAlchemy's asyncpg form, and the embedded PostgreSQL (pgserver) that
serves when DATABASE_URL is unset: shared by the processes using it (EmbeddedPostgres), or run in
the foreground under a supervisor that restarts it (ForegroundPostgres, for `make run`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import warnings
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import psutil
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

ASYNCPG_DRIVER = "postgresql+asyncpg"
DEFAULT_DATABASE = "meshgram"
POSTMASTER_PID = "postmaster.pid"
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


def _pgserver() -> ModuleType:
    """Import pgserver.postgres_server, silencing its import-time warning."""
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime folder at import time; without
        # XDG_RUNTIME_DIR platformdirs warns and falls back to /tmp, which suits us.
        warnings.filterwarnings(
            "ignore", message="XDG_RUNTIME_DIR is not set", category=UserWarning
        )
        import pgserver.postgres_server

    return pgserver.postgres_server


def _get_server(data_dir: Path, cleanup_mode: str) -> PostgresServer:
    """Start or join the pgserver PostgreSQL of data_dir."""
    server: PostgresServer = _pgserver().get_server(data_dir, cleanup_mode=cleanup_mode)
    return server


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


@dataclass(frozen=True)
class ForegroundPostgres:
    """The PostgreSQL server of a data folder run as a foreground child process.

    pgserver starts its server as a daemon that nobody notices dying; as a direct child the
    server can be watched, restarted and stopped with its parent (tools.supervisor). It listens
    on a Unix socket only, like pgserver's.
    """

    data_dir: Path
    socket_dir: Path
    user: str | None
    """System user the server runs as: the data folder's owner when running as root (PostgreSQL
    refuses to run as root; pgserver initialises the folder for its own user then), else None."""

    @classmethod
    def prepare(cls, data_dir: Path | str) -> ForegroundPostgres:
        """Initialise data_dir on first use (with pgserver, which also creates the meshgram
        database) and describe how to run its server; RuntimeError when a server started some
        other way already runs on it."""
        data_dir = Path(data_dir).expanduser().resolve()
        if not (data_dir / "PG_VERSION").exists():
            # pgserver knows how to initialise a folder (for its own user when we are root);
            # starting and stopping its server once does that.
            with EmbeddedPostgres(data_dir):
                pass
        running = _live_postmaster(data_dir)
        if running is not None:
            raise RuntimeError(
                f"a PostgreSQL server (pid {running}) already runs on {data_dir}, started by "
                "another program; stop it, or set DATABASE_URL to use it"
            )
        module = _pgserver()
        socket_dir = Path(
            module.find_suitable_socket_dir(data_dir, module.PostgresServer.runtime_path)
        )
        user = None
        if os.geteuid() == 0:
            import pwd  # POSIX only, like running as root

            user = pwd.getpwuid(data_dir.stat().st_uid).pw_name
            if socket_dir != data_dir:
                # As pgserver does: the server's user must be able to reach and write the folder.
                module.ensure_prefix_permissions(socket_dir)
                socket_dir.chmod(0o777)
        return cls(data_dir, socket_dir, user)

    @property
    def command(self) -> list[str]:
        """The server's command line: no TCP listener, its socket in socket_dir."""
        binary = Path(_pgserver().POSTGRES_BIN_PATH) / "postgres"
        return [str(binary), "-D", str(self.data_dir), "-h", "", "-k", str(self.socket_dir)]

    @property
    def server_url(self) -> str:
        """asyncpg URL of the server's maintenance database (postgres)."""
        return to_asyncpg_url(f"postgresql://postgres:@/postgres?host={self.socket_dir}")

    def clear_stale_lock(self) -> None:
        """Remove a postmaster.pid that names no live server of this folder.

        A kill -9 or a reboot leaves the file behind. PostgreSQL removes it itself while its PID
        is free, but once another process of the same user has taken the PID, it sees a running
        server there and refuses to start.
        """
        if _pid_in_lock(self.data_dir) is not None and _live_postmaster(self.data_dir) is None:
            (self.data_dir / POSTMASTER_PID).unlink(missing_ok=True)

    def wait_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        """Block until process, this folder's server, accepts connections; RuntimeError when it
        exits first, TimeoutError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited with {process.returncode} while starting")
            lines = _lock_lines(self.data_dir)
            # postmaster.pid: PID, folder, start time, port, socket folder, address, shared
            # memory, status; the status turns "ready" once connections are accepted.
            if len(lines) >= 8 and lines[0] == str(process.pid) and lines[7].strip() == "ready":
                return
            time.sleep(0.05)
        raise TimeoutError(f"PostgreSQL not ready after {timeout:.0f}s")

    def ensure_database(self, database: str = DEFAULT_DATABASE) -> str:
        """Create database on the running server unless it exists; return its asyncpg URL."""
        _run_blocking(_ensure_database(self.server_url, database))
        return with_database(self.server_url, database)


def _lock_lines(data_dir: Path) -> list[str]:
    """The lines of data_dir's postmaster.pid (none when it is missing)."""
    try:
        return (data_dir / POSTMASTER_PID).read_text().splitlines()
    except FileNotFoundError:
        return []


def _pid_in_lock(data_dir: Path) -> int | None:
    """The PID data_dir's postmaster.pid names, if any."""
    lines = _lock_lines(data_dir)
    try:
        return int(lines[0])
    except (IndexError, ValueError):
        return None


def _live_postmaster(data_dir: Path) -> int | None:
    """PID of the PostgreSQL server running on data_dir according to its postmaster.pid."""
    pid = _pid_in_lock(data_dir)
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        serves_here = process.name() == "postgres" and str(data_dir) in process.cmdline()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        # Cannot tell: taking it for a live server is the safe answer (its lock stays).
        return pid
    return pid if serves_here else None


async def _ensure_database(server_url: str, database: str) -> None:
    """Create database on the server unless it exists."""
    from data_access.admin import create_database

    await create_database(server_url, database, exist_ok=True)


def _run_blocking(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion from synchronous code, even inside a running event loop."""
    # A private thread has no event loop, so asyncio.run works whatever the caller runs in.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-pg") as pool:
        pool.submit(asyncio.run, coroutine).result()
