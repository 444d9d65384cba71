"""AuthService over gRPC: translates protobuf messages to the flows' calls and back, and moves
the refresh token between bodies and browser cookies (auth_svc.web_clients)."""

from __future__ import annotations

from typing import Any

import grpc

from auth_svc.accounts import Account, Device
from auth_svc.activity import SecurityLog
from auth_svc.authenticator import Authenticator, MfaRequired, TokenPair
from auth_svc.email_changes import EmailChanges
from auth_svc.mfa import MfaSettings
from auth_svc.password_changes import PasswordChanges
from auth_svc.security_store import Event
from auth_svc.sessions import ListedSession, Sessions
from auth_svc.verification import EmailVerification
from auth_svc.web_clients import Metadata, WebClients, clear_cookie, set_cookie
from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshkit.access_tokens import AccessTokenVerifier, Principal
from meshkit.errors import NotFound
from meshkit.timestamps import to_timestamp

Context = grpc.aio.ServicerContext[Any, Any]


def _account(account: Account) -> auth_pb2.Account:
    """Public view of an account."""
    return auth_pb2.Account(
        id=account.id,
        email=account.email,
        username=account.username,
        email_verified=account.email_verified,
    )


def _session(listed: ListedSession) -> auth_pb2.Session:
    """Public view of a session."""
    session = listed.session
    return auth_pb2.Session(
        id=session.id,
        create_time=to_timestamp(session.created_at),
        last_use_time=to_timestamp(session.last_used_at),
        expire_time=to_timestamp(session.expires_at),
        user_agent=session.device.user_agent,
        client_ip=session.device.client_ip,
        remembered=session.remembered,
        current=listed.current,
    )


def _event(event: Event) -> auth_pb2.SecurityEvent:
    """Public view of a security-log entry."""
    return auth_pb2.SecurityEvent(
        id=str(event.id),
        kind=auth_pb2.SecurityEvent.Kind.Value(f"KIND_{event.kind.name}"),
        create_time=to_timestamp(event.created_at),
        client_ip=event.device.client_ip,
        user_agent=event.device.user_agent,
        session_id=event.session_id,
        detail=event.detail,
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """meshgram.auth.v1.AuthService; errors are meshkit.errors, mapped by the interceptor."""

    def __init__(
        self,
        authenticator: Authenticator,
        verification: EmailVerification,
        email_changes: EmailChanges,
        password_changes: PasswordChanges,
        sessions: Sessions,
        mfa: MfaSettings,
        activity: SecurityLog,
        verifier: AccessTokenVerifier,
        web: WebClients,
    ) -> None:
        self._auth = authenticator
        self._verification = verification
        self._email_changes = email_changes
        self._passwords = password_changes
        self._sessions = sessions
        self._mfa = mfa
        self._activity = activity
        self._verifier = verifier
        self._web = web

    async def Register(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        """Create an account and return its public view."""
        account = await self._auth.register(request.email, request.username, request.password)
        return auth_pb2.RegisterResponse(account=_account(account))

    async def Login(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        """Exchange email and password for a token pair."""
        metadata = context.invocation_metadata() or ()
        self._web.check_origin(metadata)
        outcome = await self._auth.login(
            request.email,
            request.password,
            remember_me=request.remember_me,
            device=self._web.device(metadata, context.peer()),
            captcha_token=request.captcha_token,
        )
        if isinstance(outcome, MfaRequired):
            return auth_pb2.LoginResponse(
                mfa_challenge=auth_pb2.MfaChallenge(
                    challenge=outcome.challenge, expires_in=outcome.expires_in
                )
            )
        return auth_pb2.LoginResponse(tokens=await self._deliver(outcome, metadata, context))

    async def VerifyMfa(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.VerifyMfaRequest, context: Context
    ) -> auth_pb2.VerifyMfaResponse:
        """Finish a login with its challenge and a second factor."""
        metadata = context.invocation_metadata() or ()
        self._web.check_origin(metadata)
        done = await self._auth.verify_mfa(
            request.challenge,
            request.code,
            request.recovery_code,
            device=self._web.device(metadata, context.peer()),
        )
        return auth_pb2.VerifyMfaResponse(
            tokens=await self._deliver(done.tokens, metadata, context),
            recovery_code_used=done.recovery_code_used,
            recovery_codes_left=done.recovery_codes_left,
        )

    async def Reauthenticate(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.ReauthenticateRequest, context: Context
    ) -> auth_pb2.ReauthenticateResponse:
        """Prove the caller's credentials again; a fresh access token."""
        principal, device = await self._caller(context)
        done = await self._auth.reauthenticate(
            principal, request.password, request.code, request.recovery_code, device=device
        )
        return auth_pb2.ReauthenticateResponse(
            access_token=done.access_token,
            expires_in=done.expires_in,
            auth_time=to_timestamp(done.auth_time),
        )

    async def GetMfa(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.GetMfaRequest, context: Context
    ) -> auth_pb2.GetMfaResponse:
        """The caller's MFA state."""
        principal, _ = await self._caller(context)
        state = await self._mfa.state(principal)
        mfa = auth_pb2.Mfa(
            enabled=state.enabled,
            recovery_codes_left=state.recovery_codes_left,
            enrollment_pending=state.pending_secret_sealed is not None,
        )
        if state.enabled_at is not None:
            mfa.enable_time.CopyFrom(to_timestamp(state.enabled_at))
        return auth_pb2.GetMfaResponse(mfa=mfa)

    async def StartMfaEnrollment(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.StartMfaEnrollmentRequest, context: Context
    ) -> auth_pb2.StartMfaEnrollmentResponse:
        """A new TOTP secret for the caller to confirm."""
        principal, _ = await self._caller(context)
        enrollment = await self._mfa.start_enrollment(principal)
        return auth_pb2.StartMfaEnrollmentResponse(
            secret=enrollment.secret,
            otpauth_uri=enrollment.otpauth_uri,
            qr_code_svg=enrollment.qr_svg,
            qr_code_png=enrollment.qr_png,
            qr_code_text=enrollment.qr_text,
            expires_in=enrollment.expires_in,
        )

    async def ConfirmMfaEnrollment(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.ConfirmMfaEnrollmentRequest, context: Context
    ) -> auth_pb2.ConfirmMfaEnrollmentResponse:
        """Turn MFA on with a first code; the recovery codes, once."""
        principal, device = await self._caller(context)
        codes = await self._mfa.confirm(principal, request.code, device)
        return auth_pb2.ConfirmMfaEnrollmentResponse(recovery_codes=codes)

    async def DisableMfa(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.DisableMfaRequest, context: Context
    ) -> auth_pb2.DisableMfaResponse:
        """Turn MFA off."""
        principal, device = await self._caller(context)
        await self._mfa.disable(principal, request.code, request.recovery_code, device)
        return auth_pb2.DisableMfaResponse()

    async def RegenerateRecoveryCodes(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.RegenerateRecoveryCodesRequest, context: Context
    ) -> auth_pb2.RegenerateRecoveryCodesResponse:
        """New recovery codes, once."""
        principal, device = await self._caller(context)
        codes = await self._mfa.regenerate_recovery_codes(principal, device)
        return auth_pb2.RegenerateRecoveryCodesResponse(recovery_codes=codes)

    async def ListSecurityEvents(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.ListSecurityEventsRequest, context: Context
    ) -> auth_pb2.ListSecurityEventsResponse:
        """A page of the caller's security activity."""
        principal, _ = await self._caller(context)
        page, following = await self._activity.page(
            principal, request.page_size, request.page_token
        )
        return auth_pb2.ListSecurityEventsResponse(
            events=[_event(e) for e in page.events], next_page_token=following
        )

    async def RefreshToken(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.RefreshTokenRequest, context: Context
    ) -> auth_pb2.RefreshTokenResponse:
        """Exchange a refresh token (from the body, else the browser's cookie) for a new pair."""
        metadata = context.invocation_metadata() or ()
        self._web.check_origin(metadata)
        token = request.refresh_token or self._web.cookie_token(metadata)
        pair = await self._auth.refresh(token, device=self._web.device(metadata, context.peer()))
        return auth_pb2.RefreshTokenResponse(tokens=await self._deliver(pair, metadata, context))

    async def Logout(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        """Revoke the login of a refresh token (or the cookie's, which is cleared); always
        succeeds."""
        metadata = context.invocation_metadata() or ()
        self._web.check_origin(metadata)
        token = request.refresh_token or self._web.cookie_token(metadata)
        await self._auth.logout(token)
        if self._web.is_browser(metadata):
            await context.send_initial_metadata((("set-cookie", clear_cookie()),))
        return auth_pb2.LogoutResponse()

    async def VerifyEmail(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.VerifyEmailRequest, context: Context
    ) -> auth_pb2.VerifyEmailResponse:
        """Mark the address of a verification token verified, or complete the email change of
        an email-change token."""
        try:
            account = await self._verification.verify(request.token)
        except NotFound as not_verification:
            try:
                account = await self._email_changes.confirm(request.token)
            except NotFound:
                # Neither kind: the answer a sign-up link gets, the more common one.
                raise not_verification from None
        return auth_pb2.VerifyEmailResponse(account=_account(account))

    async def ChangeEmail(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.ChangeEmailRequest, context: Context
    ) -> auth_pb2.ChangeEmailResponse:
        """Mail a link that moves the caller's account to a new address."""
        principal, _ = await self._caller(context)
        await self._email_changes.request(principal, request.new_email)
        return auth_pb2.ChangeEmailResponse()

    async def ResendVerificationEmail(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.ResendVerificationEmailRequest, context: Context
    ) -> auth_pb2.ResendVerificationEmailResponse:
        """Mail a new verification link if the address may get one; answers alike always."""
        await self._verification.resend(request.email)
        return auth_pb2.ResendVerificationEmailResponse()

    async def ChangePassword(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.ChangePasswordRequest, context: Context
    ) -> auth_pb2.ChangePasswordResponse:
        """Change the caller's password; other sessions end."""
        principal, device = await self._caller(context)
        ended = await self._passwords.change(
            principal, request.current_password, request.new_password, device
        )
        return auth_pb2.ChangePasswordResponse(ended_sessions=ended)

    async def RequestPasswordReset(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.RequestPasswordResetRequest, context: Context
    ) -> auth_pb2.RequestPasswordResetResponse:
        """Mail a reset link if the address is registered; answers alike always."""
        await self._passwords.request_reset(request.email)
        return auth_pb2.RequestPasswordResetResponse()

    async def ResetPassword(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.ResetPasswordRequest, context: Context
    ) -> auth_pb2.ResetPasswordResponse:
        """Set a new password with a reset token; every session ends."""
        metadata = context.invocation_metadata() or ()
        await self._passwords.reset(
            request.token, request.new_password, self._web.device(metadata, context.peer())
        )
        return auth_pb2.ResetPasswordResponse()

    async def ListSessions(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.ListSessionsRequest, context: Context
    ) -> auth_pb2.ListSessionsResponse:
        """List the caller's live sessions."""
        principal = await self._verifier.authenticate(context.invocation_metadata())
        listed = await self._sessions.list(principal)
        return auth_pb2.ListSessionsResponse(sessions=[_session(s) for s in listed])

    async def DeleteSession(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.DeleteSessionRequest, context: Context
    ) -> auth_pb2.DeleteSessionResponse:
        """End one of the caller's sessions."""
        principal, device = await self._caller(context)
        await self._sessions.end(principal, request.session_id, device)
        return auth_pb2.DeleteSessionResponse()

    async def DeleteOtherSessions(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.DeleteOtherSessionsRequest, context: Context
    ) -> auth_pb2.DeleteOtherSessionsResponse:
        """End every session of the caller but the current one."""
        principal, device = await self._caller(context)
        ended = await self._sessions.end_others(principal, device)
        return auth_pb2.DeleteOtherSessionsResponse(ended_sessions=ended)

    async def GetJwks(  # noqa: N802 (name fixed by the proto)
        self, request: auth_pb2.GetJwksRequest, context: Context
    ) -> auth_pb2.GetJwksResponse:
        """Return the public keys that verify access tokens."""
        return auth_pb2.GetJwksResponse(
            keys=[auth_pb2.JsonWebKey(**key) for key in self._auth.jwks()]
        )

    async def _caller(self, context: Context) -> tuple[Principal, Device]:
        """The authenticated caller of a call and the device it comes from."""
        metadata = context.invocation_metadata() or ()
        principal = await self._verifier.authenticate(metadata)
        return principal, self._web.device(metadata, context.peer())

    async def _deliver(
        self, pair: TokenPair, metadata: Metadata, context: Context
    ) -> auth_pb2.TokenPair:
        """The wire token pair; for a browser the refresh token goes into the cookie instead
        (with a Max-Age only for a remembered session)."""
        message = auth_pb2.TokenPair(
            access_token=pair.access_token,
            token_type=pair.token_type,
            expires_in=pair.expires_in,
            refresh_token=pair.refresh_token,
            refresh_expires_in=pair.refresh_expires_in,
            session_id=pair.session_id,
        )
        if self._web.is_browser(metadata):
            max_age = pair.refresh_expires_in if pair.remembered else None
            await context.send_initial_metadata(
                (("set-cookie", set_cookie(pair.refresh_token, max_age)),)
            )
            message.refresh_token = ""
            message.refresh_token_in_cookie = True
        return message
