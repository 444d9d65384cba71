"""Changing an account's email, end to end through real stubs: auth_svc -> data_access ->
PostgreSQL, with real mail through the development SMTP server on loopback."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from meshgram.auth.v1 import auth_pb2
from tests.helpers import failure_of
from tests.integration.auth_svc.test_account_flows import (
    Person,
    bearer,
    login,
    mails_to,
    register,
    token_of,
)
from tools.mailbox import read_mail, stored_mails

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    from meshgram.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub as Stub

VERIFY_PAGE = "/account/verify-email"


def new_address() -> str:
    """An address no account has."""
    return f"moved.{uuid.uuid4().hex[:10]}@example.com"


async def change(stub: Stub, pair: auth_pb2.TokenPair, new_email: str) -> None:
    """Ask to move the pair's account to new_email."""
    await stub.ChangeEmail(auth_pb2.ChangeEmailRequest(new_email=new_email), metadata=bearer(pair))


async def test_the_new_address_confirms_the_change_and_the_old_one_is_told(
    auth_stub: Stub, mail_dir: Path
) -> None:
    person = await register(auth_stub)
    pair = await login(auth_stub, person)
    moved = new_address()
    await change(auth_stub, pair, moved.upper())

    [link_mail] = await mails_to(mail_dir, moved, 1)
    assert "new email address" in str(link_mail.message["Subject"]).lower()
    old_mails = await mails_to(mail_dir, person.email, 2)  # sign-up's verification, the notice
    notice = old_mails[-1]
    assert "requested" in str(notice.message["Subject"]).lower()
    assert moved in notice.text()
    # Nothing changed yet: the old address still signs in.
    await login(auth_stub, person)

    changed = await auth_stub.VerifyEmail(
        auth_pb2.VerifyEmailRequest(token=token_of(link_mail, VERIFY_PAGE))
    )
    assert (changed.account.email, changed.account.email_verified) == (moved, True)
    assert "changed" in str((await mails_to(mail_dir, person.email, 3))[-1].message["Subject"])
    refused = await failure_of(login(auth_stub, person))
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
    await login(auth_stub, Person(moved, person.username, person.password))

    events = await auth_stub.ListSecurityEvents(
        auth_pb2.ListSecurityEventsRequest(), metadata=bearer(pair)
    )
    assert auth_pb2.SecurityEvent.KIND_EMAIL_CHANGED in [e.kind for e in events.events]


async def test_a_taken_address_is_answered_alike_and_refused_only_at_the_link(
    auth_stub: Stub, mail_dir: Path
) -> None:
    owner, other = await register(auth_stub), await register(auth_stub)
    pair = await login(auth_stub, owner)
    # The same empty answer as for a free address: the request tells nothing about `other`.
    await change(auth_stub, pair, other.email)
    [*_, link_mail] = await mails_to(mail_dir, other.email, 2)
    taken = await failure_of(
        auth_stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token_of(link_mail, VERIFY_PAGE)))
    )
    assert (taken.code, taken.reason) == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    await login(auth_stub, owner)  # unchanged


@pytest.mark.parametrize(
    ("new_email", "why"),
    [("", "is required"), ("not an address", ""), ("CURRENT", "already the account's address")],
)
async def test_a_bad_new_address_is_refused_with_its_field(
    auth_stub: Stub, new_email: str, why: str
) -> None:
    person = await register(auth_stub)
    pair = await login(auth_stub, person)
    wanted = person.email.upper() if new_email == "CURRENT" else new_email
    failure = await failure_of(change(auth_stub, pair, wanted))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["new_email"]
    assert why in failure.message


async def test_without_a_token_it_is_unauthenticated(auth_stub: Stub) -> None:
    failure = await failure_of(
        auth_stub.ChangeEmail(auth_pb2.ChangeEmailRequest(new_email=new_address()))
    )
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_password_reset_voids_a_pending_change(auth_stub: Stub, mail_dir: Path) -> None:
    person = await register(auth_stub)
    pair = await login(auth_stub, person)
    moved = new_address()
    await change(auth_stub, pair, moved)
    [link_mail] = await mails_to(mail_dir, moved, 1)

    await auth_stub.RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(email=person.email))
    reset_mail = (await mails_to(mail_dir, person.email, 3))[-1]
    await auth_stub.ResetPassword(
        auth_pb2.ResetPasswordRequest(
            token=token_of(reset_mail, "/account/reset-password"),
            new_password=f"copper willow {uuid.uuid4().hex[:6]}",
        )
    )
    voided = await failure_of(
        auth_stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token_of(link_mail, VERIFY_PAGE)))
    )
    assert (voided.code, voided.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_TOKEN_INVALID")


async def test_only_the_latest_link_works_and_asking_again_soon_sends_nothing(
    auth_stub: Stub, mail_dir: Path
) -> None:
    person = await register(auth_stub)
    pair = await login(auth_stub, person)
    first, second = new_address(), new_address()
    await change(auth_stub, pair, first)
    await change(auth_stub, pair, second)  # within the cooldown (2 s in these tests)
    await asyncio.sleep(1.0)
    assert not [p for p in stored_mails(mail_dir) if second in read_mail(p).recipients()]

    await asyncio.sleep(1.5)
    await change(auth_stub, pair, second)
    [second_link] = await mails_to(mail_dir, second, 1)
    [first_link] = await mails_to(mail_dir, first, 1)
    stale = await failure_of(
        auth_stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token_of(first_link, VERIFY_PAGE)))
    )
    assert stale.code == grpc.StatusCode.NOT_FOUND
    changed = await auth_stub.VerifyEmail(
        auth_pb2.VerifyEmailRequest(token=token_of(second_link, VERIFY_PAGE))
    )
    assert changed.account.email == second


async def test_twenty_concurrent_confirmations_change_the_address_once(
    auth_stub: Stub, mail_dir: Path
) -> None:
    person = await register(auth_stub)
    pair = await login(auth_stub, person)
    moved = new_address()
    await change(auth_stub, pair, moved)
    [link_mail] = await mails_to(mail_dir, moved, 1)
    request = auth_pb2.VerifyEmailRequest(token=token_of(link_mail, VERIFY_PAGE))
    outcomes = await asyncio.gather(
        *(auth_stub.VerifyEmail(request) for _ in range(20)), return_exceptions=True
    )
    done = [o for o in outcomes if isinstance(o, auth_pb2.VerifyEmailResponse)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(done) == 1
    assert done[0].account.email == moved
    assert {e.code() for e in refused} == {grpc.StatusCode.NOT_FOUND}
    # The old address got one "changed" notice, not twenty.
    await asyncio.sleep(1.0)
    notices = [m for m in await mails_to(mail_dir, person.email, 3) if "changed" in m.text()]
    assert len([m for m in notices if "was changed" in str(m.message["Subject"])]) == 1
