"""AccountSecurityService against the real database (the private one: no sender takes the mails
queued here): failed-login counters, TOTP factors and recovery codes, MFA login challenges,
re-authentication of sessions, and the append-only security log with its new-device mails."""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from data_access.database import Database
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from meshkit.timestamps import to_timestamp
from tests.helpers import AccountFactory, Metadata, caller_metadata, error_info, failure_of

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# A TOTP time step of late 2026 (seconds since the epoch / 30).
STEP = 59_400_000
SECRET = b"sealed:totp-secret"
RACERS = 20

ACCOUNT_NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")
SESSION_NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
CHALLENGE_INVALID = (grpc.StatusCode.NOT_FOUND, "MFA_CHALLENGE_INVALID")
ENROLLMENT_NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "MFA_ENROLLMENT_NOT_FOUND")
CODE_INVALID = (grpc.StatusCode.FAILED_PRECONDITION, "MFA_CODE_INVALID")
NOT_ENABLED = (grpc.StatusCode.FAILED_PRECONDITION, "MFA_NOT_ENABLED")
ALREADY_ENABLED = (grpc.StatusCode.FAILED_PRECONDITION, "MFA_ALREADY_ENABLED")
INVALID = grpc.StatusCode.INVALID_ARGUMENT

LOGIN_SUCCEEDED = pb.SECURITY_EVENT_KIND_LOGIN_SUCCEEDED
NEW_DEVICE = pb.SECURITY_MAIL_CONDITION_NEW_DEVICE


def _hash() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def _hashes(count: int) -> list[str]:
    return [_hash() for _ in range(count)]


def _in(delta: timedelta) -> Timestamp:
    return to_timestamp(datetime.now(UTC) + delta)


def _duration(delta: timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(delta)
    return duration


def _mail() -> pb.SealedMail:
    """A mail of a kind no other test uses (so its outbox rows are this test's)."""
    return pb.SealedMail(kind=f"k_{uuid.uuid4().hex}", sealed=secrets.token_bytes(48))


def _event(
    kind: pb.SecurityEventKind.ValueType,
    *,
    account_id: str = "",
    user_agent: str = "Firefox on Linux",
    client_ip: str = "192.0.2.7",
    session_id: str = "",
    detail: str = "",
) -> pb.NewSecurityEvent:
    return pb.NewSecurityEvent(
        account_id=account_id,
        kind=kind,
        device=pb.SessionDevice(user_agent=user_agent, client_ip=client_ip),
        session_id=session_id,
        detail=detail,
    )


def _code(*, step: int | None = None, recovery: str = "") -> pb.MfaCode:
    if step is not None:
        return pb.MfaCode(step=step)
    return pb.MfaCode(recovery_code_hash=recovery)


def _login_request(account_id: str, token_hash: str | None = None) -> pb.CreateRefreshTokenRequest:
    return pb.CreateRefreshTokenRequest(
        account_id=account_id,
        token_hash=token_hash or _hash(),
        expire_time=_in(DAY),
        session_end_time=_in(30 * DAY),
        device=pb.SessionDevice(user_agent="Safari on iOS", client_ip="2001:db8::1"),
    )


@dataclass
class Security:
    """The private data_access's AccountSecurityService (and AccountStoreService, for sessions),
    its database, and accounts to use them on, as auth_svc reaches them."""

    stub: pb_grpc.AccountSecurityServiceAsyncStub
    accounts: pb_grpc.AccountStoreServiceAsyncStub
    metadata: Metadata
    database: Database
    new_account: AccountFactory

    async def account(self) -> str:
        """A new account's id."""
        return (await self.new_account()).id

    async def record_failure(self, *keys: str, reset_after: timedelta = HOUR) -> list[int]:
        """Count a failure on the keys; return the counts after it, in order."""
        counted = await self.stub.RecordLoginFailure(
            pb.RecordLoginFailureRequest(keys=keys, reset_after=_duration(reset_after)),
            metadata=self.metadata,
        )
        return [counter.failures for counter in counted.counters]

    async def attempts(
        self, *keys: str, reset_after: timedelta = HOUR
    ) -> list[pb.LoginAttemptCounter]:
        """The counters of the keys, in order."""
        read = await self.stub.GetLoginAttempts(
            pb.GetLoginAttemptsRequest(keys=keys, reset_after=_duration(reset_after)),
            metadata=self.metadata,
        )
        return list(read.counters)

    async def mfa(self, account_id: str) -> pb.MfaRecord:
        """The account's factor."""
        read = await self.stub.GetMfa(
            pb.GetMfaRequest(account_id=account_id), metadata=self.metadata
        )
        return read.mfa

    async def start(self, account_id: str, secret: bytes = SECRET) -> None:
        """Start an enrolment with secret."""
        await self.stub.StartMfaEnrollment(
            pb.StartMfaEnrollmentRequest(account_id=account_id, pending_secret_sealed=secret),
            metadata=self.metadata,
        )

    async def confirm(
        self,
        account_id: str,
        *,
        secret: bytes = SECRET,
        step: int = STEP,
        codes: list[str] | None = None,
        mail: pb.SealedMail | None = None,
        ttl: timedelta = HOUR,
    ) -> list[str]:
        """Confirm the pending enrolment; return the recovery-code hashes stored."""
        codes = codes if codes is not None else _hashes(3)
        await self.stub.EnableMfa(
            pb.EnableMfaRequest(
                account_id=account_id,
                pending_secret_sealed=secret,
                used_step=step,
                recovery_code_hashes=codes,
                event=_event(pb.SECURITY_EVENT_KIND_MFA_ENABLED),
                mail=mail,
                enrollment_ttl=_duration(ttl),
            ),
            metadata=self.metadata,
        )
        return codes

    async def enable(self, account_id: str, *, step: int = STEP) -> list[str]:
        """Start and confirm an enrolment; return the recovery-code hashes stored."""
        await self.start(account_id)
        return await self.confirm(account_id, step=step)

    async def use(self, account_id: str, code: pb.MfaCode) -> int:
        """Use a code; return the recovery codes left."""
        used = await self.stub.UseMfaCode(
            pb.UseMfaCodeRequest(account_id=account_id, code=code), metadata=self.metadata
        )
        return used.recovery_codes_left

    @staticmethod
    def challenge() -> str:
        """A new challenge's token hash: auth_svc makes challenges; data_access stores one at
        its first wrong code or its completion."""
        return _hash()

    async def fail(self, token: str, account_id: str, max_attempts: int = 5) -> int:
        """Count a wrong code against an account's challenge; return the attempts left."""
        failed = await self.stub.FailMfaChallenge(
            pb.FailMfaChallengeRequest(
                token_hash=token,
                account_id=account_id,
                expire_time=_in(HOUR),
                max_attempts=max_attempts,
            ),
            metadata=self.metadata,
        )
        return failed.attempts_left

    async def complete(
        self,
        token: str,
        account_id: str,
        code: pb.MfaCode,
        *,
        refresh_token: str | None = None,
        secret: bytes = SECRET,
        clear_keys: tuple[str, ...] = (),
    ) -> pb.CompleteMfaChallengeResponse:
        """Complete a challenge with code (checked against secret), starting a session of
        account_id."""
        completed: pb.CompleteMfaChallengeResponse = await self.stub.CompleteMfaChallenge(
            pb.CompleteMfaChallengeRequest(
                token_hash=token,
                code=code,
                session=_login_request(account_id, refresh_token),
                expire_time=_in(HOUR),
                secret_sealed=secret,
                clear_attempt_keys=clear_keys,
            ),
            metadata=self.metadata,
        )
        return completed

    async def login(self, account_id: str) -> tuple[str, pb.CreateRefreshTokenResponse]:
        """Start a session; return its refresh token hash and the answer."""
        token = _hash()
        started = await self.accounts.CreateRefreshToken(
            _login_request(account_id, token), metadata=self.metadata
        )
        return token, started

    async def rotate(
        self, token: str, successor: str | None = None, *, window: timedelta | None = None
    ) -> tuple[str, pb.RotateRefreshTokenResponse]:
        """Refresh with token; return the successor and the answer."""
        successor = successor or _hash()
        request = pb.RotateRefreshTokenRequest(
            token_hash=token, new_token_hash=successor, new_expire_time=_in(DAY)
        )
        if window is not None:
            request.reuse_window.FromTimedelta(window)
        rotated = await self.accounts.RotateRefreshToken(request, metadata=self.metadata)
        return successor, rotated

    async def sessions(self, account_id: str) -> list[str]:
        """The ids of the account's live sessions."""
        listed = await self.accounts.ListSessions(
            pb.ListSessionsRequest(account_id=account_id), metadata=self.metadata
        )
        return [session.id for session in listed.sessions]

    async def mark(
        self, account_id: str, session_id: str, *, event: pb.NewSecurityEvent | None = None
    ) -> Timestamp:
        """Mark a session re-authenticated; return the time."""
        marked = await self.stub.MarkSessionAuthenticated(
            pb.MarkSessionAuthenticatedRequest(
                account_id=account_id,
                session_id=session_id,
                event=_event(pb.SECURITY_EVENT_KIND_REAUTHENTICATED) if event is None else event,
            ),
            metadata=self.metadata,
        )
        return marked.auth_time

    async def record(
        self,
        event: pb.NewSecurityEvent,
        *,
        mail: pb.SealedMail | None = None,
        condition: pb.SecurityMailCondition.ValueType = pb.SECURITY_MAIL_CONDITION_UNSPECIFIED,
    ) -> pb.RecordSecurityEventResponse:
        """Append an event."""
        recorded: pb.RecordSecurityEventResponse = await self.stub.RecordSecurityEvent(
            pb.RecordSecurityEventRequest(event=event, mail=mail, mail_condition=condition),
            metadata=self.metadata,
        )
        return recorded

    async def page(
        self, account_id: str, page_size: int = 0, before_id: int = 0
    ) -> pb.ListSecurityEventsResponse:
        """A page of the account's events."""
        listed: pb.ListSecurityEventsResponse = await self.stub.ListSecurityEvents(
            pb.ListSecurityEventsRequest(
                account_id=account_id, page_size=page_size, before_id=before_id
            ),
            metadata=self.metadata,
        )
        return listed

    async def kinds(self, account_id: str) -> list[pb.SecurityEventKind.ValueType]:
        """The kinds of the account's latest events, newest first."""
        return [event.kind for event in (await self.page(account_id, 100)).events]

    async def queued(self, kind: str) -> int:
        """How many mails of a kind are queued."""
        async with self.database.transaction() as session:
            count = await session.scalar(
                text("SELECT count(*) FROM outbox WHERE kind = :kind"), {"kind": kind}
            )
        return int(count or 0)

    async def execute(self, statement: str, **params: object) -> None:
        """Run one statement as no RPC does (ages rows)."""
        async with self.database.transaction() as session:
            await session.execute(text(statement), params)


@pytest.fixture(scope="module")
def private_security(private_channel: grpc.aio.Channel) -> pb_grpc.AccountSecurityServiceAsyncStub:
    """AccountSecurityService stub of the private data_access."""
    return pb_grpc.AccountSecurityServiceStub(private_channel)


@pytest.fixture
def security(
    private_security: pb_grpc.AccountSecurityServiceAsyncStub,
    private_accounts: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    private_database: Database,
    new_private_account: AccountFactory,
) -> Security:
    """The account defences of the private data_access."""
    return Security(
        private_security, private_accounts, as_auth, private_database, new_private_account
    )


def _key() -> str:
    return f"pair:{uuid.uuid4().hex}:192.0.2.0/24"


# Failed-login counters.


async def test_failures_are_counted_per_key_and_read_back_in_the_order_asked(
    security: Security,
) -> None:
    first, second, unknown = _key(), _key(), _key()

    assert await security.record_failure(first, second) == [1, 1]
    assert await security.record_failure(first) == [2]

    counters = await security.attempts(second, unknown, first)
    assert [(c.key, c.failures) for c in counters] == [(second, 1), (unknown, 0), (first, 2)]
    assert counters[0].HasField("last_failure_time")
    assert not counters[1].HasField("last_failure_time")
    assert counters[2].last_failure_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) - HOUR


async def test_a_counter_whose_last_failure_is_older_than_reset_after_reads_zero_and_restarts(
    security: Security,
) -> None:
    key = _key()
    await security.record_failure(key)
    await security.record_failure(key)
    await security.execute(
        "UPDATE login_attempts SET last_failure_at = now() - interval '2 hours' WHERE key = :key",
        key=key,
    )

    [stale] = await security.attempts(key, reset_after=HOUR)
    [kept] = await security.attempts(key, reset_after=3 * HOUR)

    assert (stale.failures, stale.HasField("last_failure_time")) == (0, False)
    assert kept.failures == 2
    assert await security.record_failure(key, reset_after=3 * HOUR) == [3]
    await security.execute(
        "UPDATE login_attempts SET last_failure_at = now() - interval '2 hours' WHERE key = :key",
        key=key,
    )
    assert await security.record_failure(key, reset_after=HOUR) == [1]


async def test_clearing_forgets_the_counters_of_the_keys_given(security: Security) -> None:
    cleared, kept, unknown = _key(), _key(), _key()
    await security.record_failure(cleared, kept)

    await security.stub.ClearLoginAttempts(
        pb.ClearLoginAttemptsRequest(keys=[cleared, unknown]), metadata=security.metadata
    )

    assert [c.failures for c in await security.attempts(cleared, kept)] == [0, 1]
    assert await security.record_failure(cleared) == [1]


async def test_concurrent_failures_on_shared_keys_are_each_counted_once(
    security: Security,
) -> None:
    shared, other = _key(), _key()
    # Each call names both keys, in either order: none may deadlock or lose a count.
    orders = [[shared, other] if random.random() < 0.5 else [other, shared] for _ in range(RACERS)]

    counted = await asyncio.gather(*(security.record_failure(*keys) for keys in orders))

    seen = sorted(counts[keys.index(shared)] for keys, counts in zip(orders, counted, strict=True))
    assert seen == list(range(1, RACERS + 1))
    assert [c.failures for c in await security.attempts(shared, other)] == [RACERS, RACERS]


BAD_KEYS = [
    ([], "keys"),
    ([f"k{n}" for n in range(9)], "keys"),
    (["x" * 201], "keys[0]"),
    (["ok", ""], "keys[1]"),
    (["ok", "nul\x00"], "keys[1]"),
    (["same", "same"], "keys[1]"),
]


@pytest.mark.parametrize(("keys", "field"), BAD_KEYS)
async def test_bad_keys_are_invalid_argument_for_every_counter_call(
    security: Security, keys: list[str], field: str
) -> None:
    calls: list[Awaitable[Any]] = [
        security.stub.GetLoginAttempts(
            pb.GetLoginAttemptsRequest(keys=keys, reset_after=_duration(HOUR)),
            metadata=security.metadata,
        ),
        security.stub.RecordLoginFailure(
            pb.RecordLoginFailureRequest(keys=keys, reset_after=_duration(HOUR)),
            metadata=security.metadata,
        ),
        security.stub.ClearLoginAttempts(
            pb.ClearLoginAttemptsRequest(keys=keys), metadata=security.metadata
        ),
    ]
    for call in calls:
        failure = await failure_of(call)
        assert (failure.code, failure.fields) == (INVALID, [field])


@pytest.mark.parametrize("reset_after", [timedelta(0), 2 * DAY], ids=["unset", "over-a-day"])
async def test_a_reset_after_a_counter_cannot_live_for_is_invalid_argument(
    security: Security, reset_after: timedelta
) -> None:
    for call in (
        security.record_failure(_key(), reset_after=reset_after),
        security.attempts(_key(), reset_after=reset_after),
    ):
        failure = await failure_of(call)
        assert (failure.code, failure.fields) == (INVALID, ["reset_after"])


# TOTP factors and recovery codes.


async def test_an_account_starts_without_mfa_and_unknown_accounts_are_not_found(
    security: Security,
) -> None:
    mfa = await security.mfa(await security.account())

    assert mfa == pb.MfaRecord()
    for account_id in (str(uuid.uuid4()), "nope"):
        failure = await failure_of(security.mfa(account_id))
        assert (failure.code, failure.reason) == ACCOUNT_NOT_FOUND


async def test_an_enrolment_confirmed_in_time_turns_mfa_on_with_its_codes_event_and_mail(
    security: Security,
) -> None:
    account_id = await security.account()
    await security.start(account_id, b"first")
    await security.start(account_id, SECRET)  # a new enrolment replaces the earlier one
    pending = await security.mfa(account_id)
    assert (pending.enabled, pending.pending_secret_sealed) == (False, SECRET)
    assert pending.HasField("pending_start_time")
    mail = _mail()

    await security.confirm(account_id, codes=_hashes(4), mail=mail)

    mfa = await security.mfa(account_id)
    assert (mfa.enabled, mfa.secret_sealed, mfa.last_used_step) == (True, SECRET, STEP)
    assert (mfa.recovery_codes_left, mfa.pending_secret_sealed) == (4, b"")
    assert mfa.HasField("enable_time")
    assert not mfa.HasField("pending_start_time")
    assert await security.kinds(account_id) == [pb.SECURITY_EVENT_KIND_MFA_ENABLED]
    assert await security.queued(mail.kind) == 1


async def test_an_enrolment_is_refused_while_mfa_is_on(security: Security) -> None:
    account_id = await security.account()
    await security.enable(account_id)

    refused_start = await failure_of(security.start(account_id, b"another"))
    refused_enable = await failure_of(security.confirm(account_id))

    assert (refused_start.code, refused_start.reason) == ALREADY_ENABLED
    assert (refused_enable.code, refused_enable.reason) == ALREADY_ENABLED
    assert (await security.mfa(account_id)).secret_sealed == SECRET


async def test_an_enrolment_of_an_unknown_account_is_not_found(security: Security) -> None:
    for account_id in (str(uuid.uuid4()), "nope"):
        failure = await failure_of(security.start(account_id))
        assert (failure.code, failure.reason) == ACCOUNT_NOT_FOUND


async def test_enabling_needs_the_pending_secret_itself_and_in_time(security: Security) -> None:
    account_id = await security.account()
    mail = _mail()

    none_pending = await failure_of(security.confirm(account_id, mail=mail))
    await security.start(account_id, b"replaced")
    await security.start(account_id, SECRET)
    replaced = await failure_of(security.confirm(account_id, secret=b"replaced", mail=mail))
    await security.execute(
        "UPDATE mfa_factors SET pending_started_at = now() - interval '2 hours' "
        "WHERE account_id = :id",
        id=uuid.UUID(account_id),
    )
    too_late = await failure_of(security.confirm(account_id, mail=mail, ttl=HOUR))

    for failure in (none_pending, replaced, too_late):
        assert (failure.code, failure.reason) == ENROLLMENT_NOT_FOUND
    unknown = await failure_of(security.confirm(str(uuid.uuid4())))
    assert (unknown.code, unknown.reason) == ENROLLMENT_NOT_FOUND
    # Nothing of a refused confirmation was stored.
    mfa = await security.mfa(account_id)
    assert (mfa.enabled, mfa.recovery_codes_left, mfa.pending_secret_sealed) == (False, 0, SECRET)
    assert await security.kinds(account_id) == []
    assert await security.queued(mail.kind) == 0
    # A longer enrolment time still takes it.
    await security.confirm(account_id, ttl=3 * HOUR)
    assert (await security.mfa(account_id)).enabled


@pytest.mark.parametrize(
    ("change", "bad"),
    [
        ({"recovery_code_hashes": []}, ["recovery_code_hashes"]),
        ({"recovery_code_hashes": _hashes(21)}, ["recovery_code_hashes"]),
        ({"recovery_code_hashes": ["not-hex"]}, ["recovery_code_hashes[0]"]),
        ({"recovery_code_hashes": ["a" * 64, "A" * 64]}, ["recovery_code_hashes[1]"]),
        ({"used_step": 0}, ["used_step"]),
        ({"pending_secret_sealed": b""}, ["pending_secret_sealed"]),
        ({"pending_secret_sealed": b"x" * 1025}, ["pending_secret_sealed"]),
        ({"event": pb.NewSecurityEvent()}, ["event.kind"]),
        ({"event": _event(LOGIN_SUCCEEDED, detail="d" * 201)}, ["event.detail"]),
        ({"event": _event(LOGIN_SUCCEEDED, account_id=str(uuid.uuid4()))}, ["event.account_id"]),
        ({"enrollment_ttl": None}, ["enrollment_ttl"]),
        ({"mail": pb.SealedMail(kind="k")}, ["mail.sealed"]),
    ],
    ids=[
        "no-codes",
        "21-codes",
        "code-not-hex",
        "repeated-code",
        "no-step",
        "no-secret",
        "long-secret",
        "no-kind",
        "long-detail",
        "other-account",
        "no-ttl",
        "empty-mail",
    ],
)
async def test_a_bad_enable_is_invalid_argument(
    security: Security, change: dict[str, Any], bad: list[str]
) -> None:
    account_id = await security.account()
    await security.start(account_id)
    fields: dict[str, Any] = {
        "account_id": account_id,
        "pending_secret_sealed": SECRET,
        "used_step": STEP,
        "recovery_code_hashes": _hashes(2),
        "event": _event(pb.SECURITY_EVENT_KIND_MFA_ENABLED),
        "enrollment_ttl": _duration(HOUR),
        **change,
    }
    request = pb.EnableMfaRequest(**{name: v for name, v in fields.items() if v is not None})

    failure = await failure_of(security.stub.EnableMfa(request, metadata=security.metadata))

    assert (failure.code, failure.fields) == (INVALID, bad)


async def test_disabling_removes_the_factor_codes_and_voids_challenges_with_event_and_mail(
    security: Security,
) -> None:
    account_id = await security.account()
    await security.enable(account_id)
    challenge = security.challenge()
    mail = _mail()

    await security.stub.DisableMfa(
        pb.DisableMfaRequest(
            account_id=account_id, event=_event(pb.SECURITY_EVENT_KIND_MFA_DISABLED), mail=mail
        ),
        metadata=security.metadata,
    )

    assert await security.mfa(account_id) == pb.MfaRecord()
    assert await security.queued(mail.kind) == 1
    assert (await security.kinds(account_id))[0] == pb.SECURITY_EVENT_KIND_MFA_DISABLED
    # A login that passed its password step before cannot finish now.
    refused = await failure_of(security.complete(challenge, account_id, _code(step=STEP + 1)))
    assert (refused.code, refused.reason) == CHALLENGE_INVALID
    assert await security.sessions(account_id) == []
    again = await failure_of(
        security.stub.DisableMfa(
            pb.DisableMfaRequest(
                account_id=account_id, event=_event(pb.SECURITY_EVENT_KIND_MFA_DISABLED)
            ),
            metadata=security.metadata,
        )
    )
    assert (again.code, again.reason) == NOT_ENABLED
    # MFA can be turned on again, with a new secret.
    await security.start(account_id, b"new secret")
    await security.confirm(account_id, secret=b"new secret", step=STEP - 5)
    assert (await security.mfa(account_id)).last_used_step == STEP - 5


async def test_new_recovery_codes_replace_every_old_one(security: Security) -> None:
    account_id = await security.account()
    old = await security.enable(account_id)
    new = _hashes(5)

    await security.stub.ReplaceRecoveryCodes(
        pb.ReplaceRecoveryCodesRequest(
            account_id=account_id,
            recovery_code_hashes=new,
            event=_event(pb.SECURITY_EVENT_KIND_RECOVERY_CODES_REGENERATED, detail="5 codes"),
        ),
        metadata=security.metadata,
    )

    refused = await failure_of(security.use(account_id, _code(recovery=old[0])))
    assert (refused.code, refused.reason) == CODE_INVALID
    assert await security.use(account_id, _code(recovery=new[0])) == 4
    [latest, *_] = (await security.page(account_id)).events
    assert (latest.kind, latest.detail) == (
        pb.SECURITY_EVENT_KIND_RECOVERY_CODES_REGENERATED,
        "5 codes",
    )


async def test_replacing_recovery_codes_needs_mfa_on(security: Security) -> None:
    account_id = await security.account()

    failure = await failure_of(
        security.stub.ReplaceRecoveryCodes(
            pb.ReplaceRecoveryCodesRequest(
                account_id=account_id,
                recovery_code_hashes=_hashes(2),
                event=_event(pb.SECURITY_EVENT_KIND_RECOVERY_CODES_REGENERATED),
            ),
            metadata=security.metadata,
        )
    )

    assert (failure.code, failure.reason) == NOT_ENABLED
    assert await security.kinds(account_id) == []


async def test_a_step_is_accepted_only_when_later_than_the_last_used_one(
    security: Security,
) -> None:
    account_id = await security.account()
    await security.enable(account_id, step=STEP)

    confirming_step = await failure_of(security.use(account_id, _code(step=STEP)))
    assert await security.use(account_id, _code(step=STEP + 2)) == 3
    replayed = await failure_of(security.use(account_id, _code(step=STEP + 2)))
    older = await failure_of(security.use(account_id, _code(step=STEP + 1)))

    for failure in (confirming_step, replayed, older):
        assert (failure.code, failure.reason) == CODE_INVALID
    assert (await security.mfa(account_id)).last_used_step == STEP + 2
    assert await security.use(account_id, _code(step=STEP + 3)) == 3


async def test_a_recovery_code_is_accepted_once(security: Security) -> None:
    account_id = await security.account()
    codes = await security.enable(account_id)

    # Hex digits in any case name the same code.
    assert await security.use(account_id, _code(recovery=codes[1].upper())) == 2
    twice = await failure_of(security.use(account_id, _code(recovery=codes[1])))
    unknown = await failure_of(security.use(account_id, _code(recovery=_hash())))

    for failure in (twice, unknown):
        assert (failure.code, failure.reason) == CODE_INVALID
    assert (await security.mfa(account_id)).recovery_codes_left == 2


async def test_codes_of_an_account_without_mfa_are_refused_as_such(security: Security) -> None:
    account_id = await security.account()

    for code in (_code(step=STEP), _code(recovery=_hash())):
        failure = await failure_of(security.use(account_id, code))
        assert (failure.code, failure.reason) == NOT_ENABLED
    malformed = await failure_of(security.use("nope", _code(step=STEP)))
    assert (malformed.code, malformed.reason) == ACCOUNT_NOT_FOUND


@pytest.mark.parametrize(
    ("code", "field"),
    [
        (pb.MfaCode(), "code"),
        (pb.MfaCode(step=0), "code.step"),
        (pb.MfaCode(step=-1), "code.step"),
        (pb.MfaCode(recovery_code_hash="abc"), "code.recovery_code_hash"),
    ],
    ids=["none", "zero-step", "negative-step", "bad-hash"],
)
async def test_a_malformed_code_is_invalid_argument(
    security: Security, code: pb.MfaCode, field: str
) -> None:
    failure = await failure_of(security.use(str(uuid.uuid4()), code))

    assert (failure.code, failure.fields) == (INVALID, [field])


@pytest.mark.parametrize("kind", ["step", "recovery"])
async def test_of_concurrent_uses_of_one_code_exactly_one_wins(
    security: Security, kind: str
) -> None:
    account_id = await security.account()
    codes = await security.enable(account_id)
    code = _code(step=STEP + 1) if kind == "step" else _code(recovery=codes[0])

    outcomes = await asyncio.gather(
        *(security.use(account_id, code) for _ in range(RACERS)), return_exceptions=True
    )

    won = [outcome for outcome in outcomes if isinstance(outcome, int)]
    lost = [outcome for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError)]
    assert len(won) == 1
    assert len(lost) == RACERS - 1
    assert {(error.code(), error_info(error).reason) for error in lost} == {CODE_INVALID}


# MFA login challenges.


async def test_a_challenge_is_failed_and_completed_into_a_session(security: Security) -> None:
    account = await security.new_account()
    codes = await security.enable(account.id)
    token = security.challenge()
    assert await security.fail(token, account.id, max_attempts=5) == 4
    assert await security.fail(token.upper(), account.id, max_attempts=5) == 3

    refresh_token = _hash()
    completed = await security.complete(
        token, account.id, _code(recovery=codes[2]), refresh_token=refresh_token
    )

    assert completed.recovery_codes_left == 2
    assert await security.sessions(account.id) == [completed.session.family_id]
    _, rotated = await security.rotate(refresh_token)
    assert rotated.family_id == completed.session.family_id
    assert rotated.session_start_time == completed.session.session_start_time
    # A completed challenge is used: neither completed nor failed again.
    for call in (
        security.complete(token, account.id, _code(step=STEP + 9)),
        security.fail(token, account.id),
    ):
        again = await failure_of(call)
        assert (again.code, again.reason) == CHALLENGE_INVALID


async def test_completing_forgets_the_failure_counters_it_names(security: Security) -> None:
    account_id = await security.account()
    await security.enable(account_id)
    pair, subject, client = (f"test:{uuid.uuid4().hex}" for _ in range(3))
    await security.record_failure(pair, subject, client)

    await security.complete(
        security.challenge(), account_id, _code(step=STEP + 1), clear_keys=(pair, subject)
    )

    assert [c.failures for c in await security.attempts(pair, subject, client)] == [0, 0, 1]


async def test_a_challenge_is_void_once_the_factor_changed(security: Security) -> None:
    account_id = await security.account()
    await security.enable(account_id)
    token = security.challenge()

    failure = await failure_of(
        security.complete(token, account_id, _code(step=STEP + 1), secret=b"sealed:an-older-one")
    )

    assert (failure.code, failure.reason) == CHALLENGE_INVALID
    assert await security.sessions(account_id) == []
    # The refused completion used no code.
    assert await security.use(account_id, _code(step=STEP + 1)) == 3


async def test_a_challenge_is_used_up_after_max_attempts(security: Security) -> None:
    account_id = await security.account()
    await security.enable(account_id)
    token = security.challenge()

    assert [await security.fail(token, account_id, max_attempts=3) for _ in range(3)] == [2, 1, 0]

    for call in (
        security.fail(token, account_id, max_attempts=3),
        security.complete(token, account_id, _code(step=STEP + 1)),
    ):
        failure = await failure_of(call)
        assert (failure.code, failure.reason) == CHALLENGE_INVALID
    assert await security.sessions(account_id) == []


async def test_a_challenge_completes_only_into_a_session_of_its_own_account(
    security: Security,
) -> None:
    owner, someone_else = await security.account(), await security.account()
    await security.enable(owner)
    await security.enable(someone_else)
    token = security.challenge()
    assert await security.fail(token, owner) == 4

    for account_id in (someone_else, "nope", str(uuid.uuid4())):
        failure = await failure_of(security.complete(token, account_id, _code(step=STEP + 1)))
        assert (failure.code, failure.reason) == CHALLENGE_INVALID
        failure = await failure_of(security.fail(token, account_id))
        assert (failure.code, failure.reason) == CHALLENGE_INVALID

    assert await security.sessions(someone_else) == []
    # The challenge and the code are still there for the owner.
    completed = await security.complete(token, owner, _code(step=STEP + 1))
    assert await security.sessions(owner) == [completed.session.family_id]


async def test_a_refused_code_leaves_the_challenge_usable_and_starts_nothing(
    security: Security,
) -> None:
    account_id = await security.account()
    await security.enable(account_id)
    token = security.challenge()
    await security.use(account_id, _code(step=STEP + 1))

    failure = await failure_of(security.complete(token, account_id, _code(step=STEP + 1)))

    assert (failure.code, failure.reason) == CODE_INVALID
    assert await security.sessions(account_id) == []
    completed = await security.complete(token, account_id, _code(step=STEP + 2))
    assert await security.sessions(account_id) == [completed.session.family_id]


async def test_a_challenge_of_an_account_whose_mfa_is_off_completes_nothing(
    security: Security,
) -> None:
    account_id = await security.account()

    failure = await failure_of(
        security.complete(security.challenge(), account_id, _code(step=STEP))
    )

    assert (failure.code, failure.reason) == CHALLENGE_INVALID
    assert await security.sessions(account_id) == []


async def test_of_concurrent_completions_of_one_challenge_one_starts_a_session(
    security: Security,
) -> None:
    account_id = await security.account()
    codes = await security.enable(account_id)
    token = security.challenge()
    # Distinct codes, each good on its own: only the challenge is shared.
    attempts = [_code(step=STEP + 1 + n) for n in range(RACERS - len(codes))]
    attempts += [_code(recovery=code) for code in codes]

    outcomes = await asyncio.gather(
        *(security.complete(token, account_id, code) for code in attempts),
        return_exceptions=True,
    )

    won = [o for o in outcomes if isinstance(o, pb.CompleteMfaChallengeResponse)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 1
    assert {(error.code(), error_info(error).reason) for error in lost} == {CHALLENGE_INVALID}
    assert len(lost) == RACERS - 1
    assert await security.sessions(account_id) == [won[0].session.family_id]


async def test_twenty_concurrent_wrong_codes_count_twenty(security: Security) -> None:
    account_id = await security.account()
    token = security.challenge()

    left = await asyncio.gather(
        *(security.fail(token, account_id, max_attempts=RACERS + 1) for _ in range(RACERS))
    )

    assert sorted(left) == list(range(1, RACERS + 1))


async def test_a_malformed_completion_or_failure_is_invalid_argument(security: Security) -> None:
    request = pb.CompleteMfaChallengeRequest(
        token_hash="x",
        code=pb.MfaCode(step=STEP),
        session=pb.CreateRefreshTokenRequest(
            account_id=str(uuid.uuid4()), token_hash="y", session_end_time=_in(DAY)
        ),
        expire_time=_in(HOUR),
        secret_sealed=SECRET,
    )

    no_expiry = await failure_of(
        security.stub.CompleteMfaChallenge(request, metadata=security.metadata)
    )
    request.session.expire_time.CopyFrom(_in(HOUR))
    request.session.device.client_ip = "not an address"
    request.clear_attempt_keys.extend(["k", "k"])
    bad_fields = await failure_of(
        security.stub.CompleteMfaChallenge(request, metadata=security.metadata)
    )
    bad_max = await failure_of(security.fail(_hash(), str(uuid.uuid4()), max_attempts=0))
    no_time = await failure_of(
        security.stub.FailMfaChallenge(
            pb.FailMfaChallengeRequest(
                token_hash=_hash(), account_id=str(uuid.uuid4()), max_attempts=5
            ),
            metadata=security.metadata,
        )
    )

    assert (no_expiry.code, no_expiry.fields) == (INVALID, ["session.expire_time"])
    assert (bad_fields.code, sorted(bad_fields.fields)) == (
        INVALID,
        ["clear_attempt_keys[1]", "session.device.client_ip", "session.token_hash", "token_hash"],
    )
    assert (bad_max.code, bad_max.fields) == (INVALID, ["max_attempts"])
    assert (no_time.code, no_time.fields) == (INVALID, ["expire_time"])


async def test_a_re_authentication_is_the_auth_time_of_the_sessions_later_refreshes(
    security: Security,
) -> None:
    account_id = await security.account()
    token, started = await security.login(account_id)
    token, first = await security.rotate(token)
    assert first.auth_time == started.session_start_time

    auth_time = await security.mark(account_id, started.family_id)

    assert auth_time.ToDatetime() > started.session_start_time.ToDatetime()
    window = timedelta(seconds=30)
    successor, rotated = await security.rotate(token, window=window)
    _, repeated = await security.rotate(token, successor, window=window)
    assert repeated.repeated
    assert rotated.auth_time == repeated.auth_time == auth_time
    assert rotated.session_start_time == started.session_start_time
    [event] = (await security.page(account_id)).events
    assert (event.kind, event.session_id) == (
        pb.SECURITY_EVENT_KIND_REAUTHENTICATED,
        started.family_id,
    )


async def test_only_a_live_session_of_the_account_can_be_re_authenticated(
    security: Security,
) -> None:
    account_id, someone_else = await security.account(), await security.account()
    _, theirs = await security.login(someone_else)
    logged_out_token, logged_out = await security.login(account_id)
    await security.accounts.RevokeRefreshToken(
        pb.RevokeRefreshTokenRequest(token_hash=logged_out_token), metadata=security.metadata
    )
    _, over = await security.login(account_id)
    await security.execute(
        "UPDATE sessions SET ends_at = now() - interval '1 second' WHERE id = :id",
        id=uuid.UUID(over.family_id),
    )

    for session_id in (
        theirs.family_id,
        logged_out.family_id,
        over.family_id,
        str(uuid.uuid4()),
        "nope",
    ):
        failure = await failure_of(security.mark(account_id, session_id))
        assert (failure.code, failure.reason) == SESSION_NOT_FOUND, session_id
    malformed = await failure_of(security.mark("nope", theirs.family_id))
    assert (malformed.code, malformed.reason) == SESSION_NOT_FOUND
    assert await security.kinds(account_id) == []
    bad_event = await failure_of(
        security.mark(someone_else, theirs.family_id, event=pb.NewSecurityEvent())
    )
    assert (bad_event.code, bad_event.fields) == (INVALID, ["event.kind"])


# The security log.


async def test_every_kind_of_event_is_recorded_and_listed_newest_first(
    security: Security,
) -> None:
    account_id = await security.account()
    _, started = await security.login(account_id)
    kinds = [
        value
        for value in pb.SecurityEventKind.values()
        if value != pb.SECURITY_EVENT_KIND_UNSPECIFIED
    ]

    for kind in kinds:
        recorded = await security.record(
            _event(
                kind,
                account_id=account_id,
                client_ip="2001:DB8::7",
                session_id=started.family_id,
                detail=f"kind {kind}",
            )
        )
        assert (recorded.recorded, recorded.mailed) == (True, False)

    listed = await security.page(account_id, 100)
    assert [event.kind for event in listed.events] == kinds[::-1]
    assert not listed.more
    newest = listed.events[0]
    assert newest.device == pb.SessionDevice(user_agent="Firefox on Linux", client_ip="2001:db8::7")
    assert (newest.session_id, newest.detail) == (started.family_id, f"kind {kinds[-1]}")
    assert newest.create_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) - HOUR
    assert [event.id for event in listed.events] == sorted(
        (event.id for event in listed.events), reverse=True
    )


async def test_an_event_of_an_unknown_account_is_not_recorded(security: Security) -> None:
    mail = _mail()

    for account_id in (str(uuid.uuid4()), "nope", ""):
        recorded = await security.record(_event(LOGIN_SUCCEEDED, account_id=account_id), mail=mail)
        assert (recorded.recorded, recorded.mailed) == (False, False)

    assert await security.queued(mail.kind) == 0


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (pb.NewSecurityEvent(), "event.kind"),
        (_event(LOGIN_SUCCEEDED, detail="d" * 201), "event.detail"),
        (_event(LOGIN_SUCCEEDED, user_agent="u" * 513), "event.device.user_agent"),
        (_event(LOGIN_SUCCEEDED, client_ip="999.1.1.1"), "event.device.client_ip"),
        (_event(LOGIN_SUCCEEDED, session_id="nope"), "event.session_id"),
    ],
    ids=["no-kind", "long-detail", "long-user-agent", "bad-ip", "bad-session"],
)
async def test_a_malformed_event_is_invalid_argument(
    security: Security, event: pb.NewSecurityEvent, field: str
) -> None:
    account_id = await security.account()
    request = pb.NewSecurityEvent()
    request.CopyFrom(event)
    request.account_id = account_id

    failure = await failure_of(security.record(request))

    assert (failure.code, failure.fields) == (INVALID, [field])
    assert await security.kinds(account_id) == []


async def test_pages_stay_stable_while_new_events_are_appended(security: Security) -> None:
    account_id = await security.account()

    async def append(count: int) -> None:
        for _ in range(count):
            await security.record(_event(LOGIN_SUCCEEDED, account_id=account_id))

    await append(5)
    first = await security.page(account_id, 2)
    await append(2)  # newer ones than the first page: the next pages do not see them
    second = await security.page(account_id, 2, first.events[-1].id)
    third = await security.page(account_id, 2, second.events[-1].id)

    ids = [event.id for page in (first, second, third) for event in page.events]
    assert len(ids) == len(set(ids)) == 5
    assert ids == sorted(ids, reverse=True)
    assert (first.more, second.more, third.more) == (True, True, False)
    assert len((await security.page(account_id)).events) == 7  # page_size 0: the default
    assert (await security.page(str(uuid.uuid4()))).events == []


@pytest.mark.parametrize(
    ("page_size", "before_id", "field"),
    [(101, 0, "page_size"), (-1, 0, "page_size"), (10, -1, "before_id")],
)
async def test_a_page_out_of_bounds_is_invalid_argument(
    security: Security, page_size: int, before_id: int, field: str
) -> None:
    failure = await failure_of(security.page(str(uuid.uuid4()), page_size, before_id))

    assert (failure.code, failure.fields) == (INVALID, [field])


async def test_events_of_a_malformed_account_id_are_not_found(security: Security) -> None:
    failure = await failure_of(security.page("nope"))

    assert (failure.code, failure.reason) == ACCOUNT_NOT_FOUND


async def test_the_security_log_is_append_only(security: Security) -> None:
    account_id = await security.account()
    await security.record(_event(LOGIN_SUCCEEDED, account_id=account_id, detail="as it was"))

    with pytest.raises(DBAPIError, match="append-only"):
        await security.execute(
            "UPDATE security_events SET detail = 'rewritten' WHERE account_id = :id",
            id=uuid.UUID(account_id),
        )

    [event] = (await security.page(account_id)).events
    assert event.detail == "as it was"


async def test_a_new_device_mail_goes_only_for_a_user_agent_new_to_an_account_with_logins(
    security: Security,
) -> None:
    account_id = await security.account()
    mail = _mail()

    async def login_from(user_agent: str) -> bool:
        recorded = await security.record(
            _event(LOGIN_SUCCEEDED, account_id=account_id, user_agent=user_agent),
            mail=mail,
            condition=NEW_DEVICE,
        )
        assert recorded.recorded
        return recorded.mailed

    # The very first login: no device to compare with, nothing to tell.
    assert not await login_from("Firefox on Linux")
    assert not await login_from("Firefox on Linux")
    # A failed login from a device is no successful one to compare with later.
    await security.record(
        _event(pb.SECURITY_EVENT_KIND_LOGIN_FAILED, account_id=account_id, user_agent="Safari")
    )
    assert await login_from("Safari")
    assert not await login_from("Safari")
    assert await security.queued(mail.kind) == 1
    # Without the condition a mail goes every time; without a mail none does.
    always = await security.record(_event(LOGIN_SUCCEEDED, account_id=account_id), mail=mail)
    silent = await security.record(
        _event(LOGIN_SUCCEEDED, account_id=account_id, user_agent="curl"), condition=NEW_DEVICE
    )
    assert (always.mailed, silent.mailed) == (True, False)
    assert await security.queued(mail.kind) == 2


async def test_concurrent_logins_from_one_new_device_mail_once(security: Security) -> None:
    account_id = await security.account()
    await security.record(_event(LOGIN_SUCCEEDED, account_id=account_id, user_agent="old"))
    mail = _mail()

    outcomes = await asyncio.gather(
        *(
            security.record(
                _event(LOGIN_SUCCEEDED, account_id=account_id, user_agent="new"),
                mail=mail,
                condition=NEW_DEVICE,
            )
            for _ in range(RACERS // 2)
        )
    )

    assert sum(outcome.mailed for outcome in outcomes) == 1
    assert await security.queued(mail.kind) == 1


# Who may call.


@pytest.mark.parametrize("caller", ["user_svc", "storage_svc"])
async def test_only_auth_svc_may_call_the_account_security_service(
    security: Security, mesh_secret: str, caller: str
) -> None:
    failure = await failure_of(
        security.stub.GetMfa(
            pb.GetMfaRequest(account_id=str(uuid.uuid4())),
            metadata=caller_metadata(mesh_secret, caller),
        )
    )

    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_ALLOWED",
    )
