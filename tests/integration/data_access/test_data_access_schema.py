"""Migrations and database administration against the real server."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from data_access import admin
from data_access.embedded import to_asyncpg_url
from data_access.migrate import alembic_config, upgrade_async
from data_access.models import Base

pytestmark = pytest.mark.integration

T = TypeVar("T")


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _downgrade_to_base(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "base")


async def _run(url: str, action: Callable[[Connection], T]) -> T:
    engine = create_async_engine(to_asyncpg_url(url), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(action)
    finally:
        await engine.dispose()


@pytest.fixture
async def scratch_database(database_url: str) -> AsyncIterator[str]:
    """An empty database on the test server, dropped afterwards."""
    name = f"meshgram_scratch_{secrets.token_hex(6)}"
    url = await admin.create_database(database_url, name)
    try:
        yield url
    finally:
        await admin.drop_database(database_url, name)


async def test_migrated_schema_matches_the_models_exactly(database_url: str) -> None:
    assert await _run(database_url, _differences) == []


async def test_migrating_twice_is_harmless_and_downgrade_removes_everything(
    scratch_database: str,
) -> None:
    await upgrade_async(scratch_database)
    await upgrade_async(scratch_database)
    assert await _run(scratch_database, _differences) == []

    await _run(scratch_database, _downgrade_to_base)
    assert await _run(scratch_database, _tables) == {"alembic_version"}

    await upgrade_async(scratch_database)
    assert await _run(scratch_database, _differences) == []


async def test_databases_are_created_and_dropped_by_name(database_url: str) -> None:
    name = f"meshgram_admin_{secrets.token_hex(6)}"

    url = await admin.create_database(database_url, name)
    assert await admin.database_exists(database_url, name)
    assert (await admin.create_database(database_url, name, exist_ok=True)) == url
    await admin.drop_database(database_url, name)
    assert not await admin.database_exists(database_url, name)
    await admin.drop_database(database_url, name)
