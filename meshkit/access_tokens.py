"""Verification of access tokens (EdDSA JWTs) against the JWKS that auth_svc publishes.

Services verify every token themselves (defence in depth behind the edge). Keys are fetched
through an injected coroutine and cached; an unknown key id triggers one refetch, rate-limited,
so a key rotation at auth_svc is picked up without restarts.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from meshkit.errors import Unauthenticated
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
    """Verifies access tokens; successful results are cached until the token expires."""

    def __init__(
        self,
        fetch_jwks: JwksFetcher,
        *,
        leeway_seconds: float = 5.0,
        min_refetch_seconds: float = 30.0,
        cache_size: int = 10_000,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self._leeway = leeway_seconds
        self._min_refetch = min_refetch_seconds
        self._cache_size = cache_size
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        """Return the principal of the bearer token in a call's metadata; raise Unauthenticated
        when it is missing or invalid."""
        return await self.verify(bearer_token(metadata or ()))

    async def verify(self, token: str) -> Principal:
        """Return the principal of a valid token; raise Unauthenticated for any defect."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires_at = cached
            if time.time() < expires_at + self._leeway:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        key = await self._key_for(token)
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
        self._remember(token, principal, float(claims["exp"]))
        return principal

    async def _key_for(self, token: str) -> jwt.PyJWK:
        """Find the verification key named by the token's kid, refetching the JWKS once."""
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
            raise _invalid()
        return key

    async def _refresh(self) -> None:
        """Refetch the JWKS unless that happened moments ago."""
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._min_refetch and self._keys:
                return
            keys = {}
            for jwk in await self._fetch_jwks():
                kid = jwk.get("kid")
                if kid:
                    keys[kid] = jwt.PyJWK(dict(jwk), algorithm=ALGORITHM)
            self._keys = keys
            self._fetched_at = time.monotonic()

    def _remember(self, token: str, principal: Principal, expires_at: float) -> None:
        """Cache a verified token, evicting the least recently used beyond the size bound."""
        self._verified[token] = (principal, expires_at)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)


def _invalid() -> Unauthenticated:
    """The one answer for malformed, tampered or unknown-key tokens."""
    return Unauthenticated(message="invalid access token", reason=Reason.TOKEN_INVALID)
