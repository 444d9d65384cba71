"""Access tokens (EdDSA JWTs), the JWKS that verifies them, and opaque refresh tokens.

Access token claims: sub (account id), name (username), sid (session id), email_verified,
auth_time (when the password was last checked for this session), iss, aud, iat, exp, jti; the header
names the signing key by kid, its RFC 7638 thumbprint, so verifiers pick the key from the JWKS.
Refresh tokens are 256 bits, random at login; the successor a refresh issues is derived from
the presented token with a server key (HMAC-SHA256), so that the same refresh repeated (two
tabs at once) yields the same successor. Only their SHA-256 (hex) ever leaves this process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshkit.access_tokens import ALGORITHM, AUDIENCE, ISSUER

TOKEN_TYPE = "Bearer"

Clock = Callable[[], float]


@dataclass(frozen=True)
class AccessToken:
    """A signed access token and its lifetime in seconds."""

    token: str
    expires_in: int


@dataclass(frozen=True)
class SessionClaims:
    """What an access token says about the login it belongs to."""

    session_id: str
    email_verified: bool
    auth_time: float
    """When the password was checked for this session (Unix seconds)."""


@dataclass(frozen=True)
class OpaqueToken:
    """A new opaque token (a refresh token, or a mailed link's): the secret for the client, the
    hash for the store, its expiry."""

    token: str
    token_hash: str
    expires_at: datetime
    expires_in: int


def _b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """Return the required members of the key's JWK (RFC 8037): kty, crv, x."""
    raw = public_key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def thumbprint(public_key: Ed25519PublicKey) -> str:
    """Return the RFC 7638 JWK thumbprint (SHA-256, base64url) used as the key id."""
    canonical = json.dumps(public_jwk(public_key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


class SigningKeys(Protocol):
    """The keys of an AccessTokenSigner as they stand at a given time (auth_svc.keyring)."""

    def signing_key(self, now: float) -> tuple[str, Ed25519PrivateKey]:
        """Return the kid and private key that sign tokens issued at now."""
        ...

    def verification_keys(self, now: float) -> list[Ed25519PublicKey]:
        """Return the public keys verifiers need at now."""
        ...


class _OneKey:
    """A single key that always signs and is the only one published."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._kid = thumbprint(private_key.public_key())

    def signing_key(self, now: float) -> tuple[str, Ed25519PrivateKey]:
        """Return the one key, whatever the time."""
        return self._kid, self._key

    def verification_keys(self, now: float) -> list[Ed25519PublicKey]:
        """Return the one key's public half, whatever the time."""
        return [self._key.public_key()]


class AccessTokenSigner:
    """Signs access tokens with the key that signs now and publishes, as a JWKS, every key that
    verifiers need now (several around a rotation)."""

    def __init__(
        self,
        keys: SigningKeys | Ed25519PrivateKey,
        *,
        ttl_seconds: int,
        clock: Clock = time.time,
    ) -> None:
        self._keys = _OneKey(keys) if isinstance(keys, Ed25519PrivateKey) else keys
        self._ttl = ttl_seconds
        self._clock = clock

    @property
    def kid(self) -> str:
        """Key id carried in the header of the tokens issued now."""
        return self._keys.signing_key(self._clock())[0]

    def issue(
        self, account_id: str, username: str, session: SessionClaims | None = None
    ) -> AccessToken:
        """Return a token for the account, valid for the configured lifetime from now; session
        adds the claims of the login it belongs to."""
        issued_at = int(self._clock())
        claims: dict[str, object] = {
            "sub": account_id,
            "name": username,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": issued_at,
            "exp": issued_at + self._ttl,
            "jti": uuid.uuid4().hex,
        }
        if session is not None:
            claims["sid"] = session.session_id
            claims["email_verified"] = session.email_verified
            claims["auth_time"] = int(session.auth_time)
        kid, key = self._keys.signing_key(issued_at)
        token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})
        return AccessToken(token=token, expires_in=self._ttl)

    def jwks(self) -> list[dict[str, str]]:
        """Return the JSON Web Key Set: every key currently accepted for access tokens."""
        return [
            {**public_jwk(public), "kid": thumbprint(public), "alg": ALGORITHM, "use": "sig"}
            for public in self._keys.verification_keys(self._clock())
        ]


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of an opaque token (refresh or mailed), the only form the store
    ever sees."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(ttl_seconds: int, *, clock: Clock = time.time) -> OpaqueToken:
    """Return a fresh 256-bit base64url token (a login's first refresh token, or a mailed
    link's) that expires ttl_seconds from now."""
    return _opaque_token(secrets.token_urlsafe(32), ttl_seconds, clock)


def successor_refresh_token(
    presented: str, key: bytes, ttl_seconds: int, *, clock: Clock = time.time
) -> OpaqueToken:
    """Return the token that replaces `presented`: always the same for the same token and key,
    unpredictable without the key; it expires ttl_seconds from now."""
    digest = hmac.new(key, presented.encode("utf-8"), hashlib.sha256).digest()
    return _opaque_token(_b64url(digest), ttl_seconds, clock)


def successor_key(secret: str) -> bytes:
    """The key successor_refresh_token uses, derived from a server secret for this one purpose."""
    return hmac.new(
        secret.encode("utf-8"), b"meshgram refresh-token successor v1", "sha256"
    ).digest()


def _opaque_token(token: str, ttl_seconds: int, clock: Clock) -> OpaqueToken:
    """A token with its hash and an expiry ttl_seconds from now."""
    expires_at = datetime.fromtimestamp(clock(), tz=UTC) + timedelta(seconds=ttl_seconds)
    return OpaqueToken(
        token=token,
        token_hash=hash_token(token),
        expires_at=expires_at,
        expires_in=ttl_seconds,
    )
