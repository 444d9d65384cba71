"""The whole way of a mail: queued with the write that causes it in data_access's outbox (real
PostgreSQL), claimed under the sending lease by auth_svc's sender through MailOutboxClient,
delivered to the development mailbox, and recorded as sent."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from pydantic import SecretStr

from auth_svc.accounts import MailKind
from auth_svc.mail.mailer import AccountMailer
from auth_svc.mail.messages import MailRenderer
from auth_svc.mail.outbox import Sent
from auth_svc.mail.outbox_client import MailOutboxClient
from auth_svc.mail.sealing import MailSealer
from auth_svc.mail.sender import MailSender
from auth_svc.mail.smtp import SmtpServer, SmtpTransport
from data_access import admin
from data_access.migrate import upgrade_async
from data_access.server import build_definition
from data_access.settings import DataAccessSettings
from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.caller import derive_caller_token
from meshkit.clients import PeerCaller
from meshkit.errors import FailedPrecondition, NotFound
from meshkit.reasons import Reason
from meshkit.timestamps import to_timestamp
from tests.helpers import serving
from tests.integration.auth_svc.mail.conftest import Mailbox

pytestmark = pytest.mark.integration

TOKEN = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
async def own_data_access(database_url: str, mesh_secret: str) -> AsyncIterator[str]:
    """data_access over a database of its own: the session's data_access may have a running
    auth_svc sender holding the sending lease, which these tests need to take."""
    name = f"meshgram_mail_{secrets.token_hex(6)}"
    url = await admin.create_database(database_url, name)
    try:
        await upgrade_async(url)
        settings = DataAccessSettings(host="127.0.0.1", port=0, mesh_secret=SecretStr(mesh_secret))
        async with serving(build_definition(settings, url), grace=1.0) as address:
            yield address
    finally:
        await admin.drop_database(database_url, name)


@pytest.fixture
async def channel(own_data_access: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(own_data_access) as opened:
        yield opened


@pytest.fixture
def caller(mesh_secret: str) -> PeerCaller:
    return PeerCaller(
        timeout=5, caller="auth_svc", caller_token=derive_caller_token(mesh_secret, "auth_svc")
    )


async def register_with_mail(
    channel: grpc.aio.Channel, caller: PeerCaller, mailer: AccountMailer, email: str
) -> None:
    """Create an account with its verification token and mail, as auth_svc's sign-up does."""
    stub = dataaccess_pb2_grpc.AccountStoreServiceStub(channel)
    mail = mailer.compose(MailKind.VERIFY_EMAIL, email, token=TOKEN)
    request = dataaccess_pb2.CreateAccountRequest(
        email=email,
        username=f"mail_{secrets.token_hex(6)}",
        password_hash="$2b$04$" + "a" * 53,
        verification=dataaccess_pb2.NewAccountToken(
            token_hash=secrets.token_hex(32),
            expire_time=to_timestamp(datetime.now(UTC) + timedelta(hours=24)),
        ),
        mail=dataaccess_pb2.SealedMail(kind=mail.kind, sealed=mail.sealed),
    )
    await caller.unary(stub.CreateAccount, request)


async def test_a_mail_queued_with_an_account_is_delivered_once(
    channel: grpc.aio.Channel,
    caller: PeerCaller,
    mailbox: Mailbox,
    renderer: MailRenderer,
    sealer: MailSealer,
) -> None:
    outbox = MailOutboxClient(channel, caller)
    sender = MailSender(
        outbox,
        sealer,
        SmtpTransport(SmtpServer(host="127.0.0.1", port=mailbox.port, timeout_seconds=5)),
        sender_id=f"test:{secrets.token_hex(4)}",
        lease_seconds=2,
    )
    mailer = AccountMailer(
        renderer,
        sealer,
        sender.wake,
        verify_lifetime=timedelta(hours=24),
        reset_lifetime=timedelta(minutes=30),
    )
    email = f"{secrets.token_hex(6)}@example.org"

    await register_with_mail(channel, caller, mailer, email)
    assert await sender.send_due() == 1

    [mail] = mailbox.mails()
    assert mail.recipients() == {email}
    assert f"http://localhost:8080/account/verify-email#token={TOKEN}" in mail.links()
    assert await sender.send_due() == 0, "a sent mail is not claimed again"


async def test_one_sender_at_a_time_holds_the_lease(
    channel: grpc.aio.Channel, caller: PeerCaller
) -> None:
    outbox = MailOutboxClient(channel, caller)
    first, second = f"first:{secrets.token_hex(4)}", f"second:{secrets.token_hex(4)}"

    # A lease another test of this module took runs out within its 2 seconds.
    for _ in range(30):
        claim = await outbox.claim(first, lease_seconds=1.5, limit=10)
        if claim.holds_lease:
            break
        await asyncio.sleep(0.1)
    assert claim.holds_lease
    other = await outbox.claim(second, lease_seconds=1.5, limit=10)
    assert not other.holds_lease
    assert other.mails == []

    with pytest.raises(FailedPrecondition) as refused:
        await outbox.complete(second, 1, Sent())
    assert refused.value.reason == Reason.MAIL_NOT_CLAIMED
    with pytest.raises(NotFound) as unknown:
        await outbox.complete(first, 2**62, Sent())
    assert unknown.value.reason == Reason.MAIL_NOT_FOUND
