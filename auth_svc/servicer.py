"""AuthService over gRPC: translates protobuf messages to Authenticator calls and back."""

from __future__ import annotations

from typing import Any

import grpc

from auth_svc.accounts import Account
from auth_svc.authenticator import Authenticator, TokenPair
from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc


def _account(account: Account) -> auth_pb2.Account:
    """Public view of an account."""
    return auth_pb2.Account(id=account.id, email=account.email, username=account.username)


def _tokens(pair: TokenPair) -> auth_pb2.TokenPair:
    """Wire form of a token pair."""
    return auth_pb2.TokenPair(
        access_token=pair.access_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        refresh_expires_in=pair.refresh_expires_in,
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """meshgram.auth.v1.AuthService; errors are meshkit.errors, mapped by the interceptor."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def Register(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.RegisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth_pb2.RegisterResponse:
        """Create an account and return its public view."""
        account = await self._auth.register(request.email, request.username, request.password)
        return auth_pb2.RegisterResponse(account=_account(account))

    async def Login(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth_pb2.LoginResponse:
        """Exchange email and password for a token pair."""
        pair = await self._auth.login(request.email, request.password)
        return auth_pb2.LoginResponse(tokens=_tokens(pair))

    async def RefreshToken(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.RefreshTokenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth_pb2.RefreshTokenResponse:
        """Exchange a refresh token for a new token pair."""
        pair = await self._auth.refresh(request.refresh_token)
        return auth_pb2.RefreshTokenResponse(tokens=_tokens(pair))

    async def Logout(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.LogoutRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth_pb2.LogoutResponse:
        """Revoke the login of a refresh token; always succeeds."""
        await self._auth.logout(request.refresh_token)
        return auth_pb2.LogoutResponse()

    async def GetJwks(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth_pb2.GetJwksResponse:
        """Return the public keys that verify access tokens."""
        return auth_pb2.GetJwksResponse(
            keys=[auth_pb2.JsonWebKey(**key) for key in self._auth.jwks()]
        )
