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

from auth_svc import accounts, tokens
from auth_svc.accounts import Account, AccountStore, Device, NewSession
from auth_svc.passwords import PasswordHasher
from auth_svc.tokens import AccessTokenSigner, Clock, SessionClaims
from auth_svc.verification import EmailVerification
from meshkit.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    Unauthenticated,
    Unavailable,
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
        unverified_email_may: UnverifiedEmailMay = "edit_profile",
        password_min_score: int = 0,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._signer = signer
        self._sessions = sessions
        self._verification = verification
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
    ) -> TokenPair:
        """Return a token pair starting a new session; Unauthenticated (INVALID_CREDENTIALS) for
        an unknown or malformed email and for a wrong password alike; FailedPrecondition
        (EMAIL_NOT_VERIFIED) when unverified accounts may not sign in."""
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
        policy = self._sessions
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        ends_at = now + timedelta(seconds=policy.lifetime(remember_me))
        refresh = tokens.new_token(
            min(policy.idle_seconds, policy.lifetime(remember_me)), clock=self._clock
        )
        started = await self._store.create_session(
            account.id,
            NewSession(
                token_hash=refresh.token_hash,
                expires_at=refresh.expires_at,
                ends_at=ends_at,
                remembered=remember_me,
                device=device or Device(),
            ),
        )
        claims = SessionClaims(
            session_id=started.session_id,
            email_verified=account.email_verified,
            auth_time=started.started_at.timestamp(),
        )
        return self._pair(account, claims, refresh.token, refresh.expires_in, remember_me)

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
            auth_time=rotated.session_started_at.timestamp(),
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
