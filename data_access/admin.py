"""Create and drop whole databases on a PostgreSQL server (tooling for tests and the runner)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from data_access.embedded import to_asyncpg_url, with_database

# Plain identifiers only: the name is spliced into CREATE/DROP DATABASE, which take no parameters.
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_DUPLICATE_DATABASE = "42P04"


def check_database_name(name: str) -> str:
    """Return name if it is a plain identifier (letters, digits, _; max 63); else ValueError."""
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}: use letters, digits and _ (max 63)")
    return name


async def database_exists(server_url: str, name: str) -> bool:
    """Tell whether database name exists on the server of server_url."""
    async with _autocommit(server_url) as connection:
        found = await connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        )
    return found is not None


async def create_database(server_url: str, name: str, *, exist_ok: bool = False) -> str:
    """Create database name on the server of server_url and return its asyncpg URL.

    server_url may name any existing database of that server (e.g. postgres); it is only used to
    connect. With exist_ok an existing database is kept as it is.
    """
    check_database_name(name)
    async with _autocommit(server_url) as connection:
        # Looking first keeps a failed CREATE (and its ERROR line) out of the server's log on
        # every start; the duplicate error below still covers a concurrent creation.
        if exist_ok and await connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ):
            return with_database(server_url, name)
        try:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        except DBAPIError as exc:
            if not (exist_ok and getattr(exc.orig, "sqlstate", None) == _DUPLICATE_DATABASE):
                raise
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop database name, ending its open sessions; a missing database is not an error."""
    check_database_name(name)
    async with _autocommit(server_url) as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@asynccontextmanager
async def _autocommit(server_url: str) -> AsyncIterator[AsyncConnection]:
    """One unpooled connection outside any transaction (CREATE DATABASE refuses to run in one)."""
    engine = create_async_engine(
        to_asyncpg_url(server_url), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        async with engine.connect() as connection:
            yield connection
    finally:
        await engine.dispose()
