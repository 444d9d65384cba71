"""Email verification: the token mailed at sign-up, its use, and resending it.

A verification proves the owner reads mail at the address. Tokens are single-use, expire
(AUTH_VERIFY_EMAIL_TOKEN_TTL_SECONDS) and are stored only as hashes; the mail that carries one
is queued in the same transaction as the token, so neither exists without the other.
"""

from __future__ import annotations

import time

from auth_svc import accounts, tokens
from auth_svc.accounts import (
    Account,
    AccountStore,
    MailedToken,
    Mailer,
    MailKind,
    TakenNotice,
    TokenPurpose,
)
from auth_svc.activity import SecurityLog
from auth_svc.security_store import EventKind, NewEvent
from auth_svc.tokens import Clock
from meshkit.errors import FieldViolation, NotFound, invalid
from meshkit.reasons import Reason


def invalid_link(what: str) -> NotFound:
    """The one answer for a mailed token that is unknown, used or expired."""
    return NotFound(
        message=f"this {what} link is invalid, used or expired; ask for a new one",
        reason=Reason.ACCOUNT_TOKEN_INVALID,
    )


def checked_email(raw: str) -> str:
    """Return the normalised email of a request that mails it, or InvalidArgument (field email)
    when it cannot be an address; says nothing about whether it is registered."""
    try:
        return accounts.normalise_email(raw)
    except ValueError as exc:
        raise invalid([FieldViolation("email", str(exc))]) from None


def required_token(raw: str) -> str:
    """Return a mailed token from a request, or InvalidArgument (field token) when empty."""
    token = raw.strip()
    if not token:
        raise invalid([FieldViolation("token", "is required")])
    return token


class EmailVerification:
    """Issues, mails and checks email verification tokens."""

    def __init__(
        self,
        store: AccountStore,
        mailer: Mailer,
        log: SecurityLog,
        *,
        ttl_seconds: int,
        cooldown_seconds: float,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._mailer = mailer
        self._log = log
        self._ttl = ttl_seconds
        self._cooldown = cooldown_seconds
        self._clock = clock

    def new_token(self, email: str) -> MailedToken:
        """A fresh verification token for email with the mail that carries it, to store."""
        token = tokens.new_token(self._ttl, clock=self._clock)
        return MailedToken(
            token_hash=token.token_hash,
            expires_at=token.expires_at,
            mail=self._mailer.compose(MailKind.VERIFY_EMAIL, email, token=token.token),
        )

    def taken_notice(self, email: str) -> TakenNotice:
        """The mail telling the owner of a registered email that someone tried to sign up
        with it (sent at most once per cooldown)."""
        return TakenNotice(
            mail=self._mailer.compose(MailKind.SIGNUP_ATTEMPT, email),
            cooldown_seconds=self._cooldown,
        )

    def sent(self) -> None:
        """Tell the mail sender a verification mail was just queued."""
        self._mailer.queued()

    async def verify(self, token: str) -> Account:
        """Mark the address of a verification token verified and return the account;
        NotFound (ACCOUNT_TOKEN_INVALID) when the token is unknown, used or expired."""
        token = required_token(token)
        try:
            account = await self._store.use_account_token(
                tokens.hash_token(token), TokenPurpose.VERIFY_EMAIL
            )
        except NotFound:
            raise invalid_link("verification") from None
        await self._log.record(NewEvent(account.id, EventKind.EMAIL_VERIFIED, detail=account.email))
        return account

    async def resend(self, email: str) -> None:
        """Mail a new verification link to a registered, unverified address at most once per
        cooldown; succeeds alike whether or not the address is registered."""
        address = checked_email(email)
        # The same work whatever the store then finds: the reply time tells nothing either.
        await self._store.issue_account_token(
            address, TokenPurpose.VERIFY_EMAIL, self.new_token(address), self._cooldown
        )
        self._mailer.queued()
