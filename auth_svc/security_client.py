"""Typed client of data_access's AccountSecurityService: protobuf in, the account defences'
domain types (auth_svc.security_store) out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import grpc

from auth_svc.accounts import Device, NewSession, SealedMail, SessionStart
from auth_svc.clients import (
    device_message,
    mail_message,
    session_message,
)
from auth_svc.rate_limiter import WindowCount
from auth_svc.security_store import (
    ChallengeUse,
    Counter,
    Enablement,
    Event,
    EventKind,
    EventPage,
    MfaState,
    NewEvent,
    UsedCode,
)
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc
from meshkit.clients import PeerCaller
from meshkit.timestamps import to_datetime, to_timestamp

_KINDS: dict[EventKind, pb.SecurityEventKind.ValueType] = {
    kind: pb.SecurityEventKind.Value(f"SECURITY_EVENT_KIND_{kind.name}") for kind in EventKind
}
_KINDS_BACK = {wire: kind for kind, wire in _KINDS.items()}


def _duration(seconds: int) -> timedelta:
    """A whole number of seconds as a timedelta."""
    return timedelta(seconds=seconds)


def _counter(message: pb.LoginAttemptCounter) -> Counter:
    """Convert a stored counter."""
    return Counter(
        key=message.key,
        failures=message.failures,
        last_failure_at=(
            to_datetime(message.last_failure_time)
            if message.HasField("last_failure_time")
            else None
        ),
    )


def _mfa(record: pb.MfaRecord) -> MfaState:
    """Convert a stored factor."""
    return MfaState(
        secret_sealed=record.secret_sealed if record.enabled else None,
        last_used_step=record.last_used_step,
        enabled_at=to_datetime(record.enable_time) if record.HasField("enable_time") else None,
        recovery_codes_left=record.recovery_codes_left,
        pending_secret_sealed=record.pending_secret_sealed or None,
        pending_started_at=(
            to_datetime(record.pending_start_time)
            if record.HasField("pending_start_time")
            else None
        ),
    )


def _event(event: NewEvent) -> pb.NewSecurityEvent:
    """Wire form of an event to append."""
    return pb.NewSecurityEvent(
        account_id=event.account_id,
        kind=_KINDS[event.kind],
        device=device_message(event.device),
        session_id=event.session_id,
        detail=event.detail,
    )


def _code(code: UsedCode) -> pb.MfaCode:
    """Wire form of a code to use up."""
    if code.recovery_code_hash is not None:
        return pb.MfaCode(recovery_code_hash=code.recovery_code_hash)
    return pb.MfaCode(step=code.step or 0)


def _stored_event(record: pb.SecurityEventRecord) -> Event:
    """Convert a stored event."""
    return Event(
        id=record.id,
        kind=_KINDS_BACK[record.kind],
        created_at=to_datetime(record.create_time),
        device=Device(user_agent=record.device.user_agent, client_ip=record.device.client_ip),
        session_id=record.session_id,
        detail=record.detail,
    )


class SecurityStoreClient:
    """AccountSecurityService over a channel; implements auth_svc.security_store.SecurityStore."""

    def __init__(self, channel: grpc.aio.Channel, caller: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.AccountSecurityServiceStub(channel)
        self._caller = caller

    async def login_attempts(self, keys: list[str], reset_after_seconds: int) -> list[Counter]:
        """Return the counters of keys, in order (zero when unknown or stale)."""
        request = pb.GetLoginAttemptsRequest(keys=keys)
        request.reset_after.FromTimedelta(_duration(reset_after_seconds))
        response = await self._caller.unary(self._stub.GetLoginAttempts, request)
        return [_counter(c) for c in response.counters]

    async def record_login_failure(
        self, keys: list[str], reset_after_seconds: int
    ) -> list[Counter]:
        """Count a failure on every key and return the counters after it, in order."""
        request = pb.RecordLoginFailureRequest(keys=keys)
        request.reset_after.FromTimedelta(_duration(reset_after_seconds))
        response = await self._caller.unary(self._stub.RecordLoginFailure, request)
        return [_counter(c) for c in response.counters]

    async def clear_login_attempts(self, keys: list[str]) -> None:
        """Forget the counters of keys."""
        await self._caller.unary(
            self._stub.ClearLoginAttempts, pb.ClearLoginAttemptsRequest(keys=keys)
        )

    async def hit_rate_windows(
        self, windows: Sequence[tuple[str, int]], count: int
    ) -> list[WindowCount]:
        """Count hits in the current window of each (key, window seconds); the counts after."""
        request = pb.HitRateWindowsRequest(count=count)
        for key, seconds in windows:
            request.hits.add(key=key).window.FromSeconds(seconds)
        response = await self._caller.unary(self._stub.HitRateWindows, request)
        return [WindowCount(c.hits, to_datetime(c.end_time)) for c in response.counts]

    async def mfa(self, account_id: str) -> MfaState:
        """Return the account's factor; NotFound (ACCOUNT_NOT_FOUND) for an unknown account."""
        response = await self._caller.unary(
            self._stub.GetMfa, pb.GetMfaRequest(account_id=account_id)
        )
        return _mfa(response.mfa)

    async def start_mfa_enrollment(self, account_id: str, pending_secret_sealed: bytes) -> None:
        """Store a pending secret; FailedPrecondition (MFA_ALREADY_ENABLED) when MFA is on."""
        await self._caller.unary(
            self._stub.StartMfaEnrollment,
            pb.StartMfaEnrollmentRequest(
                account_id=account_id, pending_secret_sealed=pending_secret_sealed
            ),
        )

    async def enable_mfa(self, event: NewEvent, enablement: Enablement) -> None:
        """Turn the pending secret into the factor with new recovery codes."""
        request = pb.EnableMfaRequest(
            account_id=event.account_id,
            pending_secret_sealed=enablement.pending_secret_sealed,
            used_step=enablement.used_step,
            recovery_code_hashes=enablement.recovery_code_hashes,
            event=_event(event),
        )
        request.enrollment_ttl.FromTimedelta(_duration(enablement.enrollment_ttl_seconds))
        if enablement.mail is not None:
            request.mail.CopyFrom(mail_message(enablement.mail))
        await self._caller.unary(self._stub.EnableMfa, request)

    async def disable_mfa(self, event: NewEvent, mail: SealedMail | None) -> None:
        """Remove the factor and recovery codes; FailedPrecondition (MFA_NOT_ENABLED)."""
        request = pb.DisableMfaRequest(account_id=event.account_id, event=_event(event))
        if mail is not None:
            request.mail.CopyFrom(mail_message(mail))
        await self._caller.unary(self._stub.DisableMfa, request)

    async def replace_recovery_codes(self, event: NewEvent, code_hashes: list[str]) -> None:
        """Replace every recovery code; FailedPrecondition (MFA_NOT_ENABLED)."""
        await self._caller.unary(
            self._stub.ReplaceRecoveryCodes,
            pb.ReplaceRecoveryCodesRequest(
                account_id=event.account_id,
                recovery_code_hashes=code_hashes,
                event=_event(event),
            ),
        )

    async def use_mfa_code(self, account_id: str, code: UsedCode) -> int:
        """Use a step or a recovery code and return the recovery codes left."""
        response = await self._caller.unary(
            self._stub.UseMfaCode, pb.UseMfaCodeRequest(account_id=account_id, code=_code(code))
        )
        return response.recovery_codes_left

    async def fail_mfa_challenge(
        self, token_hash: str, account_id: str, expires_at: datetime, max_attempts: int
    ) -> int:
        """Count a wrong code against an account's challenge and return the attempts left."""
        response = await self._caller.unary(
            self._stub.FailMfaChallenge,
            pb.FailMfaChallengeRequest(
                token_hash=token_hash,
                account_id=account_id,
                expire_time=to_timestamp(expires_at),
                max_attempts=max_attempts,
            ),
        )
        return response.attempts_left

    async def complete_mfa_challenge(
        self, challenge: ChallengeUse, code: UsedCode, account_id: str, session: NewSession
    ) -> tuple[SessionStart, int]:
        """Use the challenge and its code and start the session; return it and the recovery
        codes left."""
        response = await self._caller.unary(
            self._stub.CompleteMfaChallenge,
            pb.CompleteMfaChallengeRequest(
                token_hash=challenge.token_hash,
                code=_code(code),
                session=session_message(account_id, session),
                expire_time=to_timestamp(challenge.expires_at),
                secret_sealed=challenge.secret_sealed,
                clear_attempt_keys=challenge.clear_keys,
            ),
        )
        started = SessionStart(
            session_id=response.session.family_id,
            started_at=to_datetime(response.session.session_start_time),
        )
        return started, response.recovery_codes_left

    async def mark_session_authenticated(self, event: NewEvent) -> datetime:
        """Record that the event's session proved its credentials now; return that time."""
        response = await self._caller.unary(
            self._stub.MarkSessionAuthenticated,
            pb.MarkSessionAuthenticatedRequest(
                account_id=event.account_id, session_id=event.session_id, event=_event(event)
            ),
        )
        return to_datetime(response.auth_time)

    async def record_event(
        self, event: NewEvent, mail: SealedMail | None = None, *, only_new_device: bool = False
    ) -> bool:
        """Append an event (and queue its mail, for a login only from a new device); return
        whether the mail was queued."""
        request = pb.RecordSecurityEventRequest(
            event=_event(event),
            mail_condition=(
                pb.SECURITY_MAIL_CONDITION_NEW_DEVICE
                if only_new_device
                else pb.SECURITY_MAIL_CONDITION_UNSPECIFIED
            ),
        )
        if mail is not None:
            request.mail.CopyFrom(mail_message(mail))
        response = await self._caller.unary(self._stub.RecordSecurityEvent, request)
        return response.mailed

    async def list_events(self, account_id: str, page_size: int, before_id: int) -> EventPage:
        """Return a page of an account's events older than before_id (0: the newest)."""
        response = await self._caller.unary(
            self._stub.ListSecurityEvents,
            pb.ListSecurityEventsRequest(
                account_id=account_id, page_size=page_size, before_id=before_id
            ),
        )
        return EventPage(events=[_stored_event(e) for e in response.events], more=response.more)
