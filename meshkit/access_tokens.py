"""Verification of access tokens (EdDSA JWTs) against the JWKS that auth_svc publishes.

Services verify every token themselves (defence in depth behind the edge). Keys are fetched
through an injected coroutine and cached, and refetched in the background every
JWKS_REFRESH_SECONDS: auth_svc publishes a new signing key longer than that before it signs
(AUTH_JWT_KEY_PUBLISH_DELAY_SECONDS), so a rotation is known here before its first token. A kid
still unknown makes the verifier refetch at once, but never more than one fetch at a time, at
most once a second, and backing off while fetches fail, so a burst of forged kids or an outage of
auth_svc is not hammered. A verified token is trusted from cache only while its key is still
published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from meshkit.errors import FailedPrecondition, PermissionDenied, Unauthenticated, Unavailable
from meshkit.reasons import Reason

ISSUER = "meshgram-auth"
AUDIENCE = "meshgram"
ALGORITHM = "EdDSA"

# What the edge forwards of a token it verified (tools/edge_jwt.py), having removed any copy a
# client sent: the token's payload (base64url JSON) and its subject. Services still verify the
# token itself; the account id labels their log lines.
CLAIMS_HEADER = "x-meshgram-token-claims"
ACCOUNT_HEADER = "x-meshgram-account-id"

JwksFetcher = Callable[[], Awaitable[Iterable[Mapping[str, str]]]]

JWKS_REFRESH_SECONDS = 60.0
"""How often a verifier refetches the JWKS while all is well. auth_svc's key publish delay
(AUTH_JWT_KEY_PUBLISH_DELAY_SECONDS) must be longer, so that a new key is known before it signs."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """The authenticated account behind a request."""

    account_id: str
    username: str
    session_id: str = ""
    """The login the token belongs to; empty for tokens issued without one."""
    email_verified: bool = False
    auth_time: float = 0.0
    """When the password was last checked for the token's session (Unix seconds)."""


def _duration(seconds: float) -> str:
    """A window as people say it: whole minutes when it is some, else seconds."""
    whole = int(seconds)
    if whole >= 60 and whole % 60 == 0:
        return f"{whole // 60} minutes" if whole > 60 else "1 minute"
    return f"{whole} seconds"


def require_recent_authentication(
    principal: Principal, window_seconds: float, *, now: float | None = None
) -> None:
    """Raise FailedPrecondition (REAUTHENTICATION_REQUIRED) unless the principal's credentials
    were proved less than window_seconds ago (its token's auth_time)."""
    current = time.time() if now is None else now
    if principal.auth_time <= 0 or current - principal.auth_time > window_seconds:
        raise FailedPrecondition(
            message=(
                f"this needs a login less than {_duration(window_seconds)} old: confirm your "
                "password with Reauthenticate and use the access token it returns"
            ),
            reason=Reason.REAUTHENTICATION_REQUIRED,
        )


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """Return the bearer token from request metadata or raise Unauthenticated."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise token_missing()


class AccessTokenVerifier:
    """Verifies access tokens; successful results are cached until the token expires or its key
    leaves the JWKS."""

    def __init__(
        self,
        fetch_jwks: JwksFetcher,
        *,
        leeway_seconds: float = 5.0,
        refresh_seconds: float = JWKS_REFRESH_SECONDS,
        min_refetch_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        cache_size: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """refresh_seconds: age at which held keys are refetched in the background;
        min_refetch_seconds: least time between two fetches, doubled after each consecutive
        failure up to max_backoff_seconds."""
        self._fetch_jwks = fetch_jwks
        self._monotonic = monotonic  # paces fetches; replaceable in tests
        self._leeway = leeway_seconds
        self._refresh = refresh_seconds
        self._min_refetch = min_refetch_seconds
        self._max_backoff = max_backoff_seconds
        self._cache_size = cache_size
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._attempted_at = float("-inf")
        self._failures = 0  # consecutive failed fetches
        # The one fetch in flight: every caller that needs fresh keys awaits this same task.
        self._fetching: asyncio.Task[None] | None = None
        # token -> (principal, expiry, kid of the key that verified it)
        self._verified: OrderedDict[str, tuple[Principal, float, str]] = OrderedDict()

    async def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        """Return the principal of the bearer token in a call's metadata; raise Unauthenticated
        when it is missing or invalid."""
        return await self.verify(bearer_token(metadata or ()))

    async def authenticate_if_present(
        self, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> Principal | None:
        """Return the principal of the call's bearer token, or None when the call carries no
        authorization header; a header that is present but invalid is still Unauthenticated
        (a broken token must not quietly turn a user into a visitor)."""
        pairs = tuple(metadata or ())
        if not any(key == "authorization" for key, _ in pairs):
            return None
        return await self.verify(bearer_token(pairs))

    @property
    def has_keys(self) -> bool:
        """Whether a JWKS with at least one key has been fetched (tokens can be verified)."""
        return bool(self._keys)

    async def verify(self, token: str) -> Principal:
        """Return the principal of a valid token; raise Unauthenticated for any defect and
        Unavailable while an unknown key id cannot be looked up."""
        if "=" in token:
            # A JWS is base64url without padding (RFC 7515); a padded copy would verify too and
            # be a second spelling of one token.
            raise token_invalid()
        self._refresh_if_due()
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires_at, kid = cached
            # A key dropped from the JWKS was retired or compromised: its tokens need a new look.
            if time.time() < expires_at + self._leeway and kid in self._keys:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        kid, key = await self._key_for(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise token_expired() from None
        except jwt.PyJWTError:
            raise token_invalid() from None
        principal = Principal(
            account_id=str(claims["sub"]),
            username=str(claims.get("name", "")),
            session_id=str(claims.get("sid", "")),
            email_verified=claims.get("email_verified") is True,
            auth_time=float(claims.get("auth_time", 0) or 0),
        )
        self._remember(token, principal, float(claims["exp"]), kid)
        return principal

    async def _key_for(self, token: str) -> tuple[str, jwt.PyJWK]:
        """Find the kid and verification key of a token, refetching the JWKS for an unknown kid
        when the pace allows."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise token_invalid() from None
        if not isinstance(kid, str):
            raise token_invalid()
        if kid not in self._keys:
            await self._refetch()
        key = self._keys.get(kid)
        if key is None:
            if self._failures:
                # The key may well exist: do not send the client back to log in over an outage.
                raise Unavailable(
                    message="the signing keys cannot be fetched, please retry",
                    reason=Reason.DEPENDENCY_UNAVAILABLE,
                )
            raise token_invalid()
        return kid, key

    async def ensure_keys(self) -> bool:
        """Fetch the JWKS now when no key is held, else refresh it in the background when due
        (readiness probes call this every few seconds, so a service holds keys before its first
        request and refreshes them even while idle); return whether keys are held."""
        if not self._keys:
            await asyncio.shield(self._fetch_task())
        else:
            self._refresh_if_due()
        return bool(self._keys)

    def _refresh_if_due(self) -> None:
        """Start a background fetch when the keys are older than the refresh interval and the
        pace allows; never waits."""
        if self._monotonic() - self._fetched_at >= self._refresh and self._may_fetch():
            self._fetch_task()

    async def _refetch(self) -> None:
        """Wait for fresh keys: join the fetch in flight, or start one unless the last began
        moments ago (or fetches are failing: then the pace backs off)."""
        if self._fetching is not None and not self._fetching.done():
            await asyncio.shield(self._fetching)
        elif self._may_fetch():
            await asyncio.shield(self._fetch_task())

    def _may_fetch(self) -> bool:
        """Whether a fetch may start now: none in flight, and the last one began at least the
        minimum interval ago, doubled for each consecutive failure (up to the maximum)."""
        if self._fetching is not None and not self._fetching.done():
            return False
        # The exponent is capped only so that a long outage cannot overflow it.
        doubled = self._min_refetch * 2.0 ** min(self._failures, 32)
        return self._monotonic() - self._attempted_at >= min(doubled, self._max_backoff)

    def _fetch_task(self) -> asyncio.Task[None]:
        """The fetch in flight, started now if there is none. It runs as a task of its own, so a
        caller that gives up (its deadline) does not cancel it for the others."""
        if self._fetching is None or self._fetching.done():
            # Stamped at the start, so that a slow or failing auth_svc is not asked again meanwhile.
            self._attempted_at = self._monotonic()
            self._fetching = asyncio.create_task(self._fetch(), name="jwks-fetch")
        return self._fetching

    async def _fetch(self) -> None:
        """Fetch the JWKS and keep its keys; a failure keeps the keys held and is counted."""
        try:
            keys = {}
            for jwk in await self._fetch_jwks():
                kid = jwk.get("kid")
                if kid:
                    keys[kid] = jwt.PyJWK(dict(jwk), algorithm=ALGORITHM)
        except Exception as exc:  # any failure: verify with the keys held, retry later
            self._failures += 1
            log.warning(
                "cannot fetch the JWKS: %s", exc, extra={"consecutive_failures": self._failures}
            )
            return
        self._keys = keys
        self._fetched_at = self._monotonic()
        self._failures = 0

    def _remember(self, token: str, principal: Principal, expires_at: float, kid: str) -> None:
        """Cache a verified token, evicting the least recently used beyond the size bound."""
        self._verified[token] = (principal, expires_at, kid)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)


# The three refusals of a token. The edge answers with these same errors (tools/edge_jwt.py),
# so a client cannot tell which of the two refused it.
def token_missing() -> Unauthenticated:
    """The answer to a call that needs an access token and carries none."""
    return Unauthenticated(message="missing bearer access token", reason=Reason.TOKEN_MISSING)


def token_expired() -> Unauthenticated:
    """The answer to a correctly signed access token past its expiry."""
    return Unauthenticated(message="access token expired", reason=Reason.TOKEN_EXPIRED)


def token_invalid() -> Unauthenticated:
    """The one answer for malformed, tampered or unknown-key tokens."""
    return Unauthenticated(message="invalid access token", reason=Reason.TOKEN_INVALID)


def require_may_change(principal: Principal, unverified_email_may: str) -> None:
    """Raise PermissionDenied (EMAIL_NOT_VERIFIED) when the deployment lets accounts with an
    unverified email only read (MESHGRAM_UNVERIFIED_EMAIL_MAY=sign_in) and this one is such."""
    if unverified_email_may != "edit_profile" and not principal.email_verified:
        raise PermissionDenied(
            message="verify your email address first (then refresh your tokens)",
            reason=Reason.EMAIL_NOT_VERIFIED,
        )
