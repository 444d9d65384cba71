"""Changing a password, and resetting a forgotten one through a mailed link.

A change needs the current password and ends every other session; a reset needs the single-use
token of a mail (at most AUTH_RESET_TOKEN_TTL_SECONDS old) and ends every session. Neither signs
anyone in: a reset only lets its holder log in again, through the whole login (multi-factor
included once it exists). Both mail the owner that the password changed.
"""

from __future__ import annotations

import asyncio
import time

from auth_svc import passwords, tokens
from auth_svc.accounts import (
    AccountStore,
    Device,
    MailedToken,
    Mailer,
    MailKind,
    PasswordChange,
    TokenPurpose,
)
from auth_svc.activity import SecurityLog
from auth_svc.passwords import PasswordHasher
from auth_svc.security_store import EventKind, NewEvent
from auth_svc.tokens import Clock
from auth_svc.verification import checked_email, invalid_link, required_token
from meshkit.access_tokens import Principal
from meshkit.errors import FailedPrecondition, FieldViolation, NotFound, Unauthenticated, invalid
from meshkit.reasons import Reason

CURRENT_FIELD = "current_password"
NEW_FIELD = "new_password"


class PasswordChanges:
    """Changes passwords of signed-in accounts and resets forgotten ones."""

    def __init__(
        self,
        store: AccountStore,
        hasher: PasswordHasher,
        mailer: Mailer,
        log: SecurityLog,
        *,
        reset_ttl_seconds: int,
        cooldown_seconds: float,
        min_score: int,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._mailer = mailer
        self._log = log
        self._reset_ttl = reset_ttl_seconds
        self._cooldown = cooldown_seconds
        self._min_score = min_score
        self._clock = clock

    async def change(
        self, principal: Principal, current: str, new: str, device: Device | None = None
    ) -> int:
        """Set a new password for the caller after checking the current one; every other
        session ends (their count is returned) and the owner is mailed. Unauthenticated
        (INVALID_CREDENTIALS) for a wrong current password, InvalidArgument for a weak one."""
        if not current:
            raise invalid([FieldViolation(CURRENT_FIELD, "is required")])
        credentials = await self._store.get_credentials_by_id(principal.account_id)
        matches = await self._hasher.verify(
            current, credentials.password_hash if credentials is not None else None
        )
        if credentials is None or not matches:
            raise Unauthenticated(
                message="current password is incorrect", reason=Reason.INVALID_CREDENTIALS
            )
        account = credentials.account
        await self._check_strength(new, account.email, account.username)
        new_hash = await self._hasher.hash(new)
        ended = await self._store.change_password_hash(
            account.id,
            credentials.password_hash,
            new_hash,
            PasswordChange(
                keep_session_id=principal.session_id,
                mail=self._mailer.compose(MailKind.PASSWORD_CHANGED, account.email),
            ),
        )
        if ended is None:
            # Another change won the race; this one was checked against a stale password.
            raise FailedPrecondition(
                message="the password changed meanwhile; try again with the new one",
                reason=Reason.PASSWORD_CHANGED,
            )
        self._mailer.queued()
        await self._log.record(
            NewEvent(
                account.id,
                EventKind.PASSWORD_CHANGED,
                device or Device(),
                principal.session_id,
                detail=f"{ended} other sessions ended",
            )
        )
        return ended

    async def request_reset(self, email: str) -> None:
        """Mail a reset link to a registered address at most once per cooldown; succeeds alike,
        doing the same work, whether or not the address is registered."""
        address = checked_email(email)
        token = tokens.new_token(self._reset_ttl, clock=self._clock)
        mailed = MailedToken(
            token_hash=token.token_hash,
            expires_at=token.expires_at,
            mail=self._mailer.compose(MailKind.RESET_PASSWORD, address, token=token.token),
        )
        await self._store.issue_account_token(
            address, TokenPurpose.RESET_PASSWORD, mailed, self._cooldown
        )
        self._mailer.queued()

    async def reset(self, token: str, new: str, device: Device | None = None) -> None:
        """Set a new password with a reset token and end every session of the account;
        NotFound (ACCOUNT_TOKEN_INVALID) for an unknown, used or expired token, InvalidArgument
        for a weak password."""
        token = required_token(token)
        token_hash = tokens.hash_token(token)
        try:
            account = await self._store.lookup_account_token(
                token_hash, TokenPurpose.RESET_PASSWORD
            )
        except NotFound:
            raise invalid_link("password reset") from None
        await self._check_strength(new, account.email, account.username)
        new_hash = await self._hasher.hash(new)
        try:
            await self._store.use_account_token(
                token_hash,
                TokenPurpose.RESET_PASSWORD,
                new_password_hash=new_hash,
                mail=self._mailer.compose(MailKind.PASSWORD_CHANGED, account.email),
            )
        except NotFound:
            # Used by a concurrent reset between the look-up and now.
            raise invalid_link("password reset") from None
        self._mailer.queued()
        await self._log.record(
            NewEvent(
                account.id,
                EventKind.PASSWORD_RESET,
                device or Device(),
                detail="every session ended",
            )
        )

    async def _check_strength(self, password: str, email: str, username: str) -> None:
        """Raise InvalidArgument (field new_password) when the password breaks the policy."""
        violations = await asyncio.to_thread(
            passwords.policy_violations,
            password,
            user_inputs=(email, username),
            min_score=self._min_score,
            field=NEW_FIELD,
        )
        if violations:
            raise invalid(violations)
