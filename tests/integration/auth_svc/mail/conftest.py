"""Fixtures for the mail sender against real SMTP servers on loopback.

- `outbox` -> FakeOutbox: an in-memory outbox with the lease and claim rules of data_access's
  MailOutboxService (the boundary the sender talks to), to queue mails and read outcomes.
- `mailbox` -> Mailbox: the development mailbox (tools.mailbox) on a free loopback port, storing
  into a temporary folder; `.port`, `.folder`, `.mails()` (parsed, oldest first).
- `renderer`, `sealer`: a MailRenderer and a MailSealer as auth_svc builds them.
- `free_port()`: a loopback port nothing listens on.
- `smtp_server(handler, **smtp_options)`: an aiosmtpd server with that handler on a free port.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from auth_svc.accounts import SealedMail
from auth_svc.mail.messages import MailRenderer
from auth_svc.mail.outbox import Claim, GiveUp, Outcome, QueuedMail, Retry, Sent
from auth_svc.mail.sealing import MailSealer
from meshkit.errors import FailedPrecondition, NotFound
from meshkit.reasons import Reason
from tools.mailbox import StoredMail, open_mailbox, read_mail, stored_mails

PEPPER = secrets.token_urlsafe(32)


@dataclass
class Row:
    """One outbox row, as data_access keeps it."""

    id: int
    kind: str
    sealed: bytes | None
    next_attempt_at: datetime
    created_at: datetime
    attempts: int = 0
    claimed_by: str | None = None
    sent_at: datetime | None = None
    given_up_at: datetime | None = None
    last_error: str = ""

    @property
    def finished(self) -> bool:
        return self.sent_at is not None or self.given_up_at is not None


@dataclass
class FakeOutbox:
    """The outbox's contract in memory: lease upserted when free, expired or the caller's; due
    rows oldest first, held for the lease; outcomes only from the lease holder."""

    rows: dict[int, Row] = field(default_factory=dict)
    lease_holder: str | None = None
    lease_expires: datetime = field(default_factory=lambda: datetime.now(UTC))
    claims: int = 0

    def queue(self, mail: SealedMail, *, attempts: int = 0) -> int:
        now = datetime.now(UTC)
        row_id = len(self.rows) + 1
        self.rows[row_id] = Row(row_id, mail.kind, mail.sealed, now, now, attempts=attempts)
        return row_id

    def make_due(self) -> None:
        """Bring every unfinished mail's next attempt forward to now."""
        for row in self.rows.values():
            if not row.finished:
                row.next_attempt_at = datetime.now(UTC)

    def hand_lease_to(self, holder: str, seconds: float = 30.0) -> None:
        self.lease_holder = holder
        self.lease_expires = datetime.now(UTC) + timedelta(seconds=seconds)

    async def claim(self, sender: str, *, lease_seconds: float, limit: int) -> Claim:
        assert 1 <= limit <= 100
        self.claims += 1
        now = datetime.now(UTC)
        if self.lease_holder not in (None, sender) and self.lease_expires > now:
            return Claim(holds_lease=False, mails=[])
        self.hand_lease_to(sender, lease_seconds)
        due = sorted(
            (r for r in self.rows.values() if not r.finished and r.next_attempt_at <= now),
            key=lambda r: (r.created_at, r.id),
        )[:limit]
        for row in due:
            row.next_attempt_at = now + timedelta(seconds=lease_seconds)
            row.claimed_by = sender
        return Claim(
            holds_lease=True,
            mails=[
                QueuedMail(r.id, SealedMail(r.kind, r.sealed or b""), r.attempts, r.created_at)
                for r in due
            ],
        )

    async def complete(self, sender: str, mail_id: int, outcome: Outcome) -> None:
        now = datetime.now(UTC)
        if self.lease_holder != sender or self.lease_expires <= now:
            raise FailedPrecondition("sender does not hold the lease", Reason.MAIL_NOT_CLAIMED)
        row = self.rows.get(mail_id)
        if row is None or row.finished:
            raise NotFound("no such unfinished mail", Reason.MAIL_NOT_FOUND)
        match outcome:
            case Sent():
                row.sent_at, row.sealed = now, None
            case Retry(at=at, error=error):
                row.attempts += 1
                row.next_attempt_at, row.last_error = at, error
            case GiveUp(error=error):
                row.attempts += 1
                row.given_up_at, row.sealed, row.last_error = now, None, error


@pytest.fixture
def outbox() -> FakeOutbox:
    return FakeOutbox()


@pytest.fixture
def renderer() -> MailRenderer:
    return MailRenderer(public_url="http://localhost:8080", sender="meshgram <no-reply@localhost>")


@pytest.fixture
def sealer() -> MailSealer:
    return MailSealer(PEPPER)


def free_port() -> int:
    """A loopback port that nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Mailbox:
    """The development mailbox running for one test."""

    port: int
    folder: Path

    def mails(self) -> list[StoredMail]:
        return [read_mail(path) for path in stored_mails(self.folder)]


@asynccontextmanager
async def running_mailbox(folder: Path, port: int = 0) -> AsyncIterator[Mailbox]:
    """tools.mailbox serving on 127.0.0.1:port (0: a free one) until the block ends."""
    server = await open_mailbox(folder, port)
    try:
        yield Mailbox(server.sockets[0].getsockname()[1], folder)
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def mailbox(tmp_path: Path) -> AsyncIterator[Mailbox]:
    async with running_mailbox(tmp_path / "mail") as running:
        yield running


SmtpServerFactory = Callable[..., AbstractAsyncContextManager[int]]


@asynccontextmanager
async def _smtp_server(handler: Any, **options: Any) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    factory = functools.partial(SMTP, handler, hostname="test.localhost", loop=loop, **options)
    server = await loop.create_server(factory, host="127.0.0.1", port=0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def smtp_server() -> SmtpServerFactory:
    """`async with smtp_server(handler, **options) as port:` an aiosmtpd server on loopback."""
    return _smtp_server
