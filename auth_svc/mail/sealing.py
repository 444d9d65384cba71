"""Sealing of rendered mails before they are queued: recipient, subject and bodies (with their
single-use links) are stored encrypted and authenticated (Fernet), readable only with a key that
auth_svc derives from its password pepper, so the outbox never holds a usable token.

A mail is compressed before it is encrypted (a reset mail shrinks from about 3.8 KB sealed to
1.6 KB): small enough for PostgreSQL to keep the row in its page rather than in TOAST, which
keeps queueing a mail as cheap as the request that queues none."""

from __future__ import annotations

import base64
import email.policy
import zlib
from email.message import EmailMessage
from email.parser import Parser

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from auth_svc.accounts import SealedMail

SEALING_INFO = b"meshgram mail sealing v1"
# Marks a compressed mail inside the seal; a mail itself never starts with a NUL byte, so mails
# sealed before compression still open.
_COMPRESSED = b"\x00z"
# utf8 keeps an internationalised address intact across the round trip. Line ends stay "\n":
# the SMTP client serialises the opened mail again under its own policy, with CRLF.
_POLICY = email.policy.default.clone(utf8=True)


class MailSealError(ValueError):
    """Sealed bytes that this key cannot open: sealed with another key, altered or not a mail."""


def sealing_key(pepper: str, info: bytes = SEALING_INFO) -> bytes:
    """A Fernet key for one use of the pepper (mail by default): HKDF-SHA256 over the pepper
    with that use's info string, so keys of different uses share nothing usable."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        pepper.encode()
    )
    return base64.urlsafe_b64encode(derived)


class MailSealer:
    """Seals rendered mails for the outbox and opens them again for delivery."""

    def __init__(self, pepper: str) -> None:
        self._fernet = Fernet(sealing_key(pepper))

    def seal(self, message: EmailMessage, kind: str) -> SealedMail:
        """Encrypt and authenticate a rendered mail; kind stays readable beside it."""
        plain = _COMPRESSED + zlib.compress(message.as_bytes(policy=_POLICY), 6)
        return SealedMail(kind=kind, sealed=self._fernet.encrypt(plain))

    def open(self, sealed: bytes) -> EmailMessage:
        """Decrypt a sealed mail; MailSealError when it was sealed with another key, altered,
        or does not hold a mail."""
        try:
            plain = self._fernet.decrypt(sealed)
        except InvalidToken:
            raise MailSealError(
                "sealed mail refused: sealed with another key (a changed password pepper?) "
                "or altered"
            ) from None
        if plain.startswith(_COMPRESSED):
            try:
                plain = zlib.decompress(plain[len(_COMPRESSED) :])
            except zlib.error:
                raise MailSealError("sealed mail refused: it holds no mail") from None
        try:
            # Parsed as text: the bytes parser would leave the UTF-8 of an internationalised
            # address as undecodable surrogates, which no SMTP client can send.
            message = Parser(policy=_POLICY).parsestr(plain.decode("utf-8"))
        except UnicodeDecodeError:
            raise MailSealError("sealed mail refused: it holds no mail") from None
        if not isinstance(message, EmailMessage) or not message["To"]:
            raise MailSealError("sealed mail refused: it holds no addressed mail")
        return message
