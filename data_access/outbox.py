"""The mail outbox: mails queued in the transaction of the write that causes them, handed to the
one sender that holds the `mail_sender` lease, and erased once delivered or given up.

A claim hands out the due mails and holds each back (next_attempt_at) for the lease's duration,
so that when the sender dies its lease and its mails fall due together for the next one.
Delivery is at least once: a sender that loses its lease mid-send cannot record the outcome, and
its successor sends again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Interval, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.database import Database
from data_access.leases import hold_lease, take_lease
from data_access.models import OutboxMail
from data_access.records import Mail, MailClaim, MailOutcome, QueuedMail, Retry, Sent
from data_access.validation import Violations
from meshkit.errors import FailedPrecondition, NotFound
from meshkit.reasons import Reason

LEASE_NAME = "mail_sender"
SENDER_MAX = 200
ERROR_MAX = 500
CLAIM_LIMIT_MAX = 100
LEASE_MIN = timedelta(seconds=1)
LEASE_MAX = timedelta(minutes=10)


async def queue_mail(session: AsyncSession, mail: Mail) -> None:
    """Queue a (validated) mail inside the caller's transaction, due at once."""
    await session.execute(insert(OutboxMail).values(kind=mail.kind, sealed=mail.sealed))


class MailOutbox:
    """Hands queued mails to the lease holder and records what became of them."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def claim(self, sender: str, lease_duration: timedelta, limit: int) -> MailClaim:
        """Take or renew the sending lease for sender and return up to limit due mails, oldest
        first, each held back from other claims for lease_duration; no mails and holds_lease
        False while another sender holds the lease."""
        check = Violations()
        check.text("sender", sender, max_chars=SENDER_MAX)
        check.duration("lease_duration", lease_duration, LEASE_MIN, LEASE_MAX)
        check.in_range("limit", limit, 1, CLAIM_LIMIT_MAX)
        check.raise_if_any()
        async with self._database.transaction() as session:
            if not await take_lease(session, LEASE_NAME, sender, lease_duration):
                return MailClaim(holds_lease=False)
            # Only the lease holder gets here; SKIP LOCKED merely keeps it from waiting for a
            # mail whose outcome it is still recording.
            due = (
                select(OutboxMail.id)
                .where(
                    OutboxMail.next_attempt_at <= func.now(),
                    OutboxMail.sent_at.is_(None),
                    OutboxMail.given_up_at.is_(None),
                )
                .order_by(OutboxMail.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            claimed = await session.execute(
                update(OutboxMail)
                .where(OutboxMail.id.in_(due))
                .values(
                    next_attempt_at=func.now()
                    + bindparam("lease", lease_duration, type_=Interval()),
                    claimed_by=sender,
                )
                .returning(
                    OutboxMail.id,
                    OutboxMail.kind,
                    OutboxMail.sealed,
                    OutboxMail.attempts,
                    OutboxMail.created_at,
                )
                .execution_options(synchronize_session=False)
            )
            mails = sorted(
                (
                    QueuedMail(
                        id=row.id,
                        mail=Mail(kind=row.kind, sealed=row.sealed or b""),
                        attempts=row.attempts,
                        created_at=row.created_at,
                    )
                    for row in claimed
                ),
                key=lambda mail: mail.id,
            )
        return MailClaim(holds_lease=True, mails=tuple(mails))

    async def complete(self, sender: str, mail_id: int, outcome: MailOutcome, error: str) -> None:
        """Record the outcome of a mail sender claimed: sent (content erased), retry at a time
        (attempts + 1) or given up (attempts + 1, content erased). FailedPrecondition
        (MAIL_NOT_CLAIMED) unless sender holds the lease and claimed the mail; NotFound
        (MAIL_NOT_FOUND) for an unknown or finished mail."""
        check = Violations()
        check.text("sender", sender, max_chars=SENDER_MAX)
        check.positive("id", mail_id)
        check.text("error", error, max_chars=ERROR_MAX, required=False)
        check.raise_if_any()
        async with self._database.transaction() as session:
            # Held until commit: a new holder cannot take the lease over mid-way.
            if not await hold_lease(session, LEASE_NAME, sender):
                raise _not_claimed()
            found = (
                await session.execute(
                    select(OutboxMail.claimed_by)
                    .where(
                        OutboxMail.id == mail_id,
                        OutboxMail.sent_at.is_(None),
                        OutboxMail.given_up_at.is_(None),
                    )
                    .with_for_update()
                )
            ).one_or_none()
            if found is None:
                raise NotFound(message="mail not found or finished", reason=Reason.MAIL_NOT_FOUND)
            if found.claimed_by != sender:
                raise _not_claimed()
            await session.execute(
                update(OutboxMail)
                .where(OutboxMail.id == mail_id)
                .values(**_outcome_values(outcome, error))
                .execution_options(synchronize_session=False)
            )


def _outcome_values(outcome: MailOutcome, error: str) -> dict[str, Any]:
    """The columns an outcome sets (the last one: given up)."""
    if isinstance(outcome, Sent):
        return {"sent_at": func.now(), "sealed": None}
    failed = {"attempts": OutboxMail.attempts + 1, "last_error": error}
    if isinstance(outcome, Retry):
        # No longer claimed: only the next claim may record the next attempt.
        return {**failed, "next_attempt_at": outcome.at, "claimed_by": None}
    return {**failed, "given_up_at": func.now(), "sealed": None}


def _not_claimed() -> FailedPrecondition:
    """The answer to a sender recording a mail it does not hold."""
    return FailedPrecondition(
        message="the sender does not hold the mail sending lease or this mail",
        reason=Reason.MAIL_NOT_CLAIMED,
    )
