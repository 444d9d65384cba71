"""Database migrations, applied programmatically (no alembic.ini needed).

`python -m data_access.migrate` (what `make migrate` runs) brings the configured database to the
latest revision, starting the embedded PostgreSQL when DATABASE_URL is unset.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from data_access.embedded import configured_database, to_asyncpg_url
from data_access.settings import DatabaseSettings
from meshkit.logs import configure_logging

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Replicas starting together take turns; the second finds nothing left to do.
_MIGRATION_LOCK_KEY = 0x6D69677261746500

log = logging.getLogger("data_access.migrate")


def alembic_config(connection: Connection | None = None) -> Config:
    """Return the Alembic configuration of data_access, optionally bound to a connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """Migrate the database at database_url (any postgres URL form) up to revision, in one
    transaction."""
    engine = create_async_engine(to_asyncpg_url(database_url), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
            await connection.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database at database_url up to revision; from synchronous code only
    (coroutines await upgrade_async)."""
    asyncio.run(upgrade_async(database_url, revision))


def _upgrade(connection: Connection, revision: str) -> None:
    """Run Alembic's upgrade on a connection that is already in a transaction."""
    command.upgrade(alembic_config(connection), revision)


def main() -> None:
    """Migrate the configured database (embedded when DATABASE_URL is unset) to the latest."""
    settings = DatabaseSettings()
    configure_logging("data_access.migrate", settings.log_level)
    with configured_database(settings.database_url, settings.pg_data_dir) as database_url:
        upgrade(database_url)
    log.info("database migrated to the latest revision")


if __name__ == "__main__":
    main()
