"""The flows of AuthService that start and carry sessions: register, login, refresh, logout.

Free of grpc and protobuf: the servicer translates messages, this module decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from auth_svc import accounts, tokens
from auth_svc.accounts import Account, AccountStore, Device, Mailer, MailKind, NewSession
from auth_svc.activity import SecurityLog
from auth_svc.login_defence import AttemptKeys, LoginDefence
from auth_svc.mfa import ChallengeBox, LoginChallenge, SecondFactor
from auth_svc.mfa import wrong_code as mfa_wrong_code
from auth_svc.passwords import PasswordHasher
from auth_svc.security_store import ChallengeUse, EventKind, MfaState, NewEvent, SecurityStore
from auth_svc.tokens import AccessTokenSigner, Clock, OpaqueToken, SessionClaims
from auth_svc.verification import EmailVerification
from meshkit.access_tokens import Principal
from meshkit.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    Unauthenticated,
    Unavailable,
    invalid,
)
from meshkit.reasons import Reason
from meshkit.settings import UnverifiedEmailMay

log = logging.getLogger("auth_svc.authenticator")

# One message for an unknown email, a malformed email and a wrong password: the answer must not
# tell whether an address is registered.
INVALID_CREDENTIALS_MESSAGE = "email or password is incorrect"


@dataclass(frozen=True)
class TokenPair:
    """The tokens a client keeps after logging in or refreshing, and the session they carry."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str
    remembered: bool
    """Whether the session outlives a browser restart (its cookie gets a Max-Age)."""
    token_type: str = tokens.TOKEN_TYPE


@dataclass(frozen=True)
class MfaRequired:
    """A login whose password was right and whose second factor is still owed."""

    challenge: str
    expires_in: int


@dataclass(frozen=True)
class MfaLogin:
    """A login finished with a second factor."""

    tokens: TokenPair
    recovery_code_used: bool
    recovery_codes_left: int


@dataclass(frozen=True)
class Reauthenticated:
    """A fresh access token after the caller proved their credentials again."""

    access_token: str
    expires_in: int
    auth_time: datetime


@dataclass(frozen=True)
class LoginGuards:
    """What guards logins beyond the password: the brute-force defence, the second factor,
    where both keep their state, the security log and the mail of a new device's login."""

    defence: LoginDefence
    second_factor: SecondFactor
    challenges: ChallengeBox
    store: SecurityStore
    log: SecurityLog
    mailer: Mailer
    challenge_max_attempts: int = 5


@dataclass(frozen=True)
class SessionPolicy:
    """How long a login lasts: unused (idle), at most (absolute, with and without remember-me),
    and how long a refresh may be repeated with the same answer (several tabs at once)."""

    idle_seconds: int
    """Lifetime of each refresh token: a session not refreshed for this long ends."""
    successor_key: bytes
    """Key that derives a refresh token's successor from it (tokens.successor_refresh_token)."""
    reuse_window_seconds: float = 0.0
    max_seconds: int = 90 * 86_400
    """Absolute lifetime of a remembered session (remember_me)."""
    short_seconds: int = 12 * 3600
    """Absolute lifetime of a session that is not remembered."""

    def lifetime(self, remembered: bool) -> int:
        """Absolute lifetime in seconds of a session started with or without remember-me."""
        return self.max_seconds if remembered else self.short_seconds


class Authenticator:
    """Registers accounts, checks credentials and issues, rotates and revokes tokens."""

    def __init__(
        self,
        store: AccountStore,
        hasher: PasswordHasher,
        signer: AccessTokenSigner,
        *,
        sessions: SessionPolicy,
        verification: EmailVerification,
        guards: LoginGuards,
        unverified_email_may: UnverifiedEmailMay = "edit_profile",
        password_min_score: int = 0,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._signer = signer
        self._sessions = sessions
        self._verification = verification
        self._guards = guards
        self._unverified_may = unverified_email_may
        self._min_score = password_min_score
        self._clock = clock

    async def register(self, email: str, username: str, password: str) -> Account:
        """Create an account and queue its verification mail; InvalidArgument lists every bad
        field (a weak password included), AlreadyExists (USERNAME_TAKEN) when the username is
        taken. A registered email gets the answer a new one gets, with an id of no account,
        and its owner a notice instead: the reply never tells whether it is registered."""
        # The strength estimate costs milliseconds of CPU: off the event loop.
        registration = await asyncio.to_thread(
            accounts.validate_registration, email, username, password, min_score=self._min_score
        )
        password_hash = await self._hasher.hash(registration.password)
        # Both mails are made whatever happens, so both outcomes cost the same.
        verification = self._verification.new_token(registration.email)
        notice = self._verification.taken_notice(registration.email)
        try:
            account = await self._store.create_account(
                registration.email, registration.username, password_hash, verification, notice
            )
        except AlreadyExists as taken:
            if taken.reason != Reason.EMAIL_TAKEN:
                raise
            account = Account(
                id=str(uuid.uuid4()), email=registration.email, username=registration.username
            )
        self._verification.sent()
        return account

    async def login(
        self,
        email: str,
        password: str,
        *,
        remember_me: bool = False,
        device: Device | None = None,
        captcha_token: str = "",
    ) -> TokenPair | MfaRequired:
        """Return a token pair starting a new session, or the challenge of its second step
        when the account has MFA on. Unauthenticated (INVALID_CREDENTIALS) for an unknown or
        malformed email and for a wrong password alike; FailedPrecondition
        (EMAIL_NOT_VERIFIED) when unverified accounts may not sign in; the defence's answers
        (LoginDefence.admit) after repeated failures."""
        device = device or Device()
        guards = self._guards
        keys = guards.defence.keys(email, device.client_ip)
        admission = await guards.defence.admit(keys, captcha_token)
        normal_email = accounts.login_email(email)
        credentials = None
        if normal_email is not None:
            credentials = await self._store.get_credentials(normal_email)
        # bcrypt always runs (against a dummy hash when there is no account) so that the response
        # time does not reveal whether the email is registered.
        matches = await self._hasher.verify(
            password, credentials.password_hash if credentials is not None else None
        )
        if credentials is None or not matches:
            await self._failed(keys, credentials.account.id if credentials else None, device)
            raise Unauthenticated(
                message=INVALID_CREDENTIALS_MESSAGE, reason=Reason.INVALID_CREDENTIALS
            )
        account = credentials.account
        if not account.email_verified and self._unverified_may == "nothing":
            # Said only after the password matched: it tells nothing to someone guessing.
            raise FailedPrecondition(
                message="verify your email address first; the link is in the mail we sent",
                reason=Reason.EMAIL_NOT_VERIFIED,
            )
        if self._hasher.outdated(credentials.password_hash):
            await self._rehash(account.id, password, credentials.password_hash)
        mfa = await guards.store.mfa(account.id)
        if mfa.secret_sealed is not None:
            # The counters stay until the second factor is right too: someone holding only the
            # password must not get a fresh allowance of code guesses with every login.
            return self._challenge(
                LoginChallenge(
                    account=account,
                    remembered=remember_me,
                    secret_sealed=mfa.secret_sealed,
                    clears_failures=admission.had_failures,
                )
            )
        await guards.defence.succeeded(admission)
        refresh, new_session = self._new_session(remember_me, device)
        started = await self._store.create_session(account.id, new_session)
        await self._logged_in(account, started.session_id, device)
        claims = SessionClaims(
            session_id=started.session_id,
            email_verified=account.email_verified,
            auth_time=started.started_at.timestamp(),
        )
        return self._pair(account, claims, refresh.token, refresh.expires_in, remember_me)

    async def verify_mfa(
        self, challenge: str, code: str, recovery_code: str, *, device: Device | None = None
    ) -> MfaLogin:
        """Finish a login with its challenge and a second factor: a token pair and what is
        left of the recovery codes. NotFound (MFA_CHALLENGE_INVALID) for a challenge that is
        not ours, expired, used or used up; Unauthenticated (MFA_CODE_INVALID) for a wrong or
        used code; InvalidArgument when the request names no factor or two."""
        device = device or Device()
        guards = self._guards
        if not challenge.strip():
            raise invalid([FieldViolation("challenge", "is required")])
        opened = guards.challenges.open(challenge.strip())
        if opened is None:
            raise _challenge_invalid()
        pending, expires_at = opened
        account = pending.account
        token_hash = tokens.hash_token(challenge.strip())
        # No admission check here: the challenge itself bounds the guesses (it is used up
        # after AUTH_MFA_CHALLENGE_MAX_ATTEMPTS wrong codes), and a new one needs the password
        # step, which the lockout guards. Wrong codes still count towards that lockout.
        keys = guards.defence.keys(account.email, device.client_ip)
        factor = MfaState(
            secret_sealed=pending.secret_sealed,
            last_used_step=0,  # the store refuses a step not later than the last one used
            enabled_at=None,
            recovery_codes_left=0,
        )
        used = guards.second_factor.check(factor, code, recovery_code)
        use = ChallengeUse(
            token_hash=token_hash,
            expires_at=expires_at,
            secret_sealed=pending.secret_sealed,
            # Only when the password step saw some: a delete that finds nothing still costs.
            clear_keys=[keys.pair, keys.subject] if pending.clears_failures else [],
        )
        if used is None:
            await self._wrong_code(use, keys, account.id, device)
        refresh, new_session = self._new_session(pending.remembered, device)
        try:
            started, codes_left = await guards.store.complete_mfa_challenge(
                use, used, account.id, new_session
            )
        except NotFound:
            raise _challenge_invalid() from None
        except FailedPrecondition:
            # The recovery code was unknown or used, or the step was used (a replay).
            await self._wrong_code(use, keys, account.id, device)
        await self._logged_in(account, started.session_id, device)
        if used.recovery_code_hash is not None:
            await self._recovery_code_used(account.id, started.session_id, device, codes_left)
        claims = SessionClaims(
            session_id=started.session_id,
            email_verified=account.email_verified,
            auth_time=started.started_at.timestamp(),
        )
        pair = self._pair(account, claims, refresh.token, refresh.expires_in, pending.remembered)
        return MfaLogin(pair, used.recovery_code_hash is not None, codes_left)

    async def reauthenticate(
        self,
        principal: Principal,
        password: str,
        code: str = "",
        recovery_code: str = "",
        *,
        device: Device | None = None,
    ) -> Reauthenticated:
        """Check the caller's password (and second factor when MFA is on) again and return an
        access token whose auth_time is now. Unauthenticated (INVALID_CREDENTIALS,
        MFA_CODE_INVALID) for a wrong credential; NotFound (SESSION_NOT_FOUND) when the token's
        session has ended; the defence's lockout after repeated failures."""
        device = device or Device()
        guards = self._guards
        if not password:
            raise invalid([FieldViolation("password", "is required")])
        credentials = await self._store.get_credentials_by_id(principal.account_id)
        if credentials is None:
            raise Unauthenticated(message="account not found", reason=Reason.TOKEN_INVALID)
        account = credentials.account
        keys = guards.defence.keys(account.email, device.client_ip)
        admission = await guards.defence.admit(keys, ask_captcha=False)
        if not await self._hasher.verify(password, credentials.password_hash):
            await self._failed(keys, account.id, device)
            raise Unauthenticated(
                message="the password is incorrect", reason=Reason.INVALID_CREDENTIALS
            )
        mfa = await guards.store.mfa(account.id)
        if mfa.enabled:
            spent = await guards.second_factor.spend(
                guards.store, account.id, mfa, code, recovery_code
            )
            if spent is None:
                await self._failed(keys, account.id, device)
                raise mfa_wrong_code()
            used, codes_left = spent
            if used.recovery_code_hash is not None:
                await self._recovery_code_used(account.id, principal.session_id, device, codes_left)
        await guards.defence.succeeded(admission)
        authenticated_at = await guards.store.mark_session_authenticated(
            NewEvent(account.id, EventKind.REAUTHENTICATED, device, principal.session_id)
        )
        claims = SessionClaims(
            session_id=principal.session_id,
            email_verified=account.email_verified,
            auth_time=authenticated_at.timestamp(),
        )
        access = self._signer.issue(account.id, account.username, claims)
        return Reauthenticated(access.token, access.expires_in, authenticated_at)

    def _new_session(self, remember_me: bool, device: Device) -> tuple[OpaqueToken, NewSession]:
        """A login's first refresh token and the session to store with it."""
        policy = self._sessions
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        refresh = tokens.new_token(
            min(policy.idle_seconds, policy.lifetime(remember_me)), clock=self._clock
        )
        return refresh, NewSession(
            token_hash=refresh.token_hash,
            expires_at=refresh.expires_at,
            ends_at=now + timedelta(seconds=policy.lifetime(remember_me)),
            remembered=remember_me,
            device=device,
        )

    def _challenge(self, challenge: LoginChallenge) -> MfaRequired:
        """The sealed challenge of a login's second step (nothing is stored)."""
        issued = self._guards.challenges.seal(challenge)
        return MfaRequired(challenge=issued.token, expires_in=issued.expires_in)

    async def _failed(self, keys: AttemptKeys, account_id: str | None, device: Device) -> None:
        """Count a failed attempt and, for an account that exists, log it (off the reply's
        path, so the reply time is the same for an unknown address)."""
        locked = await self._guards.defence.failed(keys)
        if account_id is None:
            return
        log_ = self._guards.log
        log_.record_soon(NewEvent(account_id, EventKind.LOGIN_FAILED, device))
        if locked:
            log_.record_soon(NewEvent(account_id, EventKind.LOGIN_LOCKED, device))

    async def _wrong_code(
        self, use: ChallengeUse, keys: AttemptKeys, account_id: str, device: Device
    ) -> NoReturn:
        """Count a wrong second factor against the challenge and the lockout, then refuse."""
        await self._failed(keys, account_id, device)
        try:
            await self._guards.store.fail_mfa_challenge(
                use.token_hash, account_id, use.expires_at, self._guards.challenge_max_attempts
            )
        except NotFound:
            # Used up by earlier wrong codes (or used): say so rather than "wrong code".
            raise _challenge_invalid() from None
        raise mfa_wrong_code()

    async def _recovery_code_used(
        self, account_id: str, session_id: str, device: Device, codes_left: int
    ) -> None:
        """Log the use of a recovery code and how many are left."""
        await self._guards.log.record(
            NewEvent(
                account_id,
                EventKind.RECOVERY_CODE_USED,
                device,
                session_id,
                detail=f"{codes_left} recovery codes left",
            )
        )

    async def _logged_in(self, account: Account, session_id: str, device: Device) -> None:
        """Log a successful login, mailing the owner when it came from a new device."""
        mail = self._guards.mailer.compose(
            MailKind.NEW_DEVICE_LOGIN, account.email, device=_describe(device)
        )
        event = NewEvent(account.id, EventKind.LOGIN_SUCCEEDED, device, session_id)
        if await self._guards.log.record(event, mail, only_new_device=True):
            self._guards.mailer.queued()

    async def _rehash(self, account_id: str, password: str, old_hash: str) -> None:
        """Store the password's hash at the configured cost, in place of one made at another
        (the cost setting changed since); a failure leaves the old hash, which still works."""
        try:
            new_hash = await self._hasher.hash(password)
            await self._store.replace_password_hash(account_id, old_hash, new_hash)
        except (NotFound, Unavailable):
            log.warning("password re-hash skipped", extra={"account_id": account_id})

    async def refresh(self, refresh_token: str, *, device: Device | None = None) -> TokenPair:
        """Consume a refresh token and return a new pair; Unauthenticated with reason
        REFRESH_TOKEN_INVALID (unknown, expired, revoked, session over) or REFRESH_TOKEN_REUSED
        (consumed earlier than the reuse window). Repeated within the window, the same refresh
        returns the same refresh token (and a fresh access token)."""
        if not refresh_token:
            raise Unauthenticated(
                message="refresh token is required", reason=Reason.REFRESH_TOKEN_INVALID
            )
        policy = self._sessions
        successor = tokens.successor_refresh_token(
            refresh_token, policy.successor_key, policy.idle_seconds, clock=self._clock
        )
        try:
            rotated = await self._store.rotate_refresh_token(
                tokens.hash_token(refresh_token),
                successor.token_hash,
                successor.expires_at,
                reuse_window_seconds=policy.reuse_window_seconds,
                device=device,
            )
        except NotFound:
            raise Unauthenticated(
                message="refresh token is invalid or expired; log in again",
                reason=Reason.REFRESH_TOKEN_INVALID,
            ) from None
        except FailedPrecondition:
            raise Unauthenticated(
                message="refresh token was already used; every token of this login is revoked",
                reason=Reason.REFRESH_TOKEN_REUSED,
            ) from None
        # The store may have capped the expiry at the session's end, or kept an earlier one.
        lives = max(0, int(rotated.expires_at.timestamp() - self._clock()))
        claims = SessionClaims(
            session_id=rotated.session_id,
            email_verified=rotated.account.email_verified,
            auth_time=rotated.auth_time.timestamp(),
        )
        return self._pair(rotated.account, claims, successor.token, lives, rotated.remembered)

    async def logout(self, refresh_token: str) -> None:
        """Revoke the login of a refresh token; unknown or empty tokens are silently accepted."""
        if not refresh_token:
            return
        # Logging out twice, or with a token that expired long ago, must stay harmless.
        with contextlib.suppress(NotFound):
            await self._store.revoke_refresh_token(tokens.hash_token(refresh_token))

    def jwks(self) -> list[dict[str, str]]:
        """Return the public keys that verify access tokens."""
        return self._signer.jwks()

    def _pair(
        self,
        account: Account,
        claims: SessionClaims,
        refresh_token: str,
        refresh_expires_in: int,
        remembered: bool,
    ) -> TokenPair:
        """Issue an access token for account in its session and pair it with refresh_token."""
        access = self._signer.issue(account.id, account.username, claims)
        return TokenPair(
            access_token=access.token,
            expires_in=access.expires_in,
            refresh_token=refresh_token,
            refresh_expires_in=refresh_expires_in,
            session_id=claims.session_id,
            remembered=remembered,
        )


def _challenge_invalid() -> NotFound:
    """The one answer for a challenge that is unknown, expired, used or used up."""
    return NotFound(
        message="this login step expired or was used; log in again",
        reason=Reason.MFA_CHALLENGE_INVALID,
    )


# Room a device's User-Agent gets in a mail, so that its address always fits after it.
_AGENT_SHOWN = 140


def _describe(device: Device) -> str:
    """How a mail names a device: its User-Agent (shortened) and address."""
    agent = " ".join(device.user_agent.split()) or "an unknown app"
    if len(agent) > _AGENT_SHOWN:
        agent = agent[: _AGENT_SHOWN - 3] + "..."
    return f"{agent} ({device.client_ip})" if device.client_ip else agent
