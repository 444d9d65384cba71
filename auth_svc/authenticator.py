"""The flows of AuthService (register, login, refresh, logout) over the account store.

Free of grpc and protobuf: the servicer translates messages, this module decides.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace

from auth_svc import accounts, tokens
from auth_svc.accounts import Account, AccountStore
from auth_svc.passwords import PasswordHasher
from auth_svc.tokens import AccessTokenSigner, Clock
from meshkit.errors import FailedPrecondition, NotFound, Unauthenticated, Unavailable
from meshkit.reasons import Reason

log = logging.getLogger("auth_svc.authenticator")

# One message for an unknown email, a malformed email and a wrong password: the answer must not
# tell whether an address is registered.
INVALID_CREDENTIALS_MESSAGE = "email or password is incorrect"


@dataclass(frozen=True)
class TokenPair:
    """The tokens a client keeps after logging in or refreshing."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    token_type: str = tokens.TOKEN_TYPE


@dataclass(frozen=True)
class SessionPolicy:
    """How long a login lasts: unused (idle), at most (absolute), and how long a refresh may
    be repeated with the same answer (several tabs refreshing at once)."""

    idle_seconds: int
    """Lifetime of each refresh token: a session not refreshed for this long ends."""
    successor_key: bytes
    """Key that derives a refresh token's successor from it (tokens.successor_refresh_token)."""
    reuse_window_seconds: float = 0.0
    max_seconds: int | None = None
    """Absolute lifetime: after this long since the login no refresh succeeds; None: no limit."""


class Authenticator:
    """Registers accounts, checks credentials and issues, rotates and revokes tokens."""

    def __init__(
        self,
        store: AccountStore,
        hasher: PasswordHasher,
        signer: AccessTokenSigner,
        *,
        sessions: SessionPolicy,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._signer = signer
        self._sessions = sessions
        self._clock = clock

    async def register(self, email: str, username: str, password: str) -> Account:
        """Create an account; InvalidArgument lists every bad field, AlreadyExists when taken."""
        registration = accounts.validate_registration(email, username, password)
        password_hash = await self._hasher.hash(registration.password)
        return await self._store.create_account(
            registration.email, registration.username, password_hash
        )

    async def login(self, email: str, password: str) -> TokenPair:
        """Return a token pair starting a new login; Unauthenticated (INVALID_CREDENTIALS) for an
        unknown or malformed email and for a wrong password alike."""
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
        if self._hasher.outdated(credentials.password_hash):
            await self._rehash(account.id, password, credentials.password_hash)
        refresh = self._new_refresh_token()
        await self._store.create_refresh_token(account.id, refresh.token_hash, refresh.expires_at)
        return self._pair(account, refresh)

    async def _rehash(self, account_id: str, password: str, old_hash: str) -> None:
        """Store the password's hash at the configured cost, in place of one made at another
        (the cost setting changed since); a failure leaves the old hash, which still works."""
        try:
            new_hash = await self._hasher.hash(password)
            await self._store.replace_password_hash(account_id, old_hash, new_hash)
        except (NotFound, Unavailable):
            log.warning("password re-hash skipped", extra={"account_id": account_id})

    async def refresh(self, refresh_token: str) -> TokenPair:
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
                tokens.hash_refresh_token(refresh_token),
                successor.token_hash,
                successor.expires_at,
                reuse_window_seconds=policy.reuse_window_seconds,
                session_lifetime_seconds=policy.max_seconds,
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
        return self._pair(rotated.account, replace(successor, expires_in=lives))

    async def logout(self, refresh_token: str) -> None:
        """Revoke the login of a refresh token; unknown or empty tokens are silently accepted."""
        if not refresh_token:
            return
        # Logging out twice, or with a token that expired long ago, must stay harmless.
        with contextlib.suppress(NotFound):
            await self._store.revoke_refresh_token(tokens.hash_refresh_token(refresh_token))

    def jwks(self) -> list[dict[str, str]]:
        """Return the public keys that verify access tokens."""
        return self._signer.jwks()

    def _new_refresh_token(self) -> tokens.RefreshToken:
        """A fresh refresh token with the configured lifetime."""
        return tokens.new_refresh_token(self._sessions.idle_seconds, clock=self._clock)

    def _pair(self, account: Account, refresh: tokens.RefreshToken) -> TokenPair:
        """Issue an access token for account and pair it with refresh."""
        access = self._signer.issue(account.id, account.username)
        return TokenPair(
            access_token=access.token,
            expires_in=access.expires_in,
            refresh_token=refresh.token,
            refresh_expires_in=refresh.expires_in,
        )
