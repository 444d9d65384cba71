"""Migrations and database administration against the real server."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from data_access import admin
from data_access.embedded import to_asyncpg_url
from data_access.migrate import alembic_config, upgrade_async
from data_access.models import COLLATED_INDEXES, Base

pytestmark = pytest.mark.integration

T = TypeVar("T")


def _comparable(obj: object, name: str | None, kind: str, reflected: bool, other: object) -> bool:
    """Leave out the collated indexes, which Alembic cannot compare (see _collated_indexes)."""
    return not (kind == "index" and name in COLLATED_INDEXES)


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": _comparable}
    )
    return list(compare_metadata(context, Base.metadata))


def _collated_indexes(connection: Connection) -> dict[str, str]:
    """The definitions of the collated indexes, from the database's catalog."""
    rows = connection.execute(
        text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(:names)"),
        {"names": list(COLLATED_INDEXES)},
    )
    # "CREATE INDEX <name> ON ...": the part from ON on.
    return {name: "ON " + definition.partition(" ON ")[2] for name, definition in rows}


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
    assert await _run(database_url, _collated_indexes) == COLLATED_INDEXES


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


ACCOUNT = uuid.uuid4()
FAMILY = uuid.uuid4()
OTHER_FAMILY = uuid.uuid4()
NOV_1 = datetime(2026, 11, 1, 10, tzinfo=UTC)
NOV_2 = datetime(2026, 11, 2, 10, tzinfo=UTC)
NOV_5 = datetime(2026, 11, 5, 10, tzinfo=UTC)


def _downgrade_to_0003(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0003")


def _fill_0003(connection: Connection) -> None:
    """An account with two refresh-token families (one refreshed) as revision 0003 stores them."""
    connection.execute(
        text(
            "INSERT INTO accounts (id, email, username, password_hash) "
            "VALUES (:id, 'a@example.com', 'a', 'h')"
        ),
        {"id": ACCOUNT},
    )
    for family, token, created, started in [
        (FAMILY, "1", NOV_1, NOV_1),
        (FAMILY, "2", NOV_2, NOV_1),
        (OTHER_FAMILY, "3", NOV_5, NOV_5),
    ]:
        connection.execute(
            text(
                "INSERT INTO refresh_tokens (id, account_id, family_id, token_hash, expires_at, "
                "created_at, session_started_at) VALUES (gen_random_uuid(), :account, :family, "
                ":hash, now() + interval '1 day', :created, :started)"
            ),
            {
                "account": ACCOUNT,
                "family": family,
                "hash": token * 64,
                "created": created,
                "started": started,
            },
        )


def _sessions(connection: Connection) -> list[tuple[object, ...]]:
    return [
        tuple(row)
        for row in connection.execute(
            text(
                "SELECT id, account_id, created_at, ends_at - created_at, remembered, user_agent, "
                "client_ip, last_used_at FROM sessions ORDER BY created_at"
            )
        )
    ]


def _login_times(connection: Connection) -> set[tuple[object, ...]]:
    return {
        tuple(row)
        for row in connection.execute(
            text("SELECT token_hash, session_started_at FROM refresh_tokens")
        )
    }


async def test_0004_makes_every_token_family_a_session_and_its_downgrade_gives_it_back(
    scratch_database: str,
) -> None:
    await upgrade_async(scratch_database, "0003")
    await _run(scratch_database, _fill_0003)

    await upgrade_async(scratch_database)

    ninety_days = timedelta(days=90)
    assert await _run(scratch_database, _sessions) == [
        (FAMILY, ACCOUNT, NOV_1, ninety_days, True, "", "", NOV_2),
        (OTHER_FAMILY, ACCOUNT, NOV_5, ninety_days, True, "", "", NOV_5),
    ]

    await _run(scratch_database, _downgrade_to_0003)

    assert await _run(scratch_database, _login_times) == {
        ("1" * 64, NOV_1),
        ("2" * 64, NOV_1),
        ("3" * 64, NOV_5),
    }
    assert "sessions" not in await _run(scratch_database, _tables)


SESSION = uuid.uuid4()
DEFENCE_TABLES = {
    "login_attempts",
    "mfa_factors",
    "recovery_codes",
    "mfa_challenges",
    "security_events",
}


def _downgrade_to_0004(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0004")


def _fill_0004(connection: Connection) -> None:
    """An account with a session started on Nov 1, as revision 0004 stores it."""
    connection.execute(
        text(
            "INSERT INTO accounts (id, email, username, password_hash) "
            "VALUES (:id, 'a@example.com', 'a', 'h')"
        ),
        {"id": ACCOUNT},
    )
    connection.execute(
        text(
            "INSERT INTO sessions (id, account_id, created_at, ends_at, last_used_at) "
            "VALUES (:id, :account, :created, :ends, :used)"
        ),
        {
            "id": SESSION,
            "account": ACCOUNT,
            "created": NOV_1,
            "ends": NOV_1 + timedelta(days=30),
            "used": NOV_5,
        },
    )


def _authenticated_at(connection: Connection) -> object:
    return connection.scalar(
        text("SELECT authenticated_at FROM sessions WHERE id = :id"), {"id": SESSION}
    )


def _session_columns(connection: Connection) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns("sessions")}


def _refusal_function_exists(connection: Connection) -> bool:
    return bool(
        connection.scalar(
            text("SELECT count(*) FROM pg_proc WHERE proname = 'security_events_refuse_update'")
        )
    )


def _rewrite_an_event(connection: Connection) -> None:
    connection.execute(
        text("INSERT INTO security_events (account_id, kind) VALUES (:id, 'login_succeeded')"),
        {"id": ACCOUNT},
    )
    connection.execute(text("UPDATE security_events SET detail = 'rewritten'"))


async def test_0005_dates_each_sessions_authentication_at_its_login_and_downgrades_cleanly(
    scratch_database: str,
) -> None:
    await upgrade_async(scratch_database, "0004")
    await _run(scratch_database, _fill_0004)

    await upgrade_async(scratch_database)

    assert await _run(scratch_database, _authenticated_at) == NOV_1
    assert await _run(scratch_database, _tables) >= DEFENCE_TABLES
    with pytest.raises(DBAPIError, match="append-only"):
        await _run(scratch_database, _rewrite_an_event)

    await _run(scratch_database, _downgrade_to_0004)

    assert not DEFENCE_TABLES & await _run(scratch_database, _tables)
    assert "authenticated_at" not in await _run(scratch_database, _session_columns)
    assert not await _run(scratch_database, _refusal_function_exists)

    await upgrade_async(scratch_database)
    assert await _run(scratch_database, _differences) == []
    assert await _run(scratch_database, _authenticated_at) == NOV_1
