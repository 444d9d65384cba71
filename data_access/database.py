"""The engine, the session factory and the unit of work: one AsyncSession (one transaction)
per RPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import Select, TextClause, event, text
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from data_access.embedded import to_asyncpg_url
from data_access.sql_tracing import statement_span, trace_engine
from meshkit.errors import Unavailable
from meshkit.reasons import Reason

_CONNECT_TIMEOUT_SECONDS = 5.0
_POOL_TIMEOUT_SECONDS = 5.0
_POOL_RECYCLE_SECONDS = 1800
# No statement and no pause inside a transaction may outlast this: a stuck call cannot hold
# locks for long, and the change feed's replay margin (changes.py) can rely on short commits.
_STATEMENT_LIMIT = "15s"


@dataclass(frozen=True)
class FastQuery:
    """A Core SELECT compiled once for asyncpg, to be run on the driver directly (fetch_one)."""

    sql: str
    names: tuple[str, ...]
    """Bound parameter names in the order of the compiled statement's $1, $2, ..."""

    @classmethod
    def of(cls, statement: Select[*tuple[Any, ...]] | TextClause) -> FastQuery:
        """Compile statement (a Core SELECT, or a SELECT in text with named parameters) for
        asyncpg."""
        compiled = statement.compile(dialect=_ASYNCPG)
        return cls(str(compiled), tuple(compiled.positiontup or ()))


_ASYNCPG = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
# What asyncpg raises for a lost connection, a server shutting down or starting up (and
# statements the server cancelled): used directly, or as the cause under SQLAlchemy's errors.
_DRIVER_OUTAGES = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    # Raised by a connection left mid-operation by a lost server ("cannot switch to state").
    asyncpg.exceptions.InternalClientError,
)


@dataclass(frozen=True)
class Database:
    """An open connection pool and the sessions drawn from it."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    autocommit: AsyncEngine
    """The same pool, with statements run in autocommit mode (see read())."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Yield a session in one transaction: committed when the block ends, rolled back when it
        raises; an unreachable database becomes Unavailable (retryable) instead of INTERNAL."""
        async with _translate_outages(), self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Yield a connection for ONE read-only statement, run without BEGIN/COMMIT.

        A single SELECT is atomic on its own; skipping the transaction saves two round trips
        on the hottest calls. Anything that writes or reads twice must use transaction().
        """
        async with _translate_outages(), self.autocommit.connect() as connection:
            yield connection

    async def fetch_one(
        self, query: FastQuery, params: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """Run one prebuilt SELECT and return its first row, or None.

        For the hottest reads: a pooled connection's asyncpg driver runs the statement (prepared
        and cached by asyncpg), skipping SQLAlchemy's execution and result layers, which cost
        about as much CPU as the query itself. A connection that fails is discarded.
        """
        async with _translate_outages(), self.autocommit.connect() as connection:
            pooled = await connection.get_raw_connection()
            driver: Any = pooled.driver_connection
            try:
                with statement_span(query.sql):
                    row = await driver.fetchrow(query.sql, *(params[n] for n in query.names))
            except _DRIVER_OUTAGES as exc:
                await connection.invalidate()
                raise _unavailable() from exc
        return None if row is None else dict(row.items())

    async def fetch_all(
        self, query: FastQuery, params: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:
        """Run one prebuilt SELECT and return all its rows, the way fetch_one runs its one."""
        async with _translate_outages(), self.autocommit.connect() as connection:
            pooled = await connection.get_raw_connection()
            driver: Any = pooled.driver_connection
            try:
                with statement_span(query.sql):
                    rows = await driver.fetch(query.sql, *(params[n] for n in query.names))
            except _DRIVER_OUTAGES as exc:
                await connection.invalidate()
                raise _unavailable() from exc
        return [dict(row.items()) for row in rows]

    async def ping(self) -> bool:
        """Return True when the database answers SELECT 1 (drives health)."""
        async with self.engine.connect() as connection:
            answer = await connection.scalar(text("SELECT 1"))
        return bool(answer == 1)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


@asynccontextmanager
async def _translate_outages() -> AsyncIterator[None]:
    """Turn an unreachable database into Unavailable (retryable) instead of INTERNAL."""
    try:
        yield
    except (PoolTimeoutError, InterfaceError, OperationalError, *_DRIVER_OUTAGES) as exc:
        raise _unavailable() from exc
    except DBAPIError as exc:
        if exc.connection_invalidated or _driver_outage(exc):
            raise _unavailable() from exc
        raise


def _driver_outage(error: DBAPIError) -> bool:
    """Whether the driver's error under error says the server is gone, shutting down or not yet
    started ("the database system is starting up"): SQLAlchemy wraps those as plain DBAPIError,
    and a connection it does not yet see closed is not marked invalidated."""
    # The dialect's own error sits in between; asyncpg's is its cause (as in violated_constraint).
    driver = error.orig.__cause__ if error.orig is not None else None
    return isinstance(driver, _DRIVER_OUTAGES)


def open_database(
    database_url: str, *, pool_size: int = 10, max_overflow: int = 10, application_name: str = ""
) -> Database:
    """Create the pool for database_url (any postgres URL form); connections open lazily."""
    engine = create_async_engine(
        to_asyncpg_url(database_url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=_POOL_TIMEOUT_SECONDS,
        # No pre-ping: it would cost a round trip on every call. A connection the server closed
        # (a restart ends every session) is replaced when drawn (_replace_closed); one broken
        # silently fails its call as UNAVAILABLE (retryable) and is replaced; recycling bounds
        # how long idle connections live across failovers.
        pool_recycle=_POOL_RECYCLE_SECONDS,
        # Statement parameters carry emails and password hashes: keep them out of errors and logs.
        hide_parameters=True,
        connect_args={
            "timeout": _CONNECT_TIMEOUT_SECONDS,
            "server_settings": {
                "application_name": application_name or "data_access",
                "statement_timeout": _STATEMENT_LIMIT,
                "idle_in_transaction_session_timeout": _STATEMENT_LIMIT,
            },
        },
    )
    event.listen(engine.sync_engine.pool, "checkout", _replace_closed)
    trace_engine(engine)
    return Database(
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        autocommit=engine.execution_options(isolation_level="AUTOCOMMIT"),
    )


def _replace_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled connection that is already closed, so the pool opens a fresh one.

    When PostgreSQL restarts it closes every session; asyncpg notices at once (the socket's
    end of file), but the pool would hand the dead connection out and fail one call per idle
    connection after the database is back. This check costs no round trip.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("connection closed by the server")


def violated_constraint(error: IntegrityError) -> str | None:
    """Return the name of the constraint an INSERT or UPDATE broke, when PostgreSQL named one."""
    # SQLAlchemy wraps the driver's exception; asyncpg's original carries the constraint name.
    cause = error.orig.__cause__ if error.orig is not None else None
    name = getattr(cause, "constraint_name", None)
    return name if isinstance(name, str) else None


def _unavailable() -> Unavailable:
    """The error callers see while the database cannot be reached."""
    return Unavailable(
        message="the database is unavailable, please retry", reason=Reason.DEPENDENCY_UNAVAILABLE
    )
