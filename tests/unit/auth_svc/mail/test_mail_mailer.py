"""The mailer the account flows use: every kind composed with its lifetime or time, sealed so
that only auth_svc opens it, and a nudge to the sender once a mail is queued."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from auth_svc.accounts import MailKind
from auth_svc.mail import build_mail
from auth_svc.mail.mailer import AccountMailer
from auth_svc.mail.messages import MailRenderer
from auth_svc.mail.sealing import MailSealer
from auth_svc.settings import AuthSettings
from meshkit.clients import PeerCaller
from tests.helpers import clear_environment

PEPPER = secrets.token_urlsafe(32)
TOKEN = "Zt3_q-4fXbW9kR2mVn8pL0sYc7uHjE5a"
TO = "ada@example.org"
CHANGED_AT = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def mailer(wakes: Wakes) -> AccountMailer:
    return AccountMailer(
        MailRenderer(public_url="https://app.example.test", sender="meshgram <m@example.test>"),
        MailSealer(PEPPER),
        wakes,
        verify_lifetime=timedelta(hours=24),
        reset_lifetime=timedelta(minutes=30),
        clock=lambda: CHANGED_AT,
    )


def plain_text(mailer_output: bytes) -> str:
    message = MailSealer(PEPPER).open(mailer_output)
    assert message["To"] == TO
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_verify_mail_carries_its_link_and_lifetime(mailer: AccountMailer) -> None:
    mail = mailer.compose(MailKind.VERIFY_EMAIL, TO, token=TOKEN)
    assert mail.kind == "verify_email"
    text = plain_text(mail.sealed)
    assert f"https://app.example.test/account/verify-email#token={TOKEN}" in text
    assert "24 hours" in text


def test_reset_mail_carries_its_link_and_lifetime(mailer: AccountMailer) -> None:
    mail = mailer.compose(MailKind.RESET_PASSWORD, TO, token=TOKEN)
    assert mail.kind == "reset_password"
    text = plain_text(mail.sealed)
    assert f"https://app.example.test/account/reset-password#token={TOKEN}" in text
    assert "30 minutes" in text


def test_password_changed_mail_says_when(mailer: AccountMailer) -> None:
    mail = mailer.compose(MailKind.PASSWORD_CHANGED, TO)
    assert "2026-03-04 05:06 UTC" in plain_text(mail.sealed)


def test_signup_attempt_mail_links_to_login(mailer: AccountMailer) -> None:
    mail = mailer.compose(MailKind.SIGNUP_ATTEMPT, TO)
    assert "https://app.example.test/\n" in plain_text(mail.sealed)


def test_mfa_mails_say_when(mailer: AccountMailer) -> None:
    for kind in (MailKind.MFA_ENABLED, MailKind.MFA_DISABLED):
        mail = mailer.compose(kind, TO)
        assert mail.kind == kind.value
        assert "2026-03-04 05:06 UTC" in plain_text(mail.sealed)


def test_new_device_mail_names_the_device(mailer: AccountMailer) -> None:
    mail = mailer.compose(MailKind.NEW_DEVICE_LOGIN, TO, device="MeshPhone/1.0 (198.51.100.7)")
    assert mail.kind == "new_device_login"
    text = plain_text(mail.sealed)
    assert "MeshPhone/1.0 (198.51.100.7)" in text
    assert "2026-03-04 05:06 UTC" in text


def test_a_token_where_the_kind_takes_none_is_refused(mailer: AccountMailer) -> None:
    with pytest.raises(ValueError, match="carries no token"):
        mailer.compose(MailKind.PASSWORD_CHANGED, TO, token=TOKEN)


def test_a_link_mail_without_token_is_refused(mailer: AccountMailer) -> None:
    with pytest.raises(ValueError, match="token"):
        mailer.compose(MailKind.VERIFY_EMAIL, TO)


def test_queued_wakes_the_sender(mailer: AccountMailer, wakes: Wakes) -> None:
    mailer.queued()
    assert wakes.count == 1


async def test_build_mail_wires_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_environment(monkeypatch, "AUTH_")
    settings = AuthSettings(
        data_access_token=secrets.token_urlsafe(32),
        password_pepper=PEPPER,
        public_url="https://meshgram.example.test",
        reset_token_ttl_seconds=20 * 60,
    )
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    try:
        mail = build_mail(settings, channel, PeerCaller(timeout=1))
        sealed = mail.mailer.compose(MailKind.RESET_PASSWORD, TO, token=TOKEN)
        text = plain_text(sealed.sealed)
        assert f"https://meshgram.example.test/account/reset-password#token={TOKEN}" in text
        assert "20 minutes" in text
        assert mail.sender.sender_id.count(":") == 2
    finally:
        await channel.close()
