"""Delivery of one mail to an SMTP server with aiosmtplib, and the sorting of its failures into
temporary (try again later) and permanent (give up), described without any part of the mail."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

import aiosmtplib
from pydantic import SecretStr

Security = Literal["none", "starttls", "tls"]

# Steps of one delivery, each under the per-step timeout: connect (with TLS), EHLO, STARTTLS,
# EHLO again, AUTH, MAIL, RCPT, DATA and the message, QUIT. The whole delivery gets that many
# timeouts at most, so that a server trickling answers cannot hold it forever.
_STEPS = 9


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to hand mail over: address, TLS mode, optional login, step timeout."""

    host: str
    port: int
    security: Security = "none"
    username: str = ""
    password: SecretStr | None = field(default=None, repr=False)
    timeout_seconds: float = 10.0
    tls_context: ssl.SSLContext | None = field(default=None, repr=False)
    """Trust for the server's certificate; None: the system's certificate authorities."""


class DeliveryError(Exception):
    """A delivery failed. reason names the failure (SMTP codes, never the server's text, which
    may quote the recipient); permanent: retrying cannot help; server_fault: the server could
    not be used at all, so other mails would fail the same way now."""

    def __init__(self, reason: str, *, permanent: bool = False, server_fault: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.server_fault = server_fault


def classify(exc: Exception) -> DeliveryError:
    """Sort a failed delivery: only a 5xx refusal of the recipient or of the message itself is
    permanent; a refused login or sender address is the server's (configuration) fault."""
    match exc:
        case aiosmtplib.SMTPRecipientsRefused(recipients=refusals) if refusals:
            code = refusals[0].code
            return DeliveryError(f"SMTP {code}: recipient refused", permanent=_is_permanent(code))
        case aiosmtplib.SMTPRecipientRefused(code=code):
            return DeliveryError(f"SMTP {code}: recipient refused", permanent=_is_permanent(code))
        case aiosmtplib.SMTPDataError(code=code):
            return DeliveryError(f"SMTP {code}: message refused", permanent=_is_permanent(code))
        case aiosmtplib.SMTPSenderRefused(code=code):
            return DeliveryError(f"SMTP {code}: sender address refused", server_fault=True)
        case aiosmtplib.SMTPAuthenticationError(code=code):
            return DeliveryError(f"SMTP {code}: login refused", server_fault=True)
        case aiosmtplib.SMTPNotSupported():
            # Missing STARTTLS or AUTH concerns every mail, missing SMTPUTF8 only some: each
            # mail finds out for itself, quickly.
            return DeliveryError("SMTP server lacks a required extension")
        case aiosmtplib.SMTPTimeoutError() | TimeoutError():
            return DeliveryError("SMTP server did not answer in time", server_fault=True)
        case aiosmtplib.SMTPServerDisconnected():
            return DeliveryError("SMTP server closed the connection", server_fault=True)
        case aiosmtplib.SMTPResponseException(code=code):
            return DeliveryError(f"SMTP {code}: command refused", server_fault=True)
        case aiosmtplib.SMTPConnectError() | OSError():
            return DeliveryError(
                f"cannot connect to the SMTP server ({_root_cause(exc)})", server_fault=True
            )
        case _:
            return DeliveryError(f"SMTP failure ({type(exc).__name__})", server_fault=True)


def _is_permanent(code: int) -> bool:
    """Whether an SMTP reply code is a permanent failure (5xx)."""
    return 500 <= code < 600


def _root_cause(exc: BaseException) -> str:
    """The class name of the innermost cause (ConnectionRefusedError, SSLCertVerificationError)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return type(exc).__name__


class SmtpTransport:
    """Hands each mail to the configured SMTP server on a connection of its own."""

    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def deliver(self, message: EmailMessage) -> None:
        """Deliver one mail to its To address; DeliveryError (classified) when it fails."""
        server = self._server
        password = server.password.get_secret_value() if server.password else None
        try:
            async with asyncio.timeout(server.timeout_seconds * _STEPS):
                await aiosmtplib.send(
                    message,
                    hostname=server.host,
                    port=server.port,
                    username=server.username or None,
                    password=password if server.username else None,
                    use_tls=server.security == "tls",
                    # "none" must not upgrade on its own either: the server is on this machine.
                    start_tls=server.security == "starttls",
                    tls_context=server.tls_context,
                    timeout=server.timeout_seconds,
                )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise classify(exc) from None
