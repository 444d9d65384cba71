"""In-memory stand-ins for what auth_svc's flows talk to (data_access's AccountStoreService and
AccountSecurityService, the mailer), following the documented behaviour of each call, on a clock
the tests move. Imported by the auth_svc unit tests; not a test module itself."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from auth_svc.accounts import (
    Account,
    Device,
    MailedToken,
    MailKind,
    NewSession,
    Rotated,
    SealedMail,
    SessionStart,
    StoredCredentials,
    TakenNotice,
)
from auth_svc.activity import SecurityLog
from auth_svc.authenticator import LoginGuards
from auth_svc.captcha import CaptchaVerifier, NoCaptcha
from auth_svc.login_defence import DefencePolicy, LoginDefence
from auth_svc.mfa import ChallengeBox, MfaSettings, SecondFactor, SecretBox
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
from meshkit.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    invalid,
)
from meshkit.reasons import Reason

PEPPER = "unit-pepper-for-the-account-defences"
# The limits data_access puts on login-attempt keys (data_access/login_attempts.py).
KEYS_MAX = 8
KEY_MAX = 200
COUNTER_IDLE_MAX_SECONDS = 86_400
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
RECOVERY_CODES_MAX = 20


@dataclass
class FakeClock:
    """Unix time that moves only when a test says so; starts 10 s into a TOTP step."""

    now: float = 1_800_000_010.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def at(self) -> datetime:
        """The current time as an aware datetime."""
        return datetime.fromtimestamp(self.now, tz=UTC)


class Composed(NamedTuple):
    """A mail the flows composed, in clear."""

    kind: MailKind
    to: str
    token: str
    device: str


@dataclass
class MemoryMailer:
    """Records what would be mailed, in clear, instead of sealing it."""

    composed: list[Composed] = field(default_factory=list)
    wakes: int = 0

    def compose(self, kind: MailKind, to: str, *, token: str = "", device: str = "") -> SealedMail:
        self.composed.append(Composed(kind, to, token, device))
        return SealedMail(kind=kind.value, sealed=f"{kind.value} to {to}".encode())

    def queued(self) -> None:
        self.wakes += 1

    def kinds(self) -> list[MailKind]:
        return [c.kind for c in self.composed]


@dataclass
class _Token:
    account: Account
    family: str
    consumed: bool = False
    successor: str = ""


@dataclass
class _Session:
    account_id: str
    started_at: datetime
    ends_at: datetime
    remembered: bool
    device: Device
    auth_time: datetime
    revoked: bool = False


@dataclass
class MemoryAccountStore:
    """Follows AccountStoreService's documented behaviour, in memory (the parts the flows use)."""

    clock: FakeClock = field(default_factory=FakeClock)
    accounts: dict[str, StoredCredentials] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    lookups: list[str] = field(default_factory=list)
    verification_hashes: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def add(self, email: str, username: str, password_hash: str = "$2b$04$unused") -> Account:
        """Store an account directly (for flows that start signed in)."""
        account = Account(id=str(uuid.uuid4()), email=email, username=username)
        self.accounts[email] = StoredCredentials(account, password_hash)
        return account

    def account(self, account_id: str) -> Account | None:
        return next((c.account for c in self.accounts.values() if c.account.id == account_id), None)

    async def create_account(
        self,
        email: str,
        username: str,
        password_hash: str,
        verification: MailedToken | None,
        if_email_taken: TakenNotice | None = None,
    ) -> Account:
        if any(c.account.username == username for c in self.accounts.values()):
            raise AlreadyExists(message="username is taken", reason=Reason.USERNAME_TAKEN)
        if email in self.accounts:
            if if_email_taken is not None:
                self.notices.append(email)
            raise AlreadyExists(message="email is taken", reason=Reason.EMAIL_TAKEN)
        account = self.add(email, username, password_hash)
        if verification is not None:
            self.verification_hashes.append(verification.token_hash)
        return account

    async def get_credentials(self, email: str) -> StoredCredentials | None:
        self.lookups.append(email)
        return self.accounts.get(email)

    async def get_credentials_by_id(self, account_id: str) -> StoredCredentials | None:
        return next((c for c in self.accounts.values() if c.account.id == account_id), None)

    async def create_session(self, account_id: str, session: NewSession) -> SessionStart:
        account = self.account(account_id)
        if account is None:
            raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
        family = str(uuid.uuid4())
        now = self.clock.at()
        self.sessions[family] = _Session(
            account_id, now, session.ends_at, session.remembered, session.device, auth_time=now
        )
        self.tokens[session.token_hash] = _Token(account, family)
        return SessionStart(session_id=family, started_at=now)

    def mark_authenticated(self, account_id: str, session_id: str) -> datetime | None:
        """Set a live session's auth_time to now; None when it is not a live session of
        account_id."""
        session = self.sessions.get(session_id)
        now = self.clock.at()
        if (
            session is None
            or session.account_id != account_id
            or session_id in self.revoked
            or session.ends_at <= now
        ):
            return None
        session.auth_time = now
        return now

    async def rotate_refresh_token(
        self,
        token_hash: str,
        new_token_hash: str,
        new_expires_at: datetime,
        *,
        reuse_window_seconds: float = 0.0,
        device: Device | None = None,
    ) -> Rotated:
        token = self.tokens.get(token_hash)
        if token is None or token.family in self.revoked:
            raise NotFound(message="unknown", reason=Reason.REFRESH_TOKEN_INVALID)
        session = self.sessions[token.family]
        rotated = Rotated(
            account=token.account,
            expires_at=new_expires_at,
            session_id=token.family,
            auth_time=session.auth_time,
            remembered=session.remembered,
        )
        if token.consumed:
            # A repeat of the same rotation (same successor) inside the window is accepted.
            if reuse_window_seconds > 0 and token.successor == new_token_hash:
                return rotated
            self.revoked.add(token.family)
            raise FailedPrecondition(message="reused", reason=Reason.REFRESH_TOKEN_REUSED)
        token.consumed = True
        token.successor = new_token_hash
        self.tokens[new_token_hash] = _Token(token.account, token.family)
        return rotated

    async def revoke_refresh_token(self, token_hash: str) -> None:
        token = self.tokens.get(token_hash)
        if token is not None:
            self.revoked.add(token.family)

    async def replace_password_hash(self, account_id: str, old_hash: str, new_hash: str) -> bool:
        for email, stored in self.accounts.items():
            if stored.account.id == account_id and stored.password_hash == old_hash:
                self.accounts[email] = StoredCredentials(stored.account, new_hash)
                return True
        return False


@dataclass
class _Counter:
    failures: int
    last_failure_at: datetime


@dataclass
class _Factor:
    secret_sealed: bytes | None = None
    last_used_step: int = 0
    enabled_at: datetime | None = None
    pending_secret_sealed: bytes | None = None
    pending_started_at: datetime | None = None
    # code hash -> whether used
    codes: dict[str, bool] = field(default_factory=dict)


@dataclass
class _Challenge:
    account_id: str
    expires_at: datetime
    attempts: int = 0
    used: bool = False


@dataclass
class _StoredEvent:
    account_id: str
    event: Event


@dataclass
class MemorySecurityStore:
    """Follows the SecurityStore protocol's documented behaviour (and data_access's checks of
    its arguments), in memory, over a MemoryAccountStore for accounts and sessions.

    failing: when set, every call raises it (data_access down)."""

    accounts: MemoryAccountStore
    counters: dict[str, _Counter] = field(default_factory=dict)
    factors: dict[str, _Factor] = field(default_factory=dict)
    challenges: dict[str, _Challenge] = field(default_factory=dict)
    events: list[_StoredEvent] = field(default_factory=list)
    mails: list[SealedMail] = field(default_factory=list)
    failing: DomainError | None = None
    calls: list[str] = field(default_factory=list)

    @property
    def clock(self) -> FakeClock:
        return self.accounts.clock

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.failing is not None:
            raise self.failing

    def events_of(self, account_id: str) -> list[Event]:
        """An account's log, oldest first."""
        return [e.event for e in self.events if e.account_id == account_id]

    def kinds_of(self, account_id: str) -> list[EventKind]:
        return [e.kind for e in self.events_of(account_id)]

    # Failed-login counters.

    def _fresh(self, key: str, reset_after_seconds: int) -> _Counter | None:
        counter = self.counters.get(key)
        since = self.clock.at() - timedelta(seconds=reset_after_seconds)
        return counter if counter is not None and counter.last_failure_at >= since else None

    async def login_attempts(self, keys: list[str], reset_after_seconds: int) -> list[Counter]:
        self._call("login_attempts")
        _check_keys(keys, reset_after_seconds)
        found = []
        for key in keys:
            counter = self._fresh(key, reset_after_seconds)
            found.append(
                Counter(key, 0, None)
                if counter is None
                else Counter(key, counter.failures, counter.last_failure_at)
            )
        return found

    async def record_login_failure(
        self, keys: list[str], reset_after_seconds: int
    ) -> list[Counter]:
        self._call("record_login_failure")
        _check_keys(keys, reset_after_seconds)
        now = self.clock.at()
        for key in keys:
            counter = self._fresh(key, reset_after_seconds)
            if counter is None:
                self.counters[key] = _Counter(1, now)
            else:
                counter.failures += 1
                counter.last_failure_at = max(counter.last_failure_at, now)
        return [
            Counter(k, self.counters[k].failures, self.counters[k].last_failure_at) for k in keys
        ]

    async def clear_login_attempts(self, keys: list[str]) -> None:
        self._call("clear_login_attempts")
        for key in keys:
            self.counters.pop(key, None)

    # The second factor.

    def _known(self, account_id: str) -> None:
        if self.accounts.account(account_id) is None:
            raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)

    def _state(self, account_id: str) -> MfaState:
        factor = self.factors.get(account_id, _Factor())
        return MfaState(
            secret_sealed=factor.secret_sealed,
            last_used_step=factor.last_used_step,
            enabled_at=factor.enabled_at,
            recovery_codes_left=sum(not used for used in factor.codes.values()),
            pending_secret_sealed=factor.pending_secret_sealed,
            pending_started_at=factor.pending_started_at,
        )

    def _enabled(self, account_id: str) -> _Factor:
        factor = self.factors.get(account_id)
        if factor is None or factor.secret_sealed is None:
            raise FailedPrecondition(message="MFA is off", reason=Reason.MFA_NOT_ENABLED)
        return factor

    def _append(self, event: NewEvent) -> None:
        stored = Event(
            id=len(self.events) + 1,
            kind=event.kind,
            created_at=self.clock.at(),
            device=event.device,
            session_id=event.session_id,
            detail=event.detail,
        )
        self.events.append(_StoredEvent(event.account_id, stored))

    def _queue(self, mail: SealedMail | None) -> None:
        if mail is not None:
            self.mails.append(mail)

    async def mfa(self, account_id: str) -> MfaState:
        self._call("mfa")
        self._known(account_id)
        return self._state(account_id)

    async def start_mfa_enrollment(self, account_id: str, pending_secret_sealed: bytes) -> None:
        self._call("start_mfa_enrollment")
        self._known(account_id)
        factor = self.factors.setdefault(account_id, _Factor())
        if factor.secret_sealed is not None:
            raise FailedPrecondition(message="MFA is on", reason=Reason.MFA_ALREADY_ENABLED)
        factor.pending_secret_sealed = pending_secret_sealed
        factor.pending_started_at = self.clock.at()

    async def enable_mfa(self, event: NewEvent, enablement: Enablement) -> None:
        self._call("enable_mfa")
        if enablement.used_step <= 0:
            raise invalid([FieldViolation("used_step", "must be positive")])
        _check_hashes(enablement.recovery_code_hashes)
        factor = self.factors.get(event.account_id)
        if factor is not None and factor.secret_sealed is not None:
            raise FailedPrecondition(message="MFA is on", reason=Reason.MFA_ALREADY_ENABLED)
        fresh_since = self.clock.at() - timedelta(seconds=enablement.enrollment_ttl_seconds)
        if (
            factor is None
            or factor.pending_secret_sealed != enablement.pending_secret_sealed
            or factor.pending_started_at is None
            or factor.pending_started_at <= fresh_since
        ):
            raise NotFound(
                message="no pending MFA enrolment matches",
                reason=Reason.MFA_ENROLLMENT_NOT_FOUND,
            )
        factor.secret_sealed = factor.pending_secret_sealed
        factor.enabled_at = self.clock.at()
        factor.last_used_step = enablement.used_step
        factor.pending_secret_sealed = factor.pending_started_at = None
        factor.codes = dict.fromkeys(enablement.recovery_code_hashes, False)
        self._append(event)
        self._queue(enablement.mail)

    async def disable_mfa(self, event: NewEvent, mail: SealedMail | None) -> None:
        self._call("disable_mfa")
        self._enabled(event.account_id)
        del self.factors[event.account_id]
        self._append(event)
        self._queue(mail)

    async def replace_recovery_codes(self, event: NewEvent, code_hashes: list[str]) -> None:
        self._call("replace_recovery_codes")
        _check_hashes(code_hashes)
        factor = self._enabled(event.account_id)
        factor.codes = dict.fromkeys(code_hashes, False)
        self._append(event)

    def _use(self, account_id: str, code: UsedCode) -> int:
        """Use a code (nothing changes when it is refused) and return the codes left."""
        factor = self.factors.get(account_id)
        if code.step is None and code.recovery_code_hash is None:
            raise invalid([FieldViolation("code", "set step or recovery_code_hash")])
        if factor is None or factor.secret_sealed is None:
            raise FailedPrecondition(message="MFA is off", reason=Reason.MFA_NOT_ENABLED)
        if code.recovery_code_hash is not None:
            if factor.codes.get(code.recovery_code_hash) is not False:
                raise _code_invalid()
            factor.codes[code.recovery_code_hash] = True
        else:
            assert code.step is not None
            if code.step <= factor.last_used_step:
                raise _code_invalid()
            factor.last_used_step = code.step
        return sum(not used for used in factor.codes.values())

    async def use_mfa_code(self, account_id: str, code: UsedCode) -> int:
        self._call("use_mfa_code")
        return self._use(account_id, code)

    def _claimable(self, token_hash: str, account_id: str, expires_at: datetime) -> _Challenge:
        """The challenge's row, made at its first use, unless used, used up or another's."""
        challenge = self.challenges.setdefault(token_hash, _Challenge(account_id, expires_at))
        if challenge.used or challenge.account_id != account_id:
            raise NotFound(
                message="MFA challenge is invalid, used or expired",
                reason=Reason.MFA_CHALLENGE_INVALID,
            )
        return challenge

    async def fail_mfa_challenge(
        self, token_hash: str, account_id: str, expires_at: datetime, max_attempts: int
    ) -> int:
        self._call("fail_mfa_challenge")
        challenge = self._claimable(token_hash, account_id, expires_at)
        challenge.attempts += 1
        if challenge.attempts >= max_attempts:
            challenge.used = True
        return max(0, max_attempts - challenge.attempts)

    async def complete_mfa_challenge(
        self, challenge: ChallengeUse, code: UsedCode, account_id: str, session: NewSession
    ) -> tuple[SessionStart, int]:
        self._call("complete_mfa_challenge")
        row = self._claimable(challenge.token_hash, account_id, challenge.expires_at)
        factor = self.factors.get(account_id)
        if factor is None or factor.secret_sealed != challenge.secret_sealed:
            raise NotFound(
                message="MFA challenge is invalid, used or expired",
                reason=Reason.MFA_CHALLENGE_INVALID,
            )
        left = self._use(account_id, code)
        row.used = True
        for key in challenge.clear_keys:
            self.counters.pop(key, None)
        started = await self.accounts.create_session(account_id, session)
        return started, left

    async def mark_session_authenticated(self, event: NewEvent) -> datetime:
        self._call("mark_session_authenticated")
        at = self.accounts.mark_authenticated(event.account_id, event.session_id)
        if at is None:
            raise NotFound(message="no such session", reason=Reason.SESSION_NOT_FOUND)
        self._append(event)
        return at

    async def record_event(
        self, event: NewEvent, mail: SealedMail | None = None, *, only_new_device: bool = False
    ) -> bool:
        self._call("record_event")
        if self.accounts.account(event.account_id) is None:
            return False
        mailed = mail is not None
        if mail is not None and only_new_device:
            logins = [
                e for e in self.events_of(event.account_id) if e.kind is EventKind.LOGIN_SUCCEEDED
            ]
            mailed = bool(logins) and all(
                e.device.user_agent != event.device.user_agent for e in logins
            )
        self._append(event)
        if mailed:
            self._queue(mail)
        return mailed

    async def list_events(self, account_id: str, page_size: int, before_id: int) -> EventPage:
        self._call("list_events")
        size = page_size or PAGE_SIZE_DEFAULT
        if not 1 <= size <= PAGE_SIZE_MAX or before_id < 0:
            raise invalid([FieldViolation("page_size", f"must be 1 to {PAGE_SIZE_MAX}")])
        older = [
            e for e in reversed(self.events_of(account_id)) if not before_id or e.id < before_id
        ]
        return EventPage(events=older[:size], more=len(older) > size)


def _check_keys(keys: list[str], reset_after_seconds: int) -> None:
    """data_access's checks of counter keys and of reset_after."""
    problems = []
    if not 1 <= len(keys) <= KEYS_MAX or len(set(keys)) != len(keys):
        problems.append(FieldViolation("keys", f"must hold 1 to {KEYS_MAX} distinct keys"))
    problems.extend(
        FieldViolation(f"keys[{i}]", f"must be 1 to {KEY_MAX} characters")
        for i, key in enumerate(keys)
        if not 1 <= len(key) <= KEY_MAX
    )
    if not 1 <= reset_after_seconds <= COUNTER_IDLE_MAX_SECONDS:
        problems.append(FieldViolation("reset_after", "must be between 1 s and 1 day"))
    if problems:
        raise invalid(problems)


def _check_hashes(hashes: list[str]) -> None:
    """data_access's checks of recovery-code hashes: 1 to 20 distinct SHA-256 hex digests."""
    distinct = len(set(hashes)) == len(hashes)
    digests = all(len(h) == 64 and set(h) <= set("0123456789abcdef") for h in hashes)
    if not (1 <= len(hashes) <= RECOVERY_CODES_MAX and distinct and digests):
        raise invalid([FieldViolation("recovery_code_hashes", "must be 1 to 20 distinct digests")])


def _code_invalid() -> FailedPrecondition:
    return FailedPrecondition(
        message="the code was used already or is not valid", reason=Reason.MFA_CODE_INVALID
    )


@dataclass
class FakeCaptcha:
    """A CAPTCHA provider that accepts the token "solved" and refuses others; or raises
    `down` when set."""

    enabled: bool = True
    site_key: str = "unit-site-key"
    down: DomainError | None = None
    checked: list[tuple[str, str]] = field(default_factory=list)

    async def verify(self, token: str, client_ip: str) -> bool:
        self.checked.append((token, client_ip))
        if self.down is not None:
            raise self.down
        return token == "solved"

    async def aclose(self) -> None:
        return None


def defence_over(
    security: MemorySecurityStore,
    *,
    captcha: CaptchaVerifier | None = None,
    policy: DefencePolicy | None = None,
) -> LoginDefence:
    """A LoginDefence over the in-memory store, on its clock."""
    return LoginDefence(
        security,
        captcha or NoCaptcha(),
        policy or DefencePolicy(),
        digest_key=PEPPER.encode(),
        clock=security.clock,
    )


def guards_over(
    security: MemorySecurityStore,
    mailer: MemoryMailer,
    *,
    captcha: CaptchaVerifier | None = None,
    policy: DefencePolicy | None = None,
    challenge_ttl_seconds: int = 300,
    challenge_max_attempts: int = 5,
) -> LoginGuards:
    """LoginGuards built from the real defence, second factor and log over the in-memory store."""
    return LoginGuards(
        defence=defence_over(security, captcha=captcha, policy=policy),
        second_factor=SecondFactor(SecretBox(PEPPER), clock=security.clock),
        challenges=ChallengeBox(PEPPER, challenge_ttl_seconds, clock=security.clock),
        store=security,
        log=SecurityLog(security),
        mailer=mailer,
        challenge_max_attempts=challenge_max_attempts,
    )


def settings_over(
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
    *,
    enrollment_ttl_seconds: int = 900,
    reauthentication_window_seconds: int = 600,
) -> MfaSettings:
    """MfaSettings over the in-memory stores, on the store's clock."""
    return MfaSettings(
        security,
        store,  # type: ignore[arg-type]  # implements only what these flows call
        SecretBox(PEPPER),
        mailer,
        SecurityLog(security),
        defence_over(security),
        issuer="meshgram",
        enrollment_ttl_seconds=enrollment_ttl_seconds,
        reauthentication_window_seconds=reauthentication_window_seconds,
        clock=store.clock,
    )
