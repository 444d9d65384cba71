"""Typed client of data_access's MailOutboxService: protobuf in, the outbox's domain types out."""

from __future__ import annotations

from datetime import timedelta

import grpc

from auth_svc.accounts import SealedMail
from auth_svc.mail.outbox import ERROR_MAX_CHARS, Claim, GiveUp, Outcome, QueuedMail, Retry, Sent
from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.clients import PeerCaller
from meshkit.timestamps import to_datetime, to_timestamp


class MailOutboxClient:
    """MailOutboxService over a channel; implements auth_svc.mail.outbox.Outbox."""

    def __init__(self, channel: grpc.aio.Channel, caller: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.MailOutboxServiceStub(channel)
        self._caller = caller

    async def claim(self, sender: str, *, lease_seconds: float, limit: int) -> Claim:
        """Take or renew the sending lease and return up to limit due mails (see Outbox)."""
        request = dataaccess_pb2.ClaimMailRequest(sender=sender, limit=limit)
        request.lease_duration.FromTimedelta(timedelta(seconds=lease_seconds))
        response = await self._caller.unary(self._stub.ClaimMail, request)
        return Claim(
            holds_lease=response.holds_lease,
            mails=[
                QueuedMail(
                    id=mail.id,
                    mail=SealedMail(kind=mail.mail.kind, sealed=mail.mail.sealed),
                    attempts=mail.attempts,
                    queued_at=to_datetime(mail.create_time),
                )
                for mail in response.mails
            ],
        )

    async def complete(self, sender: str, mail_id: int, outcome: Outcome) -> None:
        """Record the outcome of a claimed mail (see Outbox for the errors)."""
        request = dataaccess_pb2.CompleteMailRequest(sender=sender, id=mail_id)
        match outcome:
            case Sent():
                request.sent = True
            case Retry(at=at, error=error):
                request.retry_time.CopyFrom(to_timestamp(at))
                request.error = error[:ERROR_MAX_CHARS]
            case GiveUp(error=error):
                request.given_up = True
                request.error = error[:ERROR_MAX_CHARS]
        await self._caller.unary(self._stub.CompleteMail, request)
