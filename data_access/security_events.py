"""The security log of each account: what happened to it (logins, password and MFA changes, ended
sessions), from which device, newest first, a page at a time.

Entries are only ever appended: a trigger refuses every UPDATE (migration 0005), and rows go only
with their account or after SECURITY_EVENT_RETENTION (sweeper.py). A change that an entry
describes (turning MFA on, a re-authentication) appends it in the change's own transaction
(append_event); other entries come on their own (SecurityEventStore.record), optionally with a
mail, which for a login may be asked only when the device is new to the account.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.database import Database, violated_constraint
from data_access.models import SECURITY_EVENT_KINDS, SecurityEvent
from data_access.outbox import queue_mail
from data_access.records import (
    Device,
    Mail,
    NewSecurityEvent,
    RecordedEvent,
    SecurityEventPage,
    SecurityEventRecord,
)
from data_access.validation import Violations, parse_id
from meshkit.reasons import Reason

DETAIL_MAX = 200
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
LOGIN_SUCCEEDED = "login_succeeded"
_ACCOUNT_CONSTRAINT = "fk_security_events_account_id_accounts"
# First key of the two-key advisory locks that serialise new-device checks per account ("secl").
_NEW_DEVICE_LOCK_SPACE = 0x7365636C


@dataclass(frozen=True)
class CheckedEvent:
    """A security event whose fields passed checked_event, ready to store."""

    kind: str
    device: Device
    session_id: uuid.UUID | None
    detail: str


def checked_event(
    check: Violations, event: NewSecurityEvent, *, field: str = "event"
) -> CheckedEvent:
    """Return event ready to store (its device in canonical form), recording its problems in
    check under field: an unnamed kind, a detail longer than DETAIL_MAX, a device sessions
    could not store, a malformed session id."""
    if event.kind not in SECURITY_EVENT_KINDS:
        check.add(f"{field}.kind", "must be specified")
    detail = check.text(f"{field}.detail", event.detail, max_chars=DETAIL_MAX, required=False)
    device = check.device(f"{field}.device", event.device)
    session_id = check.optional_id(f"{field}.session_id", event.session_id)
    return CheckedEvent(kind=event.kind, device=device, session_id=session_id, detail=detail)


def check_event_account(
    check: Violations, event: NewSecurityEvent, account_id: str, *, field: str = "event"
) -> None:
    """Record an event that names another account than the request it comes with (it may name
    none: it is the request's)."""
    if not event.account_id:
        return
    named = _as_id(event.account_id)
    if named is None or named != _as_id(account_id):
        check.add(f"{field}.account_id", "must be empty or the request's account_id")


async def append_event(session: AsyncSession, account_id: uuid.UUID, event: CheckedEvent) -> None:
    """Append an event to an account's log inside the caller's transaction."""
    await session.execute(
        insert(SecurityEvent).values(
            account_id=account_id,
            kind=event.kind,
            user_agent=event.device.user_agent,
            client_ip=event.device.client_ip,
            session_id=event.session_id,
            detail=event.detail,
        )
    )


class SecurityEventStore:
    """Appends entries to the accounts' security logs and lists them."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def record(
        self, event: NewSecurityEvent, *, mail: Mail | None = None, only_new_device: bool = False
    ) -> RecordedEvent:
        """Append event to its account's log and queue mail (when given) in one transaction;
        with only_new_device, mail only when the account had an earlier successful login and
        none from this user agent. Nothing is stored for an unknown (or malformed) account id:
        recorded is False."""
        check = Violations()
        checked = checked_event(check, event)
        mail = check.mail("mail", mail)
        check.raise_if_any()
        try:
            account_id = uuid.UUID(event.account_id)
        except ValueError:
            return RecordedEvent(recorded=False)
        try:
            async with self._database.transaction() as session:
                mailed = mail is not None
                if mail is not None and only_new_device:
                    mailed = await _new_device(session, account_id, checked.device.user_agent)
                await append_event(session, account_id, checked)
                if mail is not None and mailed:
                    await queue_mail(session, mail)
        except IntegrityError as exc:
            # The account does not exist (or went while this ran): nothing was stored.
            if violated_constraint(exc) == _ACCOUNT_CONSTRAINT:
                return RecordedEvent(recorded=False)
            raise
        return RecordedEvent(recorded=True, mailed=mailed)

    async def page(self, account_id: str, page_size: int, before_id: int) -> SecurityEventPage:
        """Return up to page_size (0: PAGE_SIZE_DEFAULT) events of an account older than
        before_id (0: from the newest), newest first, and whether older ones exist; NotFound
        (ACCOUNT_NOT_FOUND) for a malformed account id, no events for an unknown one."""
        check = Violations()
        size = page_size or PAGE_SIZE_DEFAULT
        check.in_range("page_size", size, 1, PAGE_SIZE_MAX)
        if before_id < 0:
            check.add("before_id", "must not be negative")
        check.raise_if_any()
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        # One more than asked tells whether older ones exist; ids only grow, so a page read
        # while new events arrive never repeats nor skips an older one.
        query = (
            select(
                SecurityEvent.id,
                SecurityEvent.kind,
                SecurityEvent.created_at,
                SecurityEvent.user_agent,
                SecurityEvent.client_ip,
                SecurityEvent.session_id,
                SecurityEvent.detail,
            )
            .where(SecurityEvent.account_id == owner)
            .order_by(SecurityEvent.id.desc())
            .limit(size + 1)
        )
        if before_id:
            query = query.where(SecurityEvent.id < before_id)
        async with self._database.read() as connection:
            rows = (await connection.execute(query)).all()
        events = tuple(
            SecurityEventRecord(
                id=row.id,
                kind=row.kind,
                created_at=row.created_at,
                device=Device(user_agent=row.user_agent, client_ip=row.client_ip),
                session_id=row.session_id,
                detail=row.detail,
            )
            for row in rows[:size]
        )
        return SecurityEventPage(events=events, more=len(rows) > size)


async def _new_device(session: AsyncSession, account_id: uuid.UUID, user_agent: str) -> bool:
    """Whether a login from user_agent is one to tell the account about: it had an earlier
    successful login, and none from this user agent. Checks of one account take turns until
    their transactions end, so two logins from one new device mail once."""
    await session.execute(
        select(func.pg_advisory_xact_lock(_NEW_DEVICE_LOCK_SPACE, func.hashtext(str(account_id))))
    )
    earlier = (
        await session.execute(
            select(
                func.count().label("logins"),
                func.count().filter(SecurityEvent.user_agent == user_agent).label("same"),
            ).where(SecurityEvent.account_id == account_id, SecurityEvent.kind == LOGIN_SUCCEEDED)
        )
    ).one()
    return bool(earlier.logins) and not earlier.same


def _as_id(value: str) -> uuid.UUID | None:
    """Return value as a UUID, or None when it is not one."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
