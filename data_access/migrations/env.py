"""Alembic environment: migrate the connection data_access.migrate hands over, or (alembic
command line) the configured database; offline mode prints PostgreSQL SQL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from data_access.embedded import configured_database
from data_access.models import Base
from data_access.settings import DatabaseSettings

config = context.config
target_metadata = Base.metadata


def run_on(connection: Connection) -> None:
    """Run the pending migrations on an open connection."""
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_on_url(url: str) -> None:
    """Run the pending migrations on the database at url."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_on)
    finally:
        await engine.dispose()


def run_online() -> None:
    """Migrate the handed-over connection, else the database the settings name."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    settings = DatabaseSettings()
    with configured_database(settings.database_url, settings.pg_data_dir) as url:
        asyncio.run(run_on_url(url))


def run_offline() -> None:
    """Emit the migrations as SQL for PostgreSQL instead of running them."""
    context.configure(
        dialect_name="postgresql", target_metadata=target_metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
