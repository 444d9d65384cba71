"""Deletes rows past their lifetime (expired refresh tokens, ended sessions, used or expired
account tokens, delivered mails, old change-log entries, idle failed-login and mail-request
counters, ended rate-limit windows, finished MFA challenges, old security events), lifts admin
blocks that are over and deletes accounts whose deletion grace period is over, in the
background, on one replica at a time.

What is kept how long, beyond expiry: a failed-login or mail-request counter a day after its last
use (login_attempts.COUNTER_IDLE_MAX, the longest a caller may count over); an MFA challenge a day
after it expired or was used (MFA_CHALLENGE_RETENTION); a security event 365 days
(SECURITY_EVENT_RETENTION: a year of an account's log to look back on, and no longer).

PostgreSQL has no TTL, so rows would pile up forever. Every replica runs the sweepers; a
transaction-scoped advisory lock per table lets only one replica delete at a time and frees
itself when the transaction ends, even if the process dies mid-sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Executable, TextClause, delete, exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.database import Database
from data_access.lifecycle import purge_due_account
from data_access.login_attempts import COUNTER_IDLE_MAX
from data_access.models import (
    AccountToken,
    ChangeLog,
    LoginAttempt,
    LoginSession,
    MailRequest,
    MfaChallenge,
    OutboxMail,
    RateWindow,
    RefreshToken,
    SecurityEvent,
)
from data_access.moderation import LIFT_EXPIRED_BLOCKS
from meshkit.background import BackgroundTask, RoundFigures, repeat

log = logging.getLogger("data_access.sweeper")

# Any constants shared by all replicas work; these spell "rtsweep", "clsweep", "sssweep",
# "atsweep", "obsweep", "lasweep", "mcsweep", "sesweep", "mrsweep", "blsweep" and "pusweep" in
# ASCII.
SWEEP_LOCK_KEY = 0x72747377656570
CHANGE_LOG_LOCK_KEY = 0x636C7377656570
SESSIONS_LOCK_KEY = 0x73737377656570
ACCOUNT_TOKENS_LOCK_KEY = 0x61747377656570
OUTBOX_LOCK_KEY = 0x6F627377656570
LOGIN_ATTEMPTS_LOCK_KEY = 0x6C617377656570
MFA_CHALLENGES_LOCK_KEY = 0x6D637377656570
SECURITY_EVENTS_LOCK_KEY = 0x73657377656570
MAIL_REQUESTS_LOCK_KEY = 0x6D727377656570
BLOCKS_LOCK_KEY = 0x626C7377656570
PURGE_LOCK_KEY = 0x70757377656570
# "rwsweep"
RATE_WINDOWS_LOCK_KEY = 0x72777377656570
_BATCH_SIZE = 5_000


@dataclass(frozen=True)
class SweepJob:
    """What one sweeper does: delete rows of `table` whose `expired()` condition holds, or run
    `statement` (one batch of at most :limit rows, returning a row per row handled)."""

    name: str
    lock_key: int
    table: Any = None
    id_column: ColumnElement[Any] | None = None
    expired: Callable[[], ColumnElement[bool]] | None = None
    statement: TextClause | None = None
    handle: Callable[[AsyncSession, int], Awaitable[int]] | None = None
    """Handles one batch of at most the given size in the given transaction and returns how
    many rows it handled (for work a single statement cannot do)."""

    async def run_batch(self, session: AsyncSession, size: int) -> int:
        """Handle one batch of at most size rows in session's transaction; how many."""
        if self.handle is not None:
            return await self.handle(session, size)
        return len((await session.execute(self.batch(size))).all())

    def batch(self, size: int) -> Executable:
        """The statement that handles one batch of at most size rows."""
        if self.statement is not None:
            return self.statement.bindparams(limit=size)
        if self.id_column is None or self.expired is None:
            raise ValueError(f"sweep job {self.name!r} has neither a statement nor a condition")
        # Small batches keep each transaction and its row locks short; rows an RPC holds
        # locked are left for the next round instead of making the sweep wait.
        expired = (
            select(self.id_column)
            .where(self.expired())
            .limit(size)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        return (
            delete(self.table)
            .where(self.id_column.in_(expired))
            .returning(self.id_column)
            .execution_options(synchronize_session=False)
        )


REFRESH_TOKENS = SweepJob(
    name="expired refresh tokens",
    lock_key=SWEEP_LOCK_KEY,
    table=RefreshToken,
    id_column=RefreshToken.id,  # type: ignore[arg-type]
    expired=lambda: RefreshToken.expires_at < func.now(),
)

# A session is deleted this long after its end. Its tokens go with it (ON DELETE CASCADE), and
# by then no transaction that found the session still running can be about to lock its row
# while holding one of those tokens (transactions are capped far below this, database.py).
SESSION_END_GRACE = timedelta(minutes=10)

SESSIONS = SweepJob(
    name="ended sessions",
    lock_key=SESSIONS_LOCK_KEY,
    table=LoginSession,
    id_column=LoginSession.id,  # type: ignore[arg-type]
    expired=lambda: (
        (LoginSession.ends_at < func.now() - SESSION_END_GRACE)
        | ~exists().where(RefreshToken.family_id == LoginSession.id)
    ),
)

ACCOUNT_TOKENS = SweepJob(
    name="used or expired account tokens",
    lock_key=ACCOUNT_TOKENS_LOCK_KEY,
    table=AccountToken,
    id_column=AccountToken.id,  # type: ignore[arg-type]
    expired=lambda: AccountToken.used_at.is_not(None) | (AccountToken.expires_at < func.now()),
)

# Delivered mails stay a day and given-up ones a month, for looking into complaints.
SENT_MAIL_RETENTION = timedelta(days=1)
GIVEN_UP_MAIL_RETENTION = timedelta(days=30)

OUTBOX = SweepJob(
    name="finished mails",
    lock_key=OUTBOX_LOCK_KEY,
    table=OutboxMail,
    id_column=OutboxMail.id,  # type: ignore[arg-type]
    expired=lambda: (
        (OutboxMail.sent_at < func.now() - SENT_MAIL_RETENTION)
        | (OutboxMail.given_up_at < func.now() - GIVEN_UP_MAIL_RETENTION)
    ),
)

LOGIN_ATTEMPTS = SweepJob(
    name="idle failed-login counters",
    lock_key=LOGIN_ATTEMPTS_LOCK_KEY,
    table=LoginAttempt,
    id_column=LoginAttempt.key,  # type: ignore[arg-type]
    expired=lambda: LoginAttempt.last_failure_at < func.now() - COUNTER_IDLE_MAX,
)

MAIL_REQUESTS = SweepJob(
    name="idle mail-request counters",
    lock_key=MAIL_REQUESTS_LOCK_KEY,
    table=MailRequest,
    id_column=MailRequest.key,  # type: ignore[arg-type]
    expired=lambda: MailRequest.last_request_at < func.now() - COUNTER_IDLE_MAX,
)

# A window that has ended counts for nothing: the next hit on its key starts a new one.
RATE_WINDOWS = SweepJob(
    name="ended rate-limit windows",
    lock_key=RATE_WINDOWS_LOCK_KEY,
    table=RateWindow,
    id_column=RateWindow.key,  # type: ignore[arg-type]
    expired=lambda: RateWindow.ends_at < func.now(),
)

# A finished challenge stays a day, for looking into a login that went wrong.
MFA_CHALLENGE_RETENTION = timedelta(days=1)

MFA_CHALLENGES = SweepJob(
    name="expired or used MFA challenges",
    lock_key=MFA_CHALLENGES_LOCK_KEY,
    table=MfaChallenge,
    id_column=MfaChallenge.id,  # type: ignore[arg-type]
    expired=lambda: (
        (MfaChallenge.expires_at < func.now() - MFA_CHALLENGE_RETENTION)
        | (MfaChallenge.used_at < func.now() - MFA_CHALLENGE_RETENTION)
    ),
)

SECURITY_EVENT_RETENTION = timedelta(days=365)

SECURITY_EVENTS = SweepJob(
    name="old security events",
    lock_key=SECURITY_EVENTS_LOCK_KEY,
    table=SecurityEvent,
    id_column=SecurityEvent.id,  # type: ignore[arg-type]
    expired=lambda: SecurityEvent.created_at < func.now() - SECURITY_EVENT_RETENTION,
)

BLOCKS = SweepJob(
    name="expired account blocks lifted",
    lock_key=BLOCKS_LOCK_KEY,
    statement=LIFT_EXPIRED_BLOCKS,
)

# One account per transaction (purge_due_account); the sweeper goes on while each batch is full.
PURGE = SweepJob(
    name="deleted accounts purged",
    lock_key=PURGE_LOCK_KEY,
    handle=purge_due_account,
)
PURGE_BATCH = 1

# The jobs that run at the expiry sweep interval (settings.refresh_token_sweep_seconds).
EXPIRY_JOBS = (
    BLOCKS,
    REFRESH_TOKENS,
    SESSIONS,
    ACCOUNT_TOKENS,
    OUTBOX,
    LOGIN_ATTEMPTS,
    MAIL_REQUESTS,
    RATE_WINDOWS,
    MFA_CHALLENGES,
    SECURITY_EVENTS,
)


def change_log_job(retention_seconds: float) -> SweepJob:
    """The job that deletes change-log entries older than retention_seconds."""
    return SweepJob(
        name="old change-log entries",
        lock_key=CHANGE_LOG_LOCK_KEY,
        table=ChangeLog,
        id_column=ChangeLog.position,  # type: ignore[arg-type]
        expired=lambda: (
            ChangeLog.recorded_at
            < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, retention_seconds)
        ),
    )


class Sweeper:
    """Periodically deletes the rows of one job."""

    def __init__(
        self,
        database: Database,
        job: SweepJob,
        *,
        interval_seconds: float,
        batch_size: int = _BATCH_SIZE,
        figures: RoundFigures | None = None,
    ) -> None:
        self._database = database
        self._job = job
        self._interval = interval_seconds
        self._batch_size = batch_size
        self._figures = figures if figures is not None else RoundFigures()
        self._background = BackgroundTask(f"sweeper: {job.name}", self._run)

    async def sweep_once(self) -> int | None:
        """Delete every expired row in batches; return how many, or None when another
        replica holds the sweep lock."""
        total = 0
        while True:
            deleted = await self._sweep_batch()
            if deleted is None:
                return None if total == 0 else total
            total += deleted
            if deleted < self._batch_size:
                return total

    async def _sweep_batch(self) -> int | None:
        """Delete up to one batch in one transaction; None when the lock is taken."""
        job = self._job
        async with self._database.transaction() as session:
            locked = await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": job.lock_key}
            )
            if not locked:
                return None
            return await job.run_batch(session, self._batch_size)

    def start(self) -> None:
        """Start sweeping in the background of the running event loop."""
        self._background.start()

    async def stop(self) -> None:
        """Stop sweeping and wait for the background task to end."""
        await self._background.stop()

    async def _run(self) -> None:
        """Sweep now and then every interval; a failed sweep is logged and retried later."""
        await repeat(
            self._round,
            interval_seconds=self._interval,
            log=log,
            failure=f"sweep of {self._job.name} failed",
            figures=self._figures,
        )

    async def _round(self) -> None:
        """One sweep, with its outcome in the log."""
        deleted = await self.sweep_once()
        if deleted:
            self._figures.handled += deleted
            log.info("%s: %d", self._job.name, deleted, extra={"count": deleted})
