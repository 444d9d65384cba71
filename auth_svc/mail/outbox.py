"""What the mail sender needs of the outbox that data_access keeps: claim due mails under the
sending lease, then record each one's outcome. Free of grpc: outbox_client implements it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from auth_svc.accounts import SealedMail

ERROR_MAX_CHARS = 500
"""The longest failure description the outbox keeps."""


@dataclass(frozen=True)
class QueuedMail:
    """A claimed mail: its outbox id, its sealed content and how many attempts failed before."""

    id: int
    mail: SealedMail
    attempts: int
    queued_at: datetime


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: whether this sender holds the lease, and the mails now its own."""

    holds_lease: bool
    mails: Sequence[QueuedMail]


@dataclass(frozen=True)
class Sent:
    """The SMTP server took the mail."""


@dataclass(frozen=True)
class Retry:
    """Delivery failed for now; try again at `at`. error says why, never what the mail holds."""

    at: datetime
    error: str


@dataclass(frozen=True)
class GiveUp:
    """Delivery failed for good. error says why, never what the mail holds."""

    error: str


Outcome = Sent | Retry | GiveUp


class Outbox(Protocol):
    """Queued mail, handed to one sender at a time (the holder of the sending lease)."""

    async def claim(self, sender: str, *, lease_seconds: float, limit: int) -> Claim:
        """Take or renew the lease for sender and return up to limit due mails, each held
        back from other claims for lease_seconds; no mails while another sender holds it."""
        ...

    async def complete(self, sender: str, mail_id: int, outcome: Outcome) -> None:
        """Record the outcome of a claimed mail. FailedPrecondition (MAIL_NOT_CLAIMED) when
        sender no longer holds the lease; NotFound (MAIL_NOT_FOUND) for an unknown or already
        finished mail."""
        ...
