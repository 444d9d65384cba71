"""Verification of access tokens (EdDSA JWTs) against the JWKS that auth_svc publishes.

Services verify every token themselves (defence in depth behind the edge). Keys are fetched
through an injected coroutine and cached; an unknown key id triggers one refetch, rate-limited
whether it succeeds or not, so a key rotation at auth_svc is picked up without restarts and an
outage of auth_svc is not hammered. A verified token is trusted from cache only while its key
is still published.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from meshkit.errors import Unauthenticated, Unavailable
from meshkit.reasons import Reason

ISSUER = "meshgram-auth"
AUDIENCE = "meshgram"
ALGORITHM = "EdDSA"

JwksFetcher = Callable[[], Awaitable[Iterable[Mapping[str, str]]]]


@dataclass(frozen=True)
class Principal:
    """The authenticated account behind a request."""

    account_id: str
    username: str


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """Return the bearer token from request metadata or raise Unauthenticated."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise Unauthenticated(message="missing bearer access token", reason=Reason.TOKEN_MISSING)


class AccessTokenVerifier:
    """Verifies access tokens; successful results are cached until the token expires or its key
    leaves the JWKS."""

    def __init__(
        self,
        fetch_jwks: JwksFetcher,
        *,
        leeway_seconds: float = 5.0,
        min_refetch_seconds: float = 30.0,
        cache_size: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self._monotonic = monotonic  # paces refetches; replaceable in tests
        self._leeway = leeway_seconds
        self._min_refetch = min_refetch_seconds
        self._cache_size = cache_size
        self._keys: dict[str, jwt.PyJWK] = {}
        self._attempted_at = float("-inf")
        self._fetch_failed = False
        self._lock = asyncio.Lock()
        # token -> (principal, expiry, kid of the key that verified it)
        self._verified: OrderedDict[str, tuple[Principal, float, str]] = OrderedDict()

    async def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        """Return the principal of the bearer token in a call's metadata; raise Unauthenticated
        when it is missing or invalid."""
        return await self.verify(bearer_token(metadata or ()))

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
            raise _invalid()
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
            raise Unauthenticated(
                message="access token expired", reason=Reason.TOKEN_EXPIRED
            ) from None
        except jwt.PyJWTError:
            raise _invalid() from None
        principal = Principal(account_id=str(claims["sub"]), username=str(claims.get("name", "")))
        self._remember(token, principal, float(claims["exp"]), kid)
        return principal

    async def _key_for(self, token: str) -> tuple[str, jwt.PyJWK]:
        """Find the kid and verification key of a token, refetching the JWKS once."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise _invalid() from None
        if not isinstance(kid, str):
            raise _invalid()
        if kid not in self._keys:
            await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            if self._fetch_failed:
                # The key may well exist: do not send the client back to log in over an outage.
                raise Unavailable(
                    message="the signing keys cannot be fetched, please retry",
                    reason=Reason.DEPENDENCY_UNAVAILABLE,
                )
            raise _invalid()
        return kid, key

    async def ensure_keys(self) -> bool:
        """Fetch the JWKS now when no key is held (readiness probes call this every few seconds,
        so a service holds keys before its first request); return whether keys are held."""
        if not self._keys:
            async with self._lock:
                if not self._keys:
                    with contextlib.suppress(Exception):
                        await self._fetch()
        return bool(self._keys)

    async def _refresh(self) -> None:
        """Refetch the JWKS unless that was tried moments ago; a failed fetch keeps the keys."""
        async with self._lock:
            recent = self._monotonic() - self._attempted_at < self._min_refetch
            # Only a successful but empty answer is retried at once: auth_svc may be starting.
            if recent and (self._keys or self._fetch_failed):
                return
            await self._fetch()

    async def _fetch(self) -> None:
        """Fetch the JWKS and keep its keys (callers hold the lock); a failure keeps the old."""
        # Stamped before the fetch, so a failing auth_svc is asked once per interval, not once
        # per request with an unknown kid.
        self._attempted_at = self._monotonic()
        self._fetch_failed = True
        keys = {}
        for jwk in await self._fetch_jwks():
            kid = jwk.get("kid")
            if kid:
                keys[kid] = jwt.PyJWK(dict(jwk), algorithm=ALGORITHM)
        self._keys = keys
        self._fetch_failed = False

    def _remember(self, token: str, principal: Principal, expires_at: float, kid: str) -> None:
        """Cache a verified token, evicting the least recently used beyond the size bound."""
        self._verified[token] = (principal, expires_at, kid)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)


def _invalid() -> Unauthenticated:
    """The one answer for malformed, tampered or unknown-key tokens."""
    return Unauthenticated(message="invalid access token", reason=Reason.TOKEN_INVALID)
