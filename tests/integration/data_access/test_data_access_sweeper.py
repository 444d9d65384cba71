"""The refresh-token sweeper against the real database."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from data_access.accounts import AccountStore
from data_access.database import Database, open_database
from data_access.models import RefreshToken
from data_access.refresh_tokens import RefreshTokenStore
from data_access.sweeper import REFRESH_TOKENS, SWEEP_LOCK_KEY, Sweeper

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    opened = open_database(database_url, pool_size=2, max_overflow=0)
    try:
        yield opened
    finally:
        await opened.dispose()


async def _account_with_tokens(database: Database, *lifetimes: timedelta) -> tuple[str, list[str]]:
    """A new account holding one token per lifetime (negative = already expired)."""
    unique = uuid.uuid4().hex[:16]
    account = await AccountStore(database).create(f"{unique}@example.com", f"u_{unique}", "h")
    tokens = RefreshTokenStore(database)
    hashes = []
    for lifetime in lifetimes:
        token_hash = hashlib.sha256(secrets.token_bytes(32)).hexdigest()
        await tokens.create(str(account.id), token_hash, datetime.now(UTC) + lifetime)
        hashes.append(token_hash)
    return str(account.id), hashes


async def _stored(database: Database, account_id: str) -> set[str]:
    async with database.transaction() as session:
        rows = await session.scalars(
            select(RefreshToken.token_hash).where(RefreshToken.account_id == uuid.UUID(account_id))
        )
        return set(rows)


async def test_sweep_deletes_expired_tokens_in_batches_and_keeps_live_ones(
    database: Database,
) -> None:
    account_id, hashes = await _account_with_tokens(database, HOUR, *[-HOUR] * 5)

    deleted = await Sweeper(
        database, REFRESH_TOKENS, interval_seconds=3600, batch_size=2
    ).sweep_once()

    assert deleted is not None
    assert await _stored(database, account_id) == {hashes[0]}


async def test_only_one_replica_sweeps_at_a_time(database: Database) -> None:
    account_id, hashes = await _account_with_tokens(database, -HOUR)
    sweeper = Sweeper(database, REFRESH_TOKENS, interval_seconds=3600)

    async with database.engine.connect() as other_replica:
        await other_replica.execute(text("SELECT pg_advisory_lock(:k)"), {"k": SWEEP_LOCK_KEY})
        try:
            assert await sweeper.sweep_once() is None
            assert await _stored(database, account_id) == set(hashes)
        finally:
            await other_replica.execute(
                text("SELECT pg_advisory_unlock(:k)"), {"k": SWEEP_LOCK_KEY}
            )
            await other_replica.commit()

    assert await sweeper.sweep_once() is not None
    assert await _stored(database, account_id) == set()


async def test_background_sweeper_removes_expired_tokens_until_stopped(
    database: Database,
) -> None:
    account_id, _ = await _account_with_tokens(database, -HOUR)
    sweeper = Sweeper(database, REFRESH_TOKENS, interval_seconds=0.05)

    sweeper.start()
    try:
        remaining = await _stored(database, account_id)
        for _ in range(200):
            if not remaining:
                break
            await asyncio.sleep(0.05)
            remaining = await _stored(database, account_id)
    finally:
        await sweeper.stop()

    assert remaining == set()
