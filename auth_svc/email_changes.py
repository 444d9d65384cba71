"""Changing an account's email address: asked for by its owner behind a recent authentication,
done only when a link mailed to the new address is opened, with notices to the old address.

The request answers alike whether or not the new address is registered (the link's holder
learns it when following the link, and they own that address), so it cannot be used to find
out which addresses have accounts. A password reset voids a pending change, so an owner who
gets the "change requested" notice can stop a change they did not ask for.
"""

from __future__ import annotations

import time

from auth_svc import accounts, tokens
from auth_svc.accounts import Account, AccountStore, MailedToken, Mailer, MailKind, TokenPurpose
from auth_svc.tokens import Clock
from auth_svc.verification import invalid_link, required_token
from meshkit.access_tokens import Principal, require_recent_authentication
from meshkit.errors import FieldViolation, NotFound, Unauthenticated, invalid
from meshkit.reasons import Reason

FIELD = "new_email"


class EmailChanges:
    """Starts and completes changes of an account's email address."""

    def __init__(
        self,
        store: AccountStore,
        mailer: Mailer,
        *,
        ttl_seconds: int,
        cooldown_seconds: float,
        reauthentication_window_seconds: int,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._mailer = mailer
        self._ttl = ttl_seconds
        self._cooldown = cooldown_seconds
        self._window = reauthentication_window_seconds
        self._clock = clock

    async def request(self, principal: Principal, new_email: str) -> None:
        """Mail a confirmation link to new_email and a notice to the current address (nothing
        within the cooldown); InvalidArgument for a malformed or the current address,
        FailedPrecondition (REAUTHENTICATION_REQUIRED) for an old authentication."""
        require_recent_authentication(principal, self._window, now=self._clock())
        try:
            address = accounts.normalise_email(new_email)
        except ValueError as exc:
            raise invalid([FieldViolation(FIELD, str(exc))]) from None
        credentials = await self._store.get_credentials_by_id(principal.account_id)
        if credentials is None:
            raise Unauthenticated(message="account not found", reason=Reason.TOKEN_INVALID)
        current = credentials.account.email
        if address == current:
            raise invalid([FieldViolation(FIELD, "is already the account's address")])
        token = tokens.new_token(self._ttl, clock=self._clock)
        mailed = MailedToken(
            token_hash=token.token_hash,
            expires_at=token.expires_at,
            mail=self._mailer.compose(MailKind.CONFIRM_EMAIL_CHANGE, address, token=token.token),
        )
        notice = self._mailer.compose(MailKind.EMAIL_CHANGE_REQUESTED, current, new_email=address)
        await self._store.request_email_change(
            principal.account_id, address, mailed, notice, self._cooldown
        )
        self._mailer.queued()

    async def confirm(self, token: str) -> Account:
        """Make the address an email-change token was mailed to the account's (verified) and
        tell the old address; NotFound (ACCOUNT_TOKEN_INVALID) for an unknown, used or expired
        token, AlreadyExists (EMAIL_TAKEN) when the address got an account meanwhile."""
        token_hash = tokens.hash_token(required_token(token))
        try:
            before = await self._store.lookup_account_token(token_hash, TokenPurpose.CHANGE_EMAIL)
            return await self._store.use_account_token(
                token_hash,
                TokenPurpose.CHANGE_EMAIL,
                mail=self._mailer.compose(MailKind.EMAIL_CHANGED, before.email),
            )
        except NotFound:
            raise invalid_link("email change") from None
        finally:
            self._mailer.queued()
