"""Typed client of data_access's AccountStoreService: protobuf in, auth_svc's domain types out."""

from __future__ import annotations

from datetime import datetime, timedelta

import grpc

from auth_svc.accounts import Account, Rotated, StoredCredentials
from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.clients import PeerCaller
from meshkit.errors import NotFound
from meshkit.timestamps import to_datetime, to_timestamp


def _account(record: dataaccess_pb2.AccountRecord) -> Account:
    """Convert a stored account record to the domain Account."""
    return Account(id=record.id, email=record.email, username=record.username)


class AccountStoreClient:
    """AccountStoreService over a channel; implements auth_svc.accounts.AccountStore."""

    def __init__(self, channel: grpc.aio.Channel, caller: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.AccountStoreServiceStub(channel)
        self._caller = caller

    async def create_account(self, email: str, username: str, password_hash: str) -> Account:
        """Create an account; AlreadyExists (EMAIL_TAKEN / USERNAME_TAKEN) when either is used."""
        request = dataaccess_pb2.CreateAccountRequest(
            email=email, username=username, password_hash=password_hash
        )
        response = await self._caller.unary(self._stub.CreateAccount, request)
        return _account(response.account)

    async def get_credentials(self, email: str) -> StoredCredentials | None:
        """Return the account and password hash for a normalised email, or None."""
        request = dataaccess_pb2.GetCredentialsRequest(email=email)
        try:
            response = await self._caller.unary(self._stub.GetCredentials, request)
        except NotFound:
            return None
        return StoredCredentials(
            account=_account(response.account), password_hash=response.password_hash
        )

    async def create_refresh_token(
        self, account_id: str, token_hash: str, expires_at: datetime
    ) -> str:
        """Store the first refresh token of a new family and return the family id."""
        request = dataaccess_pb2.CreateRefreshTokenRequest(
            account_id=account_id, token_hash=token_hash, expire_time=to_timestamp(expires_at)
        )
        response = await self._caller.unary(self._stub.CreateRefreshToken, request)
        return response.family_id

    async def rotate_refresh_token(
        self,
        token_hash: str,
        new_token_hash: str,
        new_expires_at: datetime,
        *,
        reuse_window_seconds: float = 0.0,
        session_lifetime_seconds: int | None = None,
    ) -> Rotated:
        """Consume a token and store its successor; the same rotation repeated within the
        reuse window succeeds again. NotFound when invalid, expired or past the session's
        lifetime; FailedPrecondition when already consumed (the family is then revoked)."""
        request = dataaccess_pb2.RotateRefreshTokenRequest(
            token_hash=token_hash,
            new_token_hash=new_token_hash,
            new_expire_time=to_timestamp(new_expires_at),
        )
        request.reuse_window.FromTimedelta(timedelta(seconds=reuse_window_seconds))
        if session_lifetime_seconds is not None:
            request.session_lifetime.FromTimedelta(timedelta(seconds=session_lifetime_seconds))
        response = await self._caller.unary(self._stub.RotateRefreshToken, request)
        return Rotated(_account(response.account), to_datetime(response.new_expire_time))

    async def revoke_refresh_token(self, token_hash: str) -> None:
        """Revoke the family of a token; unknown tokens are not an error."""
        request = dataaccess_pb2.RevokeRefreshTokenRequest(token_hash=token_hash)
        await self._caller.unary(self._stub.RevokeRefreshToken, request)

    async def replace_password_hash(self, account_id: str, old_hash: str, new_hash: str) -> bool:
        """Set new_hash if the account's hash is still old_hash; return whether it was set."""
        request = dataaccess_pb2.ReplacePasswordHashRequest(
            account_id=account_id, old_password_hash=old_hash, new_password_hash=new_hash
        )
        response = await self._caller.unary(self._stub.ReplacePasswordHash, request)
        return response.replaced
