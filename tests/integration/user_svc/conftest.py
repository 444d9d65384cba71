"""user_svc in-process against the session's data_access and auth_svc.

`user_address` and `users` (user_svc verifying tokens with auth_svc's JWKS) come from
tests/integration/conftest.py. Fixtures here:
- `issuer` (session) -> `LocalIssuer`, an Ed25519 key of the test's own that signs any claims.
- `users_trusting_issuer` (session) -> UserService stub on a second user_svc whose JWKS is the
  issuer's (injected with `jwks_fetcher`), for tokens auth_svc would never issue (expired ones).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from meshgram.user.v1 import user_pb2_grpc
from meshkit.access_tokens import AUDIENCE, ISSUER
from tests.helpers import serving
from user_svc.server import build_definition
from user_svc.settings import UserSettings


@dataclass(frozen=True)
class LocalIssuer:
    """Signs access tokens with a key only the tests know."""

    kid: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def jwks(self) -> list[dict[str, str]]:
        """The public half as auth_svc would publish it."""
        jwk: dict[str, str] = OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return [{**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]

    def token(self, account_id: str, username: str, *, lifetime: float = 900, **extra: Any) -> str:
        """An access token for account_id; a negative lifetime makes it expired."""
        now = int(time.time())
        claims = {
            "sub": account_id,
            "name": username,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now - 60,
            "exp": int(now + lifetime),
            "jti": uuid.uuid4().hex,
            **extra,
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})


@pytest.fixture(scope="session")
def issuer() -> LocalIssuer:
    """A signing key of the tests' own."""
    return LocalIssuer()


@pytest.fixture(scope="session")
async def users_trusting_issuer(
    user_settings: UserSettings, issuer: LocalIssuer
) -> AsyncIterator[user_pb2_grpc.UserServiceStub]:
    """UserService stub on a user_svc whose JWKS is the local issuer's."""

    async def fetch() -> list[dict[str, str]]:
        return issuer.jwks()

    async with (
        serving(build_definition(user_settings, jwks_fetcher=fetch)) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield user_pb2_grpc.UserServiceStub(channel)
