"""The mail sender against real SMTP servers on loopback (the development mailbox, and aiosmtpd
servers that refuse or demand STARTTLS and a login), with the outbox held in memory."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import secrets
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from auth_svc.accounts import SealedMail
from auth_svc.mail.messages import MailRenderer
from auth_svc.mail.sealing import MailSealer
from auth_svc.mail.sender import MailSender, RetryPolicy
from auth_svc.mail.smtp import SmtpServer, SmtpTransport
from tests.integration.auth_svc.mail.conftest import (
    FakeOutbox,
    Mailbox,
    SmtpServerFactory,
    free_port,
    running_mailbox,
)

pytestmark = pytest.mark.integration

TO = "ada@example.org"
TOKEN = "Zt3_q-4fXbW9kR2mVn8pL0sYc7uHjE5a"


def verify_mail(renderer: MailRenderer, sealer: MailSealer, to: str = TO) -> SealedMail:
    message = renderer.render("verify_email", to=to, token=TOKEN, lifetime=timedelta(hours=24))
    return sealer.seal(message, "verify_email")


def sender_for(
    outbox: FakeOutbox, sealer: MailSealer, server: SmtpServer, **options: Any
) -> MailSender:
    return MailSender(
        outbox,
        sealer,
        SmtpTransport(server),
        sender_id="test-host:1:abcd",
        **options,  # type: ignore[arg-type]
    )


def plain_server(port: int) -> SmtpServer:
    return SmtpServer(host="127.0.0.1", port=port, timeout_seconds=5)


async def test_a_queued_mail_arrives_with_both_parts_and_is_marked_sent(
    outbox: FakeOutbox, mailbox: Mailbox, renderer: MailRenderer, sealer: MailSealer
) -> None:
    mail_id = outbox.queue(verify_mail(renderer, sealer))

    claimed = await sender_for(outbox, sealer, plain_server(mailbox.port)).send_due()

    assert claimed == 1
    [received] = mailbox.mails()
    assert received.message["To"] == TO
    assert received.message["Subject"] == "Confirm your email address for meshgram"
    assert received.message.get_body(("plain",)) is not None
    assert received.message.get_body(("html",)) is not None
    assert f"http://localhost:8080/account/verify-email#token={TOKEN}" in received.links()
    row = outbox.rows[mail_id]
    assert row.sent_at is not None
    assert row.sealed is None, "the sealed content is erased once sent"


async def test_mail_waits_while_the_server_is_down_and_goes_out_once_it_is_back(
    outbox: FakeOutbox, renderer: MailRenderer, sealer: MailSealer, tmp_path: Path
) -> None:
    port = free_port()
    mail_id = outbox.queue(verify_mail(renderer, sealer))
    sender = sender_for(outbox, sealer, plain_server(port))

    before = datetime.now(UTC)
    await sender.send_due()

    row = outbox.rows[mail_id]
    assert row.sent_at is None
    assert row.given_up_at is None
    assert row.sealed is not None, "nothing is lost"
    assert row.attempts == 1
    assert "cannot connect" in row.last_error
    # The first wait is 5 s, shortened by up to a quarter of it (jitter).
    assert before + timedelta(seconds=3.7) <= row.next_attempt_at
    assert row.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=5)

    assert await sender.send_due() == 0, "not due again before its retry time"

    async with running_mailbox(tmp_path / "mail", port) as mailbox:
        outbox.make_due()
        await sender.send_due()
        assert [m.message["To"] for m in mailbox.mails()] == [TO]
    assert row.sent_at is not None


async def test_back_off_grows_with_each_failure(
    outbox: FakeOutbox, renderer: MailRenderer, sealer: MailSealer
) -> None:
    mail_id = outbox.queue(verify_mail(renderer, sealer), attempts=4)
    sender = sender_for(outbox, sealer, plain_server(free_port()))

    before = datetime.now(UTC)
    await sender.send_due()

    # Fifth failure: 5 s * 2**4 = 80 s, less up to a quarter.
    wait = outbox.rows[mail_id].next_attempt_at - before
    assert timedelta(seconds=59) <= wait <= timedelta(seconds=81)


async def test_the_last_allowed_attempt_gives_up(
    outbox: FakeOutbox, renderer: MailRenderer, sealer: MailSealer
) -> None:
    mail_id = outbox.queue(verify_mail(renderer, sealer), attempts=2)
    sender = sender_for(
        outbox, sealer, plain_server(free_port()), retry=RetryPolicy(max_attempts=3)
    )

    await sender.send_due()

    row = outbox.rows[mail_id]
    assert row.given_up_at is not None
    assert row.sealed is None
    assert "after 3 attempts" in row.last_error


async def test_one_unreachable_server_fails_the_whole_batch_without_trying_each(
    outbox: FakeOutbox, renderer: MailRenderer, sealer: MailSealer
) -> None:
    ids = [outbox.queue(verify_mail(renderer, sealer)) for _ in range(3)]
    # A server that accepts connections but never answers: each try would take a timeout.
    connections: list[asyncio.StreamWriter] = []

    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    silent = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    try:
        port = silent.sockets[0].getsockname()[1]
        server = SmtpServer(host="127.0.0.1", port=port, timeout_seconds=0.5)
        started = asyncio.get_running_loop().time()
        await sender_for(outbox, sealer, server).send_due()
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        for writer in connections:
            writer.close()
        silent.close()
        await silent.wait_closed()

    assert elapsed < 2, "one timeout, not one per mail"
    assert len(connections) == 1
    for mail_id in ids:
        row = outbox.rows[mail_id]
        assert row.attempts == 1
        assert row.last_error == "SMTP server did not answer in time"


class RefusingRecipient:
    """Refuses every recipient with the given reply."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.data_calls = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        return self.reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_calls += 1
        return "250 OK"


async def test_a_permanently_refused_recipient_is_given_up(
    outbox: FakeOutbox,
    renderer: MailRenderer,
    sealer: MailSealer,
    smtp_server: SmtpServerFactory,
) -> None:
    mail_id = outbox.queue(verify_mail(renderer, sealer))
    handler = RefusingRecipient(f"550 5.1.1 <{TO}>: no such user")

    async with smtp_server(handler) as port:
        await sender_for(outbox, sealer, plain_server(port)).send_due()

    row = outbox.rows[mail_id]
    assert row.given_up_at is not None
    assert row.sealed is None
    assert row.last_error == "SMTP 550: recipient refused"
    assert handler.data_calls == 0


async def test_a_temporarily_refused_recipient_is_retried(
    outbox: FakeOutbox,
    renderer: MailRenderer,
    sealer: MailSealer,
    smtp_server: SmtpServerFactory,
) -> None:
    mail_id = outbox.queue(verify_mail(renderer, sealer))

    async with smtp_server(RefusingRecipient("450 4.2.1 mailbox busy, try later")) as port:
        await sender_for(outbox, sealer, plain_server(port)).send_due()

    row = outbox.rows[mail_id]
    assert row.given_up_at is None
    assert row.sent_at is None
    assert row.attempts == 1
    assert row.last_error == "SMTP 450: recipient refused"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key; returns (certificate, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class LoginRequired:
    """Accepts one login and stores what it receives, noting whether TLS was on."""

    def __init__(self, login: str, password: str) -> None:
        self.expected = LoginPassword(login.encode(), password.encode())
        self.received: list[tuple[bytes, bool]] = []

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        return AuthResult(success=data == self.expected, handled=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes)
        self.received.append((envelope.original_content, session.ssl is not None))
        return "250 OK"


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting only the server's self-signed certificate)."""
    cert_file, key_file = self_signed(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_starttls_with_a_login_delivers_and_never_logs_the_password(
    outbox: FakeOutbox,
    renderer: MailRenderer,
    sealer: MailSealer,
    smtp_server: SmtpServerFactory,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = secrets.token_urlsafe(16)
    handler = LoginRequired("mailer", password)
    server_tls, client_tls = tls
    mail_id = outbox.queue(verify_mail(renderer, sealer))
    caplog.set_level(logging.DEBUG)

    async with smtp_server(
        handler,
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        authenticator=handler,
    ) as port:
        server = SmtpServer(
            host="127.0.0.1",
            port=port,
            security="starttls",
            username="mailer",
            password=SecretStr(password),
            timeout_seconds=5,
            tls_context=client_tls,
        )
        await sender_for(outbox, sealer, server).send_due()

    assert outbox.rows[mail_id].sent_at is not None
    [(content, over_tls)] = handler.received
    assert over_tls
    assert TOKEN.encode() in content
    assert password not in caplog.text
    assert password not in repr(server)


async def test_a_wrong_password_is_retried_not_given_up(
    outbox: FakeOutbox,
    renderer: MailRenderer,
    sealer: MailSealer,
    smtp_server: SmtpServerFactory,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    handler = LoginRequired("mailer", secrets.token_urlsafe(16))
    server_tls, client_tls = tls
    mail_id = outbox.queue(verify_mail(renderer, sealer))

    async with smtp_server(
        handler, tls_context=server_tls, auth_required=True, authenticator=handler
    ) as port:
        server = SmtpServer(
            host="127.0.0.1",
            port=port,
            security="starttls",
            username="mailer",
            password=SecretStr("not-the-password"),
            timeout_seconds=5,
            tls_context=client_tls,
        )
        await sender_for(outbox, sealer, server).send_due()

    row = outbox.rows[mail_id]
    assert row.given_up_at is None
    assert row.last_error.endswith("login refused")
    assert handler.received == []


async def test_an_untrusted_certificate_is_refused(
    outbox: FakeOutbox,
    renderer: MailRenderer,
    sealer: MailSealer,
    smtp_server: SmtpServerFactory,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    handler = LoginRequired("mailer", "unused")
    server_tls, _ = tls
    mail_id = outbox.queue(verify_mail(renderer, sealer))

    async with smtp_server(handler, tls_context=server_tls) as port:
        server = SmtpServer(host="127.0.0.1", port=port, security="starttls", timeout_seconds=5)
        await sender_for(outbox, sealer, server).send_due()

    row = outbox.rows[mail_id]
    assert row.sent_at is None
    assert row.attempts == 1
    assert handler.received == []


async def test_nothing_is_sent_while_another_sender_holds_the_lease(
    outbox: FakeOutbox, mailbox: Mailbox, renderer: MailRenderer, sealer: MailSealer
) -> None:
    mail_id = outbox.queue(verify_mail(renderer, sealer))
    outbox.hand_lease_to("other-host:7:ffff")

    assert await sender_for(outbox, sealer, plain_server(mailbox.port)).send_due() == 0

    assert mailbox.mails() == []
    assert outbox.rows[mail_id].attempts == 0
    assert outbox.rows[mail_id].claimed_by is None


async def test_a_sender_that_loses_the_lease_mid_batch_stops(
    outbox: FakeOutbox, mailbox: Mailbox, renderer: MailRenderer, sealer: MailSealer
) -> None:
    first = outbox.queue(verify_mail(renderer, sealer, "one@example.org"))
    second = outbox.queue(verify_mail(renderer, sealer, "two@example.org"))
    sender = sender_for(outbox, sealer, plain_server(mailbox.port))
    claim_for_real = outbox.claim

    async def claim_then_lose_the_lease(sender: str, *, lease_seconds: float, limit: int) -> Any:
        claim = await claim_for_real(sender, lease_seconds=lease_seconds, limit=limit)
        outbox.hand_lease_to("other-host:7:ffff")
        return claim

    outbox.claim = claim_then_lose_the_lease
    await sender.send_due()

    # The first went out but could not be recorded (it may go out again: at least once); the
    # second was not tried by a sender that no longer holds the lease.
    assert [m.message["To"] for m in mailbox.mails()] == ["one@example.org"]
    assert outbox.rows[first].sent_at is None
    assert outbox.rows[second].attempts == 0


async def test_a_mail_sealed_with_another_key_is_given_up(
    outbox: FakeOutbox, mailbox: Mailbox, renderer: MailRenderer, sealer: MailSealer
) -> None:
    foreign = verify_mail(renderer, MailSealer(secrets.token_urlsafe(32)))
    mail_id = outbox.queue(foreign)

    await sender_for(outbox, sealer, plain_server(mailbox.port)).send_due()

    assert mailbox.mails() == []
    assert outbox.rows[mail_id].given_up_at is not None
    assert "sealed mail refused" in outbox.rows[mail_id].last_error


async def arrival(mailbox: Mailbox, seconds: float = 5.0) -> None:
    """Return once the mailbox holds a mail; TimeoutError after seconds."""
    for _ in range(int(seconds / 0.02)):
        if mailbox.mails():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no mail arrived within {seconds} s")


async def test_wake_sends_at_once_and_stop_ends_the_loop(
    outbox: FakeOutbox, mailbox: Mailbox, renderer: MailRenderer, sealer: MailSealer
) -> None:
    sender = sender_for(outbox, sealer, plain_server(mailbox.port), poll_seconds=60)
    sender.start()
    try:
        await asyncio.sleep(0.1)  # the first round finds nothing, then waits up to a minute
        outbox.queue(verify_mail(renderer, sealer))
        sender.wake()
        await arrival(mailbox)
    finally:
        async with asyncio.timeout(5):
            await sender.stop()
    assert len(mailbox.mails()) == 1


async def test_the_loop_survives_an_unreachable_outbox(
    outbox: FakeOutbox, mailbox: Mailbox, renderer: MailRenderer, sealer: MailSealer
) -> None:
    from meshkit.errors import Unavailable
    from meshkit.reasons import Reason

    claim_for_real = outbox.claim
    failures = 3

    async def flaky_claim(sender: str, *, lease_seconds: float, limit: int) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            raise Unavailable("data_access is down", Reason.DEPENDENCY_UNAVAILABLE)
        return await claim_for_real(sender, lease_seconds=lease_seconds, limit=limit)

    outbox.claim = flaky_claim
    outbox.queue(verify_mail(renderer, sealer))
    sender = sender_for(outbox, sealer, plain_server(mailbox.port), poll_seconds=0.05)
    sender.start()
    try:
        await arrival(mailbox)
    finally:
        await sender.stop()


async def test_logs_name_id_and_kind_but_never_recipient_or_token(
    outbox: FakeOutbox,
    mailbox: Mailbox,
    renderer: MailRenderer,
    sealer: MailSealer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sent = outbox.queue(verify_mail(renderer, sealer))
    await sender_for(outbox, sealer, plain_server(mailbox.port)).send_due()
    failing = outbox.queue(verify_mail(renderer, sealer))
    await sender_for(outbox, sealer, plain_server(free_port())).send_due()

    records = [r for r in caplog.records if r.name.startswith("auth_svc.mail")]
    logged = {
        (r.getMessage(), getattr(r, "mail_id", None), getattr(r, "kind", None)) for r in records
    }
    assert ("mail sent", sent, "verify_email") in logged
    assert ("mail delivery failed, will retry", failing, "verify_email") in logged
    everything = " ".join(str(vars(r)) for r in records)
    assert TO not in everything
    assert TOKEN not in everything


async def test_an_internationalised_address_arrives(
    outbox: FakeOutbox, mailbox: Mailbox, renderer: MailRenderer, sealer: MailSealer
) -> None:
    mail_id = outbox.queue(verify_mail(renderer, sealer, "zoë@exämple.org"))

    await sender_for(outbox, sealer, plain_server(mailbox.port)).send_due()

    assert outbox.rows[mail_id].sent_at is not None
    [received] = mailbox.mails()
    assert received.message["To"] == "zoë@exämple.org"
    assert received.recipients() == {"zoë@exämple.org"}
