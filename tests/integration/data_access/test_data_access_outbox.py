"""MailOutboxService against the real database (the private one, emptied before each test): the
sending lease, claims, and what becomes of each mail."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from data_access.database import Database
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from meshkit.timestamps import to_timestamp
from tests.helpers import Metadata, failure_of

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=5)
NOT_CLAIMED = (grpc.StatusCode.FAILED_PRECONDITION, "MAIL_NOT_CLAIMED")
MAIL_NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "MAIL_NOT_FOUND")


@dataclass
class Outbox:
    """The private data_access's outbox, as auth_svc's senders use it."""

    store: pb_grpc.MailOutboxServiceAsyncStub
    accounts: pb_grpc.AccountStoreServiceAsyncStub
    metadata: Metadata
    database: Database

    async def queue(self, count: int = 1) -> list[bytes]:
        """Queue mails the way a write does (with a new account); return their contents."""
        contents = []
        for _ in range(count):
            unique = uuid.uuid4().hex[:16]
            sealed = secrets.token_bytes(32)
            await self.accounts.CreateAccount(
                pb.CreateAccountRequest(
                    email=f"{unique}@example.com",
                    username=f"u_{unique}",
                    password_hash="h",
                    mail=pb.SealedMail(kind="verify_email", sealed=sealed),
                ),
                metadata=self.metadata,
            )
            contents.append(sealed)
        return contents

    async def claim(
        self, sender: str, lease: timedelta = LEASE, limit: int = 100
    ) -> pb.ClaimMailResponse:
        """Claim as sender."""
        request = pb.ClaimMailRequest(sender=sender, limit=limit)
        request.lease_duration.FromTimedelta(lease)
        return await self.store.ClaimMail(request, metadata=self.metadata)

    async def complete(self, sender: str, mail_id: int, error: str = "", **outcome: Any) -> None:
        """Record an outcome (sent=True, retry_time=..., given_up=True)."""
        await self.store.CompleteMail(
            pb.CompleteMailRequest(sender=sender, id=mail_id, error=error, **outcome),
            metadata=self.metadata,
        )

    async def row(self, mail_id: int) -> Any:
        """The stored row of a mail."""
        async with self.database.transaction() as session:
            found = await session.execute(
                text("SELECT * FROM outbox WHERE id = :id"), {"id": mail_id}
            )
            return found.one()


@pytest.fixture
async def outbox(
    private_outbox: pb_grpc.MailOutboxServiceAsyncStub,
    private_accounts: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    private_database: Database,
) -> Outbox:
    """The private outbox, without mails or lease."""
    async with private_database.transaction() as session:
        await session.execute(text("DELETE FROM outbox"))
        await session.execute(text("DELETE FROM leases"))
    return Outbox(private_outbox, private_accounts, as_auth, private_database)


async def test_one_sender_holds_the_lease_and_gets_the_due_mails_oldest_first(
    outbox: Outbox,
) -> None:
    contents = await outbox.queue(3)

    first = await outbox.claim("sender-a")
    other = await outbox.claim("sender-b")
    again = await outbox.claim("sender-a")

    assert first.holds_lease
    assert [mail.mail.sealed for mail in first.mails] == contents
    assert {mail.mail.kind for mail in first.mails} == {"verify_email"}
    assert [mail.attempts for mail in first.mails] == [0, 0, 0]
    ids = [mail.id for mail in first.mails]
    assert ids == sorted(ids)
    assert all(mail.create_time.seconds > 0 for mail in first.mails)
    assert (other.holds_lease, list(other.mails)) == (False, [])
    # The renewal keeps the lease; the claimed mails are held back for the lease's duration.
    assert (again.holds_lease, list(again.mails)) == (True, [])


async def test_a_claim_takes_at_most_limit_mails(outbox: Outbox) -> None:
    contents = await outbox.queue(3)

    first = await outbox.claim("sender-a", limit=2)
    second = await outbox.claim("sender-a", limit=2)

    assert [mail.mail.sealed for mail in first.mails] == contents[:2]
    assert [mail.mail.sealed for mail in second.mails] == contents[2:]


async def test_of_many_senders_claiming_at_once_one_gets_the_lease_and_the_mails(
    outbox: Outbox,
) -> None:
    contents = await outbox.queue(2)

    claims = await asyncio.gather(*(outbox.claim(f"sender-{i}") for i in range(10)))

    holders = [claim for claim in claims if claim.holds_lease]
    assert len(holders) == 1
    assert [mail.mail.sealed for mail in holders[0].mails] == contents
    assert sum(len(claim.mails) for claim in claims) == 2


async def test_an_expired_lease_passes_with_its_mails_to_the_next_sender(outbox: Outbox) -> None:
    [content] = await outbox.queue()
    short = timedelta(seconds=1)
    [claimed] = (await outbox.claim("sender-a", short)).mails
    assert not (await outbox.claim("sender-b", short)).holds_lease

    await asyncio.sleep(1.2)
    taken = await outbox.claim("sender-b")

    assert taken.holds_lease
    assert [(mail.id, mail.mail.sealed) for mail in taken.mails] == [(claimed.id, content)]
    # The sender that lost the lease cannot record its outcome; the new holder can.
    late = await failure_of(outbox.complete("sender-a", claimed.id, sent=True))
    assert (late.code, late.reason) == NOT_CLAIMED
    await outbox.complete("sender-b", claimed.id, sent=True)


async def test_a_sent_mail_is_erased_and_finished(outbox: Outbox) -> None:
    await outbox.queue()
    [mail] = (await outbox.claim("sender-a")).mails

    await outbox.complete("sender-a", mail.id, sent=True)

    row = await outbox.row(mail.id)
    assert row.sealed is None
    assert row.sent_at is not None
    assert row.attempts == 0
    again = await failure_of(outbox.complete("sender-a", mail.id, sent=True))
    assert (again.code, again.reason) == MAIL_NOT_FOUND


async def test_a_failed_attempt_is_retried_at_its_time_then_given_up(outbox: Outbox) -> None:
    [content] = await outbox.queue()
    [mail] = (await outbox.claim("sender-a")).mails
    retry_at = datetime.now(UTC) + timedelta(seconds=1)

    await outbox.complete(
        "sender-a", mail.id, error="421 try again later", retry_time=to_timestamp(retry_at)
    )

    row = await outbox.row(mail.id)
    assert (row.attempts, row.last_error, row.sealed) == (1, "421 try again later", content)
    assert abs(row.next_attempt_at - retry_at) < timedelta(milliseconds=1)
    assert list((await outbox.claim("sender-a")).mails) == []
    await asyncio.sleep(1.2)
    [retried] = (await outbox.claim("sender-a")).mails
    assert (retried.id, retried.attempts, retried.mail.sealed) == (mail.id, 1, content)

    await outbox.complete("sender-a", mail.id, error="550 no such user", given_up=True)

    row = await outbox.row(mail.id)
    assert (row.attempts, row.last_error, row.sealed) == (2, "550 no such user", None)
    assert row.given_up_at is not None
    after = await failure_of(outbox.complete("sender-a", mail.id, sent=True))
    assert (after.code, after.reason) == MAIL_NOT_FOUND
    assert list((await outbox.claim("sender-a")).mails) == []


async def test_a_mail_the_sender_did_not_claim_cannot_be_completed(outbox: Outbox) -> None:
    await outbox.queue()
    [mail] = (await outbox.claim("sender-a")).mails
    await outbox.complete(
        "sender-a", mail.id, retry_time=to_timestamp(datetime.now(UTC) + timedelta(hours=1))
    )

    # Put back for a later attempt, it is nobody's until claimed again.
    unclaimed = await failure_of(outbox.complete("sender-a", mail.id, sent=True))
    assert (unclaimed.code, unclaimed.reason) == NOT_CLAIMED
    unknown = await failure_of(outbox.complete("sender-a", 10**12, sent=True))
    assert (unknown.code, unknown.reason) == MAIL_NOT_FOUND
    stranger = await failure_of(outbox.complete("sender-b", mail.id, sent=True))
    assert (stranger.code, stranger.reason) == NOT_CLAIMED


def _claim(lease: timedelta | None = LEASE, **fields: Any) -> pb.ClaimMailRequest:
    request = pb.ClaimMailRequest(sender="sender-a", limit=10)
    for name, value in fields.items():
        setattr(request, name, value)
    if lease is not None:
        request.lease_duration.FromTimedelta(lease)
    return request


@pytest.mark.parametrize(
    ("request_", "bad_field"),
    [
        (_claim(limit=0), "limit"),
        (_claim(limit=101), "limit"),
        (_claim(lease=None), "lease_duration"),
        (_claim(lease=timedelta(milliseconds=500)), "lease_duration"),
        (_claim(lease=timedelta(minutes=10, seconds=1)), "lease_duration"),
        (_claim(sender=""), "sender"),
        (_claim(sender="s" * 201), "sender"),
    ],
    ids=["no-mail", "too-many", "no-lease", "short-lease", "long-lease", "no-sender", "long"],
)
async def test_unusable_claims_are_invalid_argument(
    outbox: Outbox, request_: pb.ClaimMailRequest, bad_field: str
) -> None:
    failure = await failure_of(outbox.store.ClaimMail(request_, metadata=outbox.metadata))

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [bad_field])


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({}, "outcome"),
        ({"sent": False}, "outcome"),
        ({"given_up": True, "error": "e" * 501}, "error"),
        ({"given_up": True, "id": 0}, "id"),
        ({"sent": True, "sender": ""}, "sender"),
    ],
    ids=["no-outcome", "not-sent", "long-error", "no-id", "no-sender"],
)
async def test_unusable_completions_are_invalid_argument(
    outbox: Outbox, fields: dict[str, Any], bad_field: str
) -> None:
    request = pb.CompleteMailRequest(**{"sender": "sender-a", "id": 1, **fields})

    failure = await failure_of(outbox.store.CompleteMail(request, metadata=outbox.metadata))

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [bad_field])


async def test_a_sign_up_with_a_taken_email_queues_one_notice_per_cooldown(
    outbox: Outbox,
) -> None:
    tag = uuid.uuid4().hex[:12]
    email, kind = f"{tag}@example.com", f"signup_attempt_{tag}"
    await outbox.accounts.CreateAccount(
        pb.CreateAccountRequest(email=email, username=f"u_{tag}", password_hash="h"),
        metadata=outbox.metadata,
    )

    def attempt(username: str) -> pb.CreateAccountRequest:
        request = pb.CreateAccountRequest(
            email=email.upper(),
            username=username,
            password_hash="h",
            mail=pb.SealedMail(kind="verify_email", sealed=b"never queued"),
            mail_if_email_taken=pb.SealedMail(kind=kind, sealed=secrets.token_bytes(16)),
        )
        request.taken_mail_cooldown.FromTimedelta(timedelta(seconds=1))
        return request

    async def notices() -> int:
        async with outbox.database.transaction() as session:
            found = await session.scalar(
                text("SELECT count(*) FROM outbox WHERE kind = :kind"), {"kind": kind}
            )
        return int(found or 0)

    for username in (f"a_{tag}", f"b_{tag}"):
        taken = await failure_of(
            outbox.accounts.CreateAccount(attempt(username), metadata=outbox.metadata)
        )
        assert (taken.code, taken.reason) == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    # The second attempt came within the cooldown.
    assert await notices() == 1
    await asyncio.sleep(1.2)
    await failure_of(outbox.accounts.CreateAccount(attempt(f"c_{tag}"), metadata=outbox.metadata))
    assert await notices() == 2
    # With the username taken too, that is the answer, and nothing is queued.
    both = await failure_of(
        outbox.accounts.CreateAccount(attempt(f"u_{tag}"), metadata=outbox.metadata)
    )
    assert both.reason == "USERNAME_TAKEN"
    assert await notices() == 2
