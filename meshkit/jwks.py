"""The JWKS of auth_svc as meshkit.access_tokens.AccessTokenVerifier reads it."""

from __future__ import annotations

import grpc

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshkit.access_tokens import JwksFetcher
from meshkit.clients import PeerCaller


def auth_jwks_fetcher(channel: grpc.aio.Channel, peer: PeerCaller) -> JwksFetcher:
    """Return a coroutine function that reads auth_svc's JWKS as a list of JWK dicts."""
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def fetch() -> list[dict[str, str]]:
        response = await peer.unary(stub.GetJwks, auth_pb2.GetJwksRequest())
        return [_jwk(key) for key in response.keys]

    return fetch


def _jwk(key: auth_pb2.JsonWebKey) -> dict[str, str]:
    """One JWK as a dict, without the members auth_svc left empty."""
    members = {
        "kty": key.kty,
        "crv": key.crv,
        "x": key.x,
        "kid": key.kid,
        "alg": key.alg,
        "use": key.use,
    }
    return {name: value for name, value in members.items() if value}
