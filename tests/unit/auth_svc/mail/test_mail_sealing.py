"""Sealing: a sealed mail opens to the same mail with the same key, hides its content, and is
refused when altered or sealed with another key."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from auth_svc.accounts import SealedMail
from auth_svc.mail.messages import MailRenderer
from auth_svc.mail.sealing import MailSealer, MailSealError

PEPPER = secrets.token_urlsafe(32)
TO = "ada@example.org"
TOKEN = "Zt3_q-4fXbW9kR2mVn8pL0sYc7uHjE5a"


@pytest.fixture
def sealed() -> SealedMail:
    renderer = MailRenderer(public_url="http://localhost:8080", sender="meshgram <m@localhost>")
    message = renderer.render("verify_email", to=TO, token=TOKEN, lifetime=timedelta(hours=24))
    return MailSealer(PEPPER).seal(message, "verify_email")


def test_a_sealed_mail_opens_to_the_same_mail(sealed: SealedMail) -> None:
    opened = MailSealer(PEPPER).open(sealed.sealed)
    assert sealed.kind == "verify_email"
    assert opened["To"] == TO
    assert opened["Subject"] == "Confirm your email address for meshgram"
    plain = opened.get_body(("plain",))
    html = opened.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert f"#token={TOKEN}" in plain.get_content()
    assert f"#token={TOKEN}" in html.get_content()


def test_a_sealed_mail_shows_neither_recipient_nor_token(sealed: SealedMail) -> None:
    assert TO.encode() not in sealed.sealed
    assert TOKEN.encode() not in sealed.sealed
    assert b"Subject" not in sealed.sealed


def test_sealing_twice_gives_different_bytes(sealed: SealedMail) -> None:
    sealer = MailSealer(PEPPER)
    message = sealer.open(sealed.sealed)
    assert (
        sealer.seal(message, "verify_email").sealed != sealer.seal(message, "verify_email").sealed
    )


def test_an_altered_mail_is_refused(sealed: SealedMail) -> None:
    altered = bytearray(sealed.sealed)
    altered[len(altered) // 2] ^= 0x01
    with pytest.raises(MailSealError, match=r"another key .* or altered"):
        MailSealer(PEPPER).open(bytes(altered))


def test_a_mail_sealed_with_another_pepper_is_refused(sealed: SealedMail) -> None:
    with pytest.raises(MailSealError):
        MailSealer(secrets.token_urlsafe(32)).open(sealed.sealed)


@pytest.mark.parametrize("garbage", [b"", b"not sealed", b"gAAAAA" + b"A" * 100])
def test_anything_else_is_refused(garbage: bytes) -> None:
    with pytest.raises(MailSealError):
        MailSealer(PEPPER).open(garbage)


def test_an_internationalised_address_survives_sealing() -> None:
    renderer = MailRenderer(public_url="http://localhost:8080", sender="meshgram <m@localhost>")
    sealer = MailSealer(PEPPER)
    sealed = sealer.seal(renderer.render("signup_attempt", to="zoë@exämple.org"), "signup_attempt")
    [address] = sealer.open(sealed.sealed)["To"].addresses
    assert address.addr_spec == "zoë@exämple.org"
