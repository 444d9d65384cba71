"""Single-use tokens mailed to an account's address: an email verification or a password reset.

Only SHA-256 hashes are stored, with the address each token was mailed to. A token is usable
while it is unused and unexpired; a verification also only while the account still has the
address it was mailed to. Every use of an account's tokens waits for the account's row lock, so
that of 20 concurrent uses of one token exactly one applies it, and the others find it used.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Interval,
    LargeBinary,
    Row,
    bindparam,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.accounts import ACCOUNT_COLUMNS, account_record
from data_access.database import Database
from data_access.models import EMAIL_MAX, PASSWORD_HASH_MAX, Account, AccountToken, OutboxMail
from data_access.outbox import queue_mail
from data_access.records import AccountRecord, Mail, NewToken, TokenPurpose
from data_access.sessions import end_sessions
from data_access.validation import Violations
from meshkit.errors import NotFound
from meshkit.reasons import Reason

# First key of the two-key advisory locks that serialise token issues per address ("atis").
_ISSUE_LOCK_SPACE = 0x61746973


class AccountTokenStore:
    """Issues, checks and uses single-use account tokens."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def issue(
        self,
        email: str,
        purpose: TokenPurpose,
        token: NewToken,
        mail: Mail,
        *,
        cooldown: timedelta = timedelta(0),
    ) -> None:
        """Store token and queue mail in one transaction for the account with email (any
        case), unless there is none, a verification is asked for a verified address, or the
        account got a token of that purpose less than cooldown ago; the same answer and the same
        statements in every case."""
        check = Violations()
        email = check.text("email", email.strip(), max_chars=EMAIL_MAX).lower()
        token = NewToken(check.sha256_hex("token.token_hash", token.token_hash), token.expires_at)
        check.mail("mail", mail)
        if cooldown < timedelta(0):
            check.add("cooldown", "must not be negative")
        check.raise_if_any()
        async with self._database.transaction() as session:
            # Issues for one address take turns, so each sees the token the previous stored
            # (the cooldown). An advisory lock, not a row lock: locking a row gives the
            # transaction an id and a commit that waits for the WAL, which an unknown address
            # would skip, and the reply time would tell registered addresses apart.
            await session.execute(
                select(func.pg_advisory_xact_lock(_ISSUE_LOCK_SPACE, func.hashtext(email)))
            )
            await session.execute(_issue_statement(email, purpose, token, mail, cooldown))

    async def lookup(self, token_hash: str, purpose: TokenPurpose) -> AccountRecord:
        """Return the account of a usable token of purpose without using it; NotFound
        (ACCOUNT_TOKEN_INVALID) otherwise."""
        check = Violations()
        token_hash = check.sha256_hex("token_hash", token_hash)
        check.raise_if_any()
        async with self._database.read() as connection:
            row = (
                await connection.execute(
                    select(*ACCOUNT_COLUMNS, AccountToken.email.label("mailed_to"))
                    .join(AccountToken, AccountToken.account_id == Account.id)
                    .where(AccountToken.token_hash == token_hash, _usable(purpose))
                )
            ).one_or_none()
        if row is None or _void(purpose, row.mailed_to, row.email):
            raise _invalid()
        return account_record(row)

    async def use(
        self,
        token_hash: str,
        purpose: TokenPurpose,
        *,
        new_password_hash: str = "",
        mail: Mail | None = None,
    ) -> AccountRecord:
        """Use a token of purpose and apply it in one transaction: a verification marks the
        address verified; a reset sets new_password_hash, marks the address verified (when the
        token was mailed to it) and ends every session. Every unused token of that purpose for
        the account is used up; mail is queued when given. Return the account as changed;
        NotFound (ACCOUNT_TOKEN_INVALID) when the token is unknown, used, expired, of another
        purpose or (a verification) mailed to another address than the account's."""
        check = Violations()
        token_hash = check.sha256_hex("token_hash", token_hash)
        if purpose is TokenPurpose.RESET_PASSWORD:
            check.text("new_password_hash", new_password_hash, max_chars=PASSWORD_HASH_MAX)
        mail = check.mail("mail", mail)
        check.raise_if_any()
        async with self._database.transaction() as session:
            owner = await _lock_account_of(session, token_hash)
            # Read only now, under the account's lock: a use committed meanwhile is seen.
            mailed_to = await session.scalar(
                select(AccountToken.email).where(
                    AccountToken.token_hash == token_hash, _usable(purpose)
                )
            )
            if owner is None or mailed_to is None or _void(purpose, mailed_to, owner.email):
                raise _invalid()
            account_id = owner.id
            changes: dict[str, Any] = {}
            if purpose is TokenPurpose.RESET_PASSWORD:
                changes.update(password_hash=new_password_hash, password_changed_at=func.now())
            if mailed_to == owner.email:
                # Following the link proved the mailbox (a reset's too).
                changes["email_verified_at"] = func.coalesce(Account.email_verified_at, func.now())
            account = (
                await session.execute(
                    update(Account)
                    .where(Account.id == account_id)
                    .values(**changes)
                    .returning(*ACCOUNT_COLUMNS)
                    .execution_options(synchronize_session=False)
                )
            ).one()
            if purpose is TokenPurpose.RESET_PASSWORD:
                await end_sessions(session, account_id)
            await session.execute(
                update(AccountToken)
                .where(
                    AccountToken.account_id == account_id,
                    AccountToken.purpose == purpose.value,
                    AccountToken.used_at.is_(None),
                )
                .values(used_at=func.now())
                .execution_options(synchronize_session=False)
            )
            if mail is not None:
                await queue_mail(session, mail)
        return account_record(account)


def _usable(purpose: TokenPurpose) -> ColumnElement[bool]:
    """The condition of a token that can be used for purpose (its address aside)."""
    return (
        (AccountToken.purpose == purpose.value)
        & AccountToken.used_at.is_(None)
        & (AccountToken.expires_at > func.now())
    )


def _void(purpose: TokenPurpose, mailed_to: str, email: str) -> bool:
    """Whether a usable token is void all the same: a verification proves the address it was
    mailed to, which must still be the account's."""
    return purpose is TokenPurpose.VERIFY_EMAIL and mailed_to != email


async def _lock_account_of(session: AsyncSession, token_hash: str) -> Row[uuid.UUID, str] | None:
    """Lock the account a token was issued for until the transaction ends and return its id
    and email; None when the token is unknown."""
    owner = select(AccountToken.account_id).where(AccountToken.token_hash == token_hash)
    # NO KEY UPDATE: rotations insert tokens of this account (KEY SHARE) under family locks
    # that a reset waits for.
    found = await session.execute(
        select(Account.id, Account.email)
        .where(Account.id == owner.scalar_subquery())
        .with_for_update(key_share=True)
    )
    return found.one_or_none()


def _issue_statement(
    email: str, purpose: TokenPurpose, token: NewToken, mail: Mail, cooldown: timedelta
) -> Any:
    """One statement that stores token and queues mail only for an eligible account of email."""
    recent = exists().where(
        AccountToken.account_id == Account.id,
        AccountToken.purpose == purpose.value,
        AccountToken.created_at > func.now() - bindparam("cooldown", cooldown, type_=Interval()),
    )
    eligible = select(
        literal(uuid.uuid4()),
        Account.id,
        literal(purpose.value),
        literal(token.token_hash),
        Account.email,
        literal(token.expires_at),
    ).where(Account.email == email, ~recent)
    if purpose is TokenPurpose.VERIFY_EMAIL:
        eligible = eligible.where(Account.email_verified_at.is_(None))
    stored = (
        insert(AccountToken)
        .from_select(["id", "account_id", "purpose", "token_hash", "email", "expires_at"], eligible)
        # A colliding hash stores nothing, like every other refusal here.
        .on_conflict_do_nothing(index_elements=[AccountToken.token_hash])
        .returning(AccountToken.id)
        .cte("stored")
    )
    queued = select(literal(mail.kind), literal(mail.sealed, LargeBinary())).select_from(stored)
    return insert(OutboxMail).from_select(["kind", "sealed"], queued)


def _invalid() -> NotFound:
    """The one answer for unknown, used, expired and void tokens."""
    return NotFound(
        message="token is invalid, used or expired", reason=Reason.ACCOUNT_TOKEN_INVALID
    )
