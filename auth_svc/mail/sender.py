"""The background loop that delivers queued mail: it claims due mails under the sending lease
(one sender across the replicas), opens each, hands it to the SMTP server and records the
outcome, retrying temporary failures with exponential back-off and jitter.

Delivery is at least once: a mail delivered just before its outcome could be recorded (the
process died, data_access was unreachable, the lease passed on) goes out again later.
Log lines name the mail by id and kind; recipient, content and links never reach a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Protocol

from auth_svc.mail.outbox import GiveUp, Outbox, Outcome, QueuedMail, Retry, Sent
from auth_svc.mail.sealing import MailSealError
from auth_svc.mail.smtp import DeliveryError
from meshkit.background import BackgroundTask
from meshkit.errors import DomainError, FailedPrecondition, NotFound

log = logging.getLogger("auth_svc.mail")


class MailTransport(Protocol):
    """Hands a mail to an SMTP server."""

    async def deliver(self, message: EmailMessage) -> None:
        """Deliver message; DeliveryError when it failed."""
        ...


class MailOpener(Protocol):
    """Opens a sealed mail."""

    def open(self, sealed: bytes) -> EmailMessage:
        """Return the mail sealed in sealed; MailSealError when it cannot be opened."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed mail again: first_delay doubling per failure up to max_delay, each
    wait shortened by a random part of up to `jitter` (so retries of many mails spread out),
    and give up once max_attempts attempts have failed."""

    first_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(hours=1)
    jitter: float = 0.25
    max_attempts: int = 12

    def delay(self, failures: int, draw: float) -> timedelta:
        """The wait after the failures-th failure (1-based); draw is uniform in [0, 1)."""
        base = min(self.max_delay, self.first_delay * 2.0 ** min(failures - 1, 32))
        return base * (1 - self.jitter * draw)


def new_sender_id() -> str:
    """An identity for this process's sender, unique across replicas and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class MailSender:
    """Delivers the outbox's due mails while this process holds the sending lease."""

    def __init__(
        self,
        outbox: Outbox,
        opener: MailOpener,
        transport: MailTransport,
        *,
        sender_id: str,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        batch_size: int = 10,
        retry: RetryPolicy | None = None,
        stop_grace_seconds: float = 5.0,
    ) -> None:
        if not 1 <= batch_size <= 100:
            raise ValueError("batch_size must be 1 to 100")
        self._outbox = outbox
        self._opener = opener
        self._transport = transport
        self.sender_id = sender_id
        self._lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._retry = retry or RetryPolicy()
        self._stop_grace_seconds = stop_grace_seconds
        self._random = random.SystemRandom()
        self._wake = asyncio.Event()
        self._stopping = False
        self._background = BackgroundTask("mail sender", self._run)
        self._holds_lease = False
        self._failing = False

    def start(self) -> None:
        """Start sending in the background of the running event loop."""
        self._stopping = False
        self._background.start()

    async def stop(self) -> None:
        """Stop sending: the mail being delivered gets a few seconds to finish (so that its
        outcome is recorded), then the loop is cancelled."""
        self._stopping = True
        self._wake.set()
        await self._background.stop(grace_seconds=self._stop_grace_seconds)

    def wake(self) -> None:
        """Look for due mail now rather than at the next poll (after this process queued one)."""
        self._wake.set()

    async def send_due(self) -> int:
        """Claim the due mails (one batch) and deliver them; return how many were claimed (0
        while another sender holds the lease). The outbox's errors propagate."""
        loop = asyncio.get_running_loop()
        # The claimed mails stay ours for the lease; stop starting deliveries well before it
        # ends, so that no other sender can claim a mail this one is still delivering.
        deadline = loop.time() + self._lease_seconds / 2
        claim = await self._outbox.claim(
            self.sender_id, lease_seconds=self._lease_seconds, limit=self._batch_size
        )
        self._note_lease(claim.holds_lease)
        unreachable: DeliveryError | None = None
        for mail in claim.mails:
            if self._stopping or loop.time() >= deadline:
                # Left as claimed: due again once the claim's hold runs out.
                break
            if unreachable is None:
                outcome, failure = await self._attempt(mail, deadline)
                if failure is not None and failure.server_fault:
                    unreachable = failure
            else:
                # The server just failed as a whole: the rest of the batch waits as if tried,
                # rather than each taking its turn at the same timeout.
                outcome = self._after_failure(mail, unreachable)
            if not await self._complete(mail, outcome):
                break
        return len(claim.mails)

    def _note_lease(self, holds: bool) -> None:
        """Log when this process starts or stops being the one that sends."""
        if holds != self._holds_lease:
            self._holds_lease = holds
            if holds:
                log.info("mail sender holds the sending lease", extra={"sender": self.sender_id})
            else:
                log.info("another mail sender holds the sending lease")

    async def _attempt(
        self, mail: QueuedMail, deadline: float
    ) -> tuple[Outcome, DeliveryError | None]:
        """Open and deliver one mail before deadline (loop time); return what happened and,
        when delivery failed, why."""
        try:
            message = self._opener.open(mail.mail.sealed)
        except MailSealError as exc:
            return GiveUp(str(exc)), None
        try:
            async with asyncio.timeout_at(deadline):
                await self._transport.deliver(message)
        except DeliveryError as exc:
            failure = exc
        except TimeoutError:
            failure = DeliveryError("delivery outlasted the claim", server_fault=True)
        else:
            return Sent(), None
        return self._after_failure(mail, failure), failure

    def _after_failure(self, mail: QueuedMail, failure: DeliveryError) -> Outcome:
        """The outcome of a failed attempt: given up when permanent or the last allowed one,
        else a retry after the back-off for this many failures."""
        failures = mail.attempts + 1
        if failure.permanent:
            return GiveUp(failure.reason)
        if failures >= self._retry.max_attempts:
            return GiveUp(f"{failure.reason}; gave up after {failures} attempts")
        wait = self._retry.delay(failures, self._random.random())
        return Retry(datetime.now(UTC) + wait, failure.reason)

    async def _complete(self, mail: QueuedMail, outcome: Outcome) -> bool:
        """Record an outcome and log it; return whether to go on with the batch."""
        fields = {"mail_id": mail.id, "kind": mail.mail.kind, "attempt": mail.attempts + 1}
        try:
            await self._outbox.complete(self.sender_id, mail.id, outcome)
        except FailedPrecondition:
            log.warning("mail sender lost the sending lease mid-batch", extra=fields)
            self._holds_lease = False
            return False
        except NotFound:
            log.warning("mail was already finished by another sender", extra=fields)
            return True
        match outcome:
            case Sent():
                log.info("mail sent", extra=fields)
            case Retry(at=at, error=error):
                log.warning(
                    "mail delivery failed, will retry",
                    extra={**fields, "error": error, "retry_at": at.isoformat()},
                )
            case GiveUp(error=error):
                log.error("mail given up", extra={**fields, "error": error})
        return True

    async def _run(self) -> None:
        """Send due mail until stopped: again at once after a full batch, else after a wake()
        or the poll interval. A failing round (data_access down) is logged once, then retried."""
        while not self._stopping:
            self._wake.clear()
            claimed = 0
            try:
                claimed = await self.send_due()
            except DomainError as exc:  # data_access down or refusing: try again next round
                if not self._failing:
                    log.warning("mail sender cannot use the outbox", extra={"error": str(exc)})
                self._failing = True
            except Exception:  # anything else, once per spell, with its traceback
                if not self._failing:
                    log.exception("mail sending round failed")
                self._failing = True
            else:
                if self._failing:
                    log.info("mail sender reaches the outbox again")
                self._failing = False
            if claimed >= self._batch_size:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wake.wait()
