"""auth_svc's mail, wired from its settings: what the composition root builds, starts and stops,
and the mailer the account flows queue mail with."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import timedelta

import grpc

from auth_svc.mail.mailer import AccountMailer
from auth_svc.mail.messages import MailRenderer
from auth_svc.mail.outbox_client import MailOutboxClient
from auth_svc.mail.sealing import MailSealer
from auth_svc.mail.sender import MailSender, RetryPolicy, new_sender_id
from auth_svc.mail.smtp import SmtpServer, SmtpTransport
from auth_svc.settings import AuthSettings
from meshkit.clients import PeerCaller

log = logging.getLogger("auth_svc.mail")


@dataclass(frozen=True)
class Mail:
    """auth_svc's mail: the mailer the account flows queue mail with, and the sender that
    delivers it (start it once the server's event loop runs, stop it at shutdown)."""

    mailer: AccountMailer
    sender: MailSender
    sending: bool = True
    """False: this process only queues mail, and other replicas deliver it."""

    def start(self) -> None:
        """Start the sender in the running event loop (from the server's registration), unless
        this process does not send."""
        if self.sending:
            self.sender.start()

    async def stop(self) -> None:
        """Stop the sender, letting the delivery under way record its outcome first."""
        await self.sender.stop()


def smtp_server(settings: AuthSettings) -> SmtpServer:
    """The SMTP server the settings name."""
    return SmtpServer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password,
        timeout_seconds=settings.smtp_timeout_seconds,
    )


def build_mail(settings: AuthSettings, channel: grpc.aio.Channel, caller: PeerCaller) -> Mail:
    """Wire the mail of auth_svc: a mailer rendering with AUTH_PUBLIC_URL and AUTH_MAIL_FROM and
    sealing with a key from the pepper, and a sender on the data_access channel delivering over
    AUTH_SMTP_*; start() it once the event loop serves. ValueError when AUTH_MAIL_FROM is not
    one address."""
    server = smtp_server(settings)
    if server.username and server.security == "none" and not _is_loopback(server.host):
        log.warning(
            "SMTP login without TLS to another machine: set AUTH_SMTP_SECURITY",
            extra={"smtp_host": server.host},
        )
    sealer = MailSealer(settings.pepper())
    sender = MailSender(
        MailOutboxClient(channel, caller),
        sealer,
        SmtpTransport(server),
        sender_id=new_sender_id(),
        poll_seconds=settings.mail_poll_seconds,
        retry=RetryPolicy(max_attempts=settings.mail_max_attempts),
    )
    mailer = AccountMailer(
        MailRenderer(public_url=settings.public_url, sender=settings.mail_from),
        sealer,
        sender.wake,
        verify_lifetime=timedelta(seconds=settings.verify_email_token_ttl_seconds),
        reset_lifetime=timedelta(seconds=settings.reset_token_ttl_seconds),
    )
    return Mail(mailer=mailer, sender=sender, sending=settings.mail_sending)


def _is_loopback(host: str) -> bool:
    """Whether host names this machine (localhost or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
