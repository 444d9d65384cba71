"""Typed client of data_access's AccountStoreService: protobuf in, auth_svc's domain types out."""

from __future__ import annotations

from datetime import datetime, timedelta

import grpc

from auth_svc.accounts import (
    Account,
    Device,
    MailedToken,
    NewSession,
    PasswordChange,
    Rotated,
    SealedMail,
    SessionInfo,
    SessionStart,
    StoredCredentials,
    TakenNotice,
    TokenPurpose,
)
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc
from meshkit.clients import PeerCaller
from meshkit.errors import NotFound
from meshkit.timestamps import to_datetime, to_timestamp

_PURPOSES = {
    TokenPurpose.VERIFY_EMAIL: pb.ACCOUNT_TOKEN_PURPOSE_VERIFY_EMAIL,
    TokenPurpose.RESET_PASSWORD: pb.ACCOUNT_TOKEN_PURPOSE_RESET_PASSWORD,
    TokenPurpose.CHANGE_EMAIL: pb.ACCOUNT_TOKEN_PURPOSE_CHANGE_EMAIL,
}


def account_from_record(record: pb.AccountRecord) -> Account:
    """Convert a stored account record to the domain Account."""
    return Account(
        id=record.id,
        email=record.email,
        username=record.username,
        email_verified=record.email_verified,
    )


def mail_message(mail: SealedMail) -> pb.SealedMail:
    """Wire form of a sealed mail."""
    return pb.SealedMail(kind=mail.kind, sealed=mail.sealed)


def device_message(device: Device) -> pb.SessionDevice:
    """Wire form of a device."""
    return pb.SessionDevice(user_agent=device.user_agent, client_ip=device.client_ip)


def session_message(account_id: str, session: NewSession) -> pb.CreateRefreshTokenRequest:
    """Wire form of a login to store: its session and first refresh token."""
    return pb.CreateRefreshTokenRequest(
        account_id=account_id,
        token_hash=session.token_hash,
        expire_time=to_timestamp(session.expires_at),
        session_end_time=to_timestamp(session.ends_at),
        remembered=session.remembered,
        device=device_message(session.device),
    )


def _token(token: MailedToken) -> pb.NewAccountToken:
    """Wire form of a single-use token to store."""
    return pb.NewAccountToken(
        token_hash=token.token_hash, expire_time=to_timestamp(token.expires_at)
    )


def _session(record: pb.SessionRecord) -> SessionInfo:
    """Convert a stored session to the domain SessionInfo."""
    return SessionInfo(
        id=record.id,
        created_at=to_datetime(record.create_time),
        last_used_at=to_datetime(record.last_use_time),
        expires_at=to_datetime(record.expire_time),
        remembered=record.remembered,
        device=Device(user_agent=record.device.user_agent, client_ip=record.device.client_ip),
    )


class AccountStoreClient:
    """AccountStoreService over a channel; implements auth_svc.accounts.AccountStore."""

    def __init__(self, channel: grpc.aio.Channel, caller: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.AccountStoreServiceStub(channel)
        self._caller = caller

    async def create_account(
        self,
        email: str,
        username: str,
        password_hash: str,
        verification: MailedToken | None,
        if_email_taken: TakenNotice | None = None,
    ) -> Account:
        """Create an account (with its verification token and mail, atomically); AlreadyExists
        USERNAME_TAKEN when the username is used, else EMAIL_TAKEN when the email is, after
        queueing if_email_taken's notice for the email's owner (at most once per cooldown)."""
        request = pb.CreateAccountRequest(
            email=email, username=username, password_hash=password_hash
        )
        if verification is not None:
            request.verification.CopyFrom(_token(verification))
            request.mail.CopyFrom(mail_message(verification.mail))
        if if_email_taken is not None:
            request.mail_if_email_taken.CopyFrom(mail_message(if_email_taken.mail))
            request.taken_mail_cooldown.FromTimedelta(
                timedelta(seconds=if_email_taken.cooldown_seconds)
            )
        response = await self._caller.unary(self._stub.CreateAccount, request)
        return account_from_record(response.account)

    async def get_credentials(self, email: str) -> StoredCredentials | None:
        """Return the account and password hash for a normalised email, or None."""
        return await self._credentials(pb.GetCredentialsRequest(email=email))

    async def _credentials(self, request: pb.GetCredentialsRequest) -> StoredCredentials | None:
        """Ask for credentials; None when there is no such account."""
        try:
            response = await self._caller.unary(self._stub.GetCredentials, request)
        except NotFound:
            return None
        return StoredCredentials(
            account=account_from_record(response.account), password_hash=response.password_hash
        )

    async def get_credentials_by_id(self, account_id: str) -> StoredCredentials | None:
        """Return the account and password hash for an account id, or None."""
        return await self._credentials(pb.GetCredentialsRequest(account_id=account_id))

    async def create_session(self, account_id: str, session: NewSession) -> SessionStart:
        """Store a new login (its session and first refresh token) and return its id."""
        request = session_message(account_id, session)
        response = await self._caller.unary(self._stub.CreateRefreshToken, request)
        return SessionStart(
            session_id=response.family_id, started_at=to_datetime(response.session_start_time)
        )

    async def rotate_refresh_token(
        self,
        token_hash: str,
        new_token_hash: str,
        new_expires_at: datetime,
        *,
        reuse_window_seconds: float = 0.0,
        device: Device | None = None,
    ) -> Rotated:
        """Consume a token and store its successor; the same rotation repeated within the
        reuse window succeeds again. NotFound when invalid, expired or past the session's end;
        FailedPrecondition when already consumed (the family is then revoked)."""
        request = pb.RotateRefreshTokenRequest(
            token_hash=token_hash,
            new_token_hash=new_token_hash,
            new_expire_time=to_timestamp(new_expires_at),
        )
        request.reuse_window.FromTimedelta(timedelta(seconds=reuse_window_seconds))
        if device is not None:
            request.device.CopyFrom(device_message(device))
        response = await self._caller.unary(self._stub.RotateRefreshToken, request)
        return Rotated(
            account=account_from_record(response.account),
            expires_at=to_datetime(response.new_expire_time),
            session_id=response.family_id,
            # A data_access older than the auth_time field answers the session's start.
            auth_time=to_datetime(
                response.auth_time
                if response.HasField("auth_time")
                else response.session_start_time
            ),
            remembered=response.remembered,
        )

    async def revoke_refresh_token(self, token_hash: str) -> None:
        """Revoke the family of a token; unknown tokens are not an error."""
        request = pb.RevokeRefreshTokenRequest(token_hash=token_hash)
        await self._caller.unary(self._stub.RevokeRefreshToken, request)

    async def replace_password_hash(self, account_id: str, old_hash: str, new_hash: str) -> bool:
        """Re-hash: set new_hash if the account's hash is still old_hash; return whether it was."""
        request = pb.ReplacePasswordHashRequest(
            account_id=account_id, old_password_hash=old_hash, new_password_hash=new_hash
        )
        response = await self._caller.unary(self._stub.ReplacePasswordHash, request)
        return response.replaced

    async def change_password_hash(
        self, account_id: str, old_hash: str, new_hash: str, change: PasswordChange
    ) -> int | None:
        """Set a new password's hash if the account's hash is still old_hash, ending every other
        session and queueing the mail with it; return how many sessions ended, or None when
        the hash had changed meanwhile (nothing was done)."""
        request = pb.ReplacePasswordHashRequest(
            account_id=account_id,
            old_password_hash=old_hash,
            new_password_hash=new_hash,
            password_changed=True,
            keep_session_id=change.keep_session_id,
        )
        if change.mail is not None:
            request.mail.CopyFrom(mail_message(change.mail))
        response = await self._caller.unary(self._stub.ReplacePasswordHash, request)
        return response.ended_sessions if response.replaced else None

    async def issue_account_token(
        self, email: str, purpose: TokenPurpose, token: MailedToken, cooldown_seconds: float
    ) -> None:
        """Store a token and its mail for the account of email, if there is one that may get
        it now; answers alike in every case."""
        request = pb.IssueAccountTokenRequest(
            email=email,
            purpose=_PURPOSES[purpose],
            token=_token(token),
            mail=mail_message(token.mail),
        )
        request.cooldown.FromTimedelta(timedelta(seconds=cooldown_seconds))
        await self._caller.unary(self._stub.IssueAccountToken, request)

    async def request_email_change(
        self,
        account_id: str,
        new_email: str,
        token: MailedToken,
        notice: SealedMail | None,
        cooldown_seconds: float,
    ) -> None:
        """Store a token that moves the account to new_email, queueing its mail and the notice
        to the current address; nothing within the cooldown. NotFound (ACCOUNT_NOT_FOUND)."""
        request = pb.RequestEmailChangeRequest(
            account_id=account_id,
            new_email=new_email,
            token=_token(token),
            mail=mail_message(token.mail),
        )
        if notice is not None:
            request.notice.CopyFrom(mail_message(notice))
        request.cooldown.FromTimedelta(timedelta(seconds=cooldown_seconds))
        await self._caller.unary(self._stub.RequestEmailChange, request)

    async def lookup_account_token(self, token_hash: str, purpose: TokenPurpose) -> Account:
        """Return the account of a usable token; NotFound (ACCOUNT_TOKEN_INVALID) otherwise."""
        request = pb.LookupAccountTokenRequest(token_hash=token_hash, purpose=_PURPOSES[purpose])
        response = await self._caller.unary(self._stub.LookupAccountToken, request)
        return account_from_record(response.account)

    async def use_account_token(
        self,
        token_hash: str,
        purpose: TokenPurpose,
        *,
        new_password_hash: str = "",
        mail: SealedMail | None = None,
    ) -> Account:
        """Use a token up and apply what it proves; NotFound (ACCOUNT_TOKEN_INVALID) when it is
        not usable."""
        request = pb.UseAccountTokenRequest(
            token_hash=token_hash, purpose=_PURPOSES[purpose], new_password_hash=new_password_hash
        )
        if mail is not None:
            request.mail.CopyFrom(mail_message(mail))
        response = await self._caller.unary(self._stub.UseAccountToken, request)
        return account_from_record(response.account)

    async def list_sessions(self, account_id: str) -> list[SessionInfo]:
        """Return the live sessions of an account, most recently used first."""
        request = pb.ListSessionsRequest(account_id=account_id)
        response = await self._caller.unary(self._stub.ListSessions, request)
        return [_session(record) for record in response.sessions]

    async def revoke_sessions(
        self, account_id: str, *, session_id: str | None = None, all_except: str | None = None
    ) -> int:
        """End one session (NotFound SESSION_NOT_FOUND unless live and the account's) or every
        session but all_except; return how many ended."""
        request = pb.RevokeSessionsRequest(account_id=account_id)
        if session_id is not None:
            request.session_id = session_id
        else:
            request.all_except_session_id = all_except or ""
        response = await self._caller.unary(self._stub.RevokeSessions, request)
        return response.revoked_count
