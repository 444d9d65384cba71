"""The sweepers (refresh tokens, sessions, account tokens, mails, failed-login counters, MFA
challenges, security events) against the real database."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from data_access.account_tokens import AccountTokenStore
from data_access.accounts import AccountStore
from data_access.database import Database, open_database
from data_access.models import RefreshToken
from data_access.records import Mail, NewSession, NewToken, TokenPurpose
from data_access.refresh_tokens import RefreshTokenStore
from data_access.sweeper import (
    ACCOUNT_TOKENS,
    EXPIRY_JOBS,
    LOGIN_ATTEMPTS,
    MAIL_REQUESTS,
    MFA_CHALLENGES,
    OUTBOX,
    REFRESH_TOKENS,
    SECURITY_EVENTS,
    SESSIONS,
    SWEEP_LOCK_KEY,
    Sweeper,
    SweepJob,
)
from meshkit.background import RoundFigures

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


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
        await tokens.create(
            NewSession(
                account_id=str(account.id),
                token_hash=token_hash,
                expires_at=datetime.now(UTC) + lifetime,
                ends_at=datetime.now(UTC) + DAY,
            )
        )
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
    figures = RoundFigures()
    sweeper = Sweeper(database, REFRESH_TOKENS, interval_seconds=0.05, figures=figures)

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
    # Its metrics count the rounds (another process's sweeper may have deleted the rows).
    assert figures.rounds >= 1
    assert figures.failed == 0


async def _sweep(database: Database, job: SweepJob) -> None:
    """Run one sweep of job now."""
    assert await Sweeper(database, job, interval_seconds=3600).sweep_once() is not None


async def _execute(database: Database, statement: str, **params: object) -> None:
    """Run one statement that changes rows as no RPC does (ages them)."""
    async with database.transaction() as session:
        await session.execute(text(statement), params)


async def _rows(database: Database, query: str, **params: object) -> list[Any]:
    """The rows of one query."""
    async with database.transaction() as session:
        return list((await session.execute(text(query), params)).all())


async def test_sessions_past_their_end_or_without_tokens_go_with_their_tokens(
    database: Database,
) -> None:
    account_id, hashes = await _account_with_tokens(database, HOUR, HOUR, HOUR, HOUR)
    families = {
        row.token_hash: row.family_id
        for row in await _rows(
            database,
            "SELECT token_hash, family_id FROM refresh_tokens WHERE token_hash = ANY(:hashes)",
            hashes=hashes,
        )
    }
    live, ended_long_ago, ended_just_now, emptied = (families[h] for h in hashes)
    await _execute(
        database,
        "UPDATE sessions SET ends_at = now() - interval '1 hour' WHERE id = :id",
        id=ended_long_ago,
    )
    # Within the grace period: kept for now.
    await _execute(
        database,
        "UPDATE sessions SET ends_at = now() - interval '1 minute' WHERE id = :id",
        id=ended_just_now,
    )
    await _execute(database, "DELETE FROM refresh_tokens WHERE family_id = :id", id=emptied)

    await _sweep(database, SESSIONS)

    remaining = await _rows(
        database,
        "SELECT id FROM sessions WHERE account_id = :account",
        account=uuid.UUID(account_id),
    )
    assert {row.id for row in remaining} == {live, ended_just_now}
    assert await _stored(database, account_id) == {hashes[0], hashes[2]}


async def test_used_or_expired_account_tokens_are_swept(database: Database) -> None:
    unique = uuid.uuid4().hex[:16]
    verification = _hash()
    account = await AccountStore(database).create(
        f"{unique}@example.com",
        f"u_{unique}",
        "h",
        verification=NewToken(verification, datetime.now(UTC) - HOUR),
    )
    store = AccountTokenStore(database)
    used, live = _hash(), _hash()
    mail = Mail(kind="password_reset", sealed=b"sealed")
    await store.issue(account.email, TokenPurpose.RESET_PASSWORD, NewToken(used, _later()), mail)
    await store.use(used, TokenPurpose.RESET_PASSWORD, new_password_hash="h2")
    await store.issue(account.email, TokenPurpose.RESET_PASSWORD, NewToken(live, _later()), mail)

    await _sweep(database, ACCOUNT_TOKENS)

    remaining = await _rows(
        database, "SELECT token_hash FROM account_tokens WHERE account_id = :id", id=account.id
    )
    assert {row.token_hash for row in remaining} == {live}


async def test_finished_mails_are_swept_after_their_retention(database: Database) -> None:
    ages = {
        "sent two days ago": "sent_at = now() - interval '2 days'",
        "sent an hour ago": "sent_at = now() - interval '1 hour'",
        "given up 31 days ago": "given_up_at = now() - interval '31 days'",
        "given up 29 days ago": "given_up_at = now() - interval '29 days'",
        "queued 40 days ago": "created_at = now() - interval '40 days'",
    }
    kind = f"k_{uuid.uuid4().hex}"
    for age in ages.values():
        await _execute(
            database,
            "INSERT INTO outbox (kind, last_error) VALUES (:kind, :age)",
            kind=kind,
            age=age,
        )
        await _execute(
            database,
            f"UPDATE outbox SET {age} WHERE kind = :kind AND last_error = :age",
            kind=kind,
            age=age,
        )

    await _sweep(database, OUTBOX)

    remaining = await _rows(database, "SELECT last_error FROM outbox WHERE kind = :k", k=kind)
    assert {row.last_error for row in remaining} == {
        ages["sent an hour ago"],
        ages["given up 29 days ago"],
        ages["queued 40 days ago"],
    }


async def _new_account(database: Database) -> uuid.UUID:
    unique = uuid.uuid4().hex[:16]
    account = await AccountStore(database).create(f"{unique}@example.com", f"u_{unique}", "h")
    return account.id


async def test_failed_login_counters_idle_for_over_a_day_are_swept(database: Database) -> None:
    ages = {"idle 25 hours": 25 * HOUR, "idle 23 hours": 23 * HOUR, "just now": timedelta(0)}
    keys = {label: f"sweep:{uuid.uuid4().hex}" for label in ages}
    for label, age in ages.items():
        await _execute(
            database,
            "INSERT INTO login_attempts (key, failures, last_failure_at) "
            "VALUES (:key, 3, now() - CAST(:age AS interval))",
            key=keys[label],
            age=age,
        )

    await _sweep(database, LOGIN_ATTEMPTS)

    remaining = await _rows(
        database, "SELECT key FROM login_attempts WHERE key = ANY(:keys)", keys=list(keys.values())
    )
    assert {row.key for row in remaining} == {keys["idle 23 hours"], keys["just now"]}


async def test_mail_request_counters_idle_for_over_a_day_are_swept(database: Database) -> None:
    ages = {"idle 25 hours": 25 * HOUR, "idle 23 hours": 23 * HOUR, "just now": timedelta(0)}
    keys = {label: f"sweep:{uuid.uuid4().hex}" for label in ages}
    for label, age in ages.items():
        await _execute(
            database,
            "INSERT INTO mail_requests (key, requests, last_request_at) "
            "VALUES (:key, 2, now() - CAST(:age AS interval))",
            key=keys[label],
            age=age,
        )

    await _sweep(database, MAIL_REQUESTS)

    remaining = await _rows(
        database, "SELECT key FROM mail_requests WHERE key = ANY(:keys)", keys=list(keys.values())
    )
    assert {row.key for row in remaining} == {keys["idle 23 hours"], keys["just now"]}


async def test_mfa_challenges_are_swept_a_day_after_they_expired_or_were_used(
    database: Database,
) -> None:
    account_id = await _new_account(database)
    states = {
        "expired two days ago": ("now() - interval '2 days'", "NULL"),
        "expired an hour ago": ("now() - interval '1 hour'", "NULL"),
        "used two days ago": ("now() + interval '1 hour'", "now() - interval '2 days'"),
        "used an hour ago": ("now() + interval '1 hour'", "now() - interval '1 hour'"),
        "live": ("now() + interval '1 hour'", "NULL"),
    }
    tokens = {label: _hash() for label in states}
    for label, (expires_at, used_at) in states.items():
        await _execute(
            database,
            "INSERT INTO mfa_challenges (id, account_id, token_hash, expires_at, used_at) "
            f"VALUES (gen_random_uuid(), :account, :token, {expires_at}, {used_at})",
            account=account_id,
            token=tokens[label],
        )

    await _sweep(database, MFA_CHALLENGES)

    remaining = await _rows(
        database, "SELECT token_hash FROM mfa_challenges WHERE account_id = :id", id=account_id
    )
    assert {row.token_hash for row in remaining} == {
        tokens["expired an hour ago"],
        tokens["used an hour ago"],
        tokens["live"],
    }


async def test_security_events_are_kept_365_days(database: Database) -> None:
    account_id = await _new_account(database)
    # Rows are never updated (a trigger refuses): their age is set as they are inserted.
    for days in (366, 364, 0):
        await _execute(
            database,
            "INSERT INTO security_events (account_id, kind, created_at, detail) "
            "VALUES (:account, 'login_succeeded', now() - CAST(:age AS interval), :label)",
            account=account_id,
            age=days * DAY,
            label=f"{days} days",
        )

    await _sweep(database, SECURITY_EVENTS)

    remaining = await _rows(
        database, "SELECT detail FROM security_events WHERE account_id = :id", id=account_id
    )
    assert {row.detail for row in remaining} == {"364 days", "0 days"}


def test_every_expiry_job_has_its_own_sweep_lock() -> None:
    keys = [job.lock_key for job in EXPIRY_JOBS]

    assert len(set(keys)) == len(keys)
    assert {LOGIN_ATTEMPTS, MAIL_REQUESTS, MFA_CHALLENGES, SECURITY_EVENTS} <= set(EXPIRY_JOBS)


def _hash() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def _later() -> datetime:
    return datetime.now(UTC) + HOUR
