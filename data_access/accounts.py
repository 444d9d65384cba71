"""Accounts and their credentials; a new account gets its empty profile (and, when asked, its
email verification token and mail) in the same transaction."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Executable, bindparam, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from data_access.database import Database, violated_constraint
from data_access.leases import take_lease
from data_access.models import (
    EMAIL_MAX,
    PASSWORD_HASH_MAX,
    USERNAME_MAX,
    Account,
    AccountToken,
    Profile,
)
from data_access.outbox import queue_mail
from data_access.records import (
    AccountRecord,
    Credentials,
    Mail,
    NewToken,
    TakenEmailMail,
    TokenPurpose,
)
from data_access.sessions import end_sessions
from data_access.validation import Violations, lookup_key, parse_id
from meshkit.errors import AlreadyExists, DomainError, FieldViolation, NotFound, invalid
from meshkit.reasons import Reason

_TAKEN = {
    "uq_accounts_email": (Reason.EMAIL_TAKEN, "email", "email is already registered"),
    "uq_accounts_username": (Reason.USERNAME_TAKEN, "username", "username is already taken"),
}
_ACCOUNT_TOKEN_HASH_CONSTRAINT = "uq_account_tokens_token_hash"

# The columns of an AccountRecord, for queries that return accounts as rows.
ACCOUNT_COLUMNS = (
    Account.id,
    Account.email,
    Account.username,
    Account.created_at,
    Account.email_verified_at,
)

# Built once: a login only binds the email.
_CREDENTIALS = select(*ACCOUNT_COLUMNS, Account.password_hash).where(
    Account.email == bindparam("key")
)
_CREDENTIALS_BY_ID = select(*ACCOUNT_COLUMNS, Account.password_hash).where(
    Account.id == bindparam("key")
)


class _AccountFields(Protocol):
    """What an AccountRecord is made of: an Account, or a row of ACCOUNT_COLUMNS."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def email(self) -> str: ...

    @property
    def username(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def email_verified_at(self) -> datetime | None: ...


def account_record(account: _AccountFields) -> AccountRecord:
    """Return the stored account (or a row of ACCOUNT_COLUMNS) as a record."""
    return AccountRecord(
        id=account.id,
        email=account.email,
        username=account.username,
        created_at=account.created_at,
        email_verified=account.email_verified_at is not None,
    )


class AccountStore:
    """Creates accounts, reads the credentials a login checks and replaces password hashes."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(
        self,
        email: str,
        username: str,
        password_hash: str,
        *,
        verification: NewToken | None = None,
        mail: Mail | None = None,
        if_email_taken: TakenEmailMail | None = None,
    ) -> AccountRecord:
        """Store an account (email and username lower-cased), its empty profile, its email
        verification token and its mail (each when given) atomically; AlreadyExists
        (USERNAME_TAKEN, else EMAIL_TAKEN; metadata field) when either is in use, after queueing
        if_email_taken's mail for a taken email (at most once per its cooldown)."""
        check = Violations()
        email = check.text("email", email.strip(), max_chars=EMAIL_MAX).lower()
        username = check.text("username", username.strip(), max_chars=USERNAME_MAX).lower()
        check.text("password_hash", password_hash, max_chars=PASSWORD_HASH_MAX)
        verification = check.token("verification", verification)
        mail = check.mail("mail", mail)
        if if_email_taken is not None:
            check.mail("mail_if_email_taken", if_email_taken.mail)
            if if_email_taken.cooldown < timedelta(0):
                check.add("taken_mail_cooldown", "must not be negative")
        check.raise_if_any()
        try:
            return await self._insert(email, username, password_hash, verification, mail)
        except AlreadyExists as refused:
            if refused.reason == Reason.EMAIL_TAKEN:
                await self._email_taken(email, username, if_email_taken)
            raise

    async def _insert(
        self,
        email: str,
        username: str,
        password_hash: str,
        verification: NewToken | None,
        mail: Mail | None,
    ) -> AccountRecord:
        """Insert the account and what comes with it in one transaction (see create)."""
        account_id = uuid.uuid4()
        async with self._database.transaction() as session:
            try:
                inserted = await session.execute(
                    insert(Account)
                    .values(
                        id=account_id, email=email, username=username, password_hash=password_hash
                    )
                    .returning(*ACCOUNT_COLUMNS)
                )
                account = inserted.one()
                await session.execute(insert(Profile).values(account_id=account_id))
                if verification is not None:
                    await session.execute(
                        insert(AccountToken).values(
                            id=uuid.uuid4(),
                            account_id=account_id,
                            purpose=TokenPurpose.VERIFY_EMAIL.value,
                            token_hash=verification.token_hash,
                            email=email,
                            expires_at=verification.expires_at,
                        )
                    )
            except IntegrityError as exc:
                refusal = _refusal(exc)
                if refusal is None:
                    raise
                raise refusal from None
            if mail is not None:
                await queue_mail(session, mail)
        return account_record(account)

    async def _email_taken(self, email: str, username: str, notice: TakenEmailMail | None) -> None:
        """After a sign-up with a taken email: raise USERNAME_TAKEN if the username is taken
        too (usernames are public, and one answer must not depend on which index PostgreSQL
        checked first); otherwise queue the notice for the email's owner unless one went out
        less than its cooldown ago."""
        async with self._database.transaction() as session:
            if await session.scalar(select(exists().where(Account.username == username))):
                raise _taken("uq_accounts_username")
            owner = await session.scalar(select(Account.id).where(Account.email == email))
            if notice is None or owner is None:
                return
            # A lease per account spaces the notices: a fresh holder takes it only once the
            # previous one has expired.
            name = f"signup-attempt:{owner}"
            if await take_lease(session, name, uuid.uuid4().hex, notice.cooldown):
                await queue_mail(session, notice.mail)

    async def credentials(self, email: str) -> Credentials:
        """Return the account and password hash for an email (any case), or NotFound."""
        key = lookup_key(email.strip(), max_chars=EMAIL_MAX)
        return await self._credentials(_CREDENTIALS, key)

    async def credentials_by_id(self, account_id: str) -> Credentials:
        """Return the account and password hash for an account id, or NotFound."""
        key = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        return await self._credentials(_CREDENTIALS_BY_ID, key)

    async def _credentials(self, query: Executable, key: object | None) -> Credentials:
        """Run a credentials query for key; NotFound when there is no such account."""
        row = None
        if key is not None:
            async with self._database.read() as connection:
                row = (await connection.execute(query, {"key": key})).one_or_none()
        if row is None:
            raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
        return Credentials(account=account_record(row), password_hash=row.password_hash)

    async def replace_password_hash(
        self,
        account_id: str,
        old_hash: str,
        new_hash: str,
        *,
        password_changed: bool = False,
        keep_session_id: str = "",
        mail: Mail | None = None,
    ) -> int | None:
        """Set new_hash where the account's hash is still old_hash; return how many sessions
        ended (0 for a re-hash), or None when the hash was no longer old_hash (nothing done);
        NotFound (ACCOUNT_NOT_FOUND) for an unknown account. When replaced, in the same
        transaction: for a password change, record when it changed and end every session but
        keep_session_id; queue mail when given."""
        check = Violations()
        new_hash = check.text("new_password_hash", new_hash, max_chars=PASSWORD_HASH_MAX)
        keep = check.optional_id("keep_session_id", keep_session_id)
        mail = check.mail("mail", mail)
        check.raise_if_any()
        key = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            # NO KEY UPDATE: a rotation inserting a token of this account (which takes KEY
            # SHARE on it) holds its family's lock, which this call may wait for below.
            current = await session.scalar(
                select(Account.password_hash)
                .where(Account.id == key)
                .with_for_update(key_share=True)
            )
            if current is None:
                raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
            if current != old_hash:
                return None
            values: dict[str, Any] = {"password_hash": new_hash}
            if password_changed:
                values["password_changed_at"] = func.now()
            await session.execute(update(Account).where(Account.id == key).values(**values))
            ended = await end_sessions(session, key, keep=keep) if password_changed else 0
            if mail is not None:
                await queue_mail(session, mail)
        return ended


def _refusal(error: IntegrityError) -> DomainError | None:
    """Return what a broken rule of a new account means to its caller, if it was a known one."""
    constraint = violated_constraint(error) or ""
    if constraint == _ACCOUNT_TOKEN_HASH_CONSTRAINT:
        # 256-bit random tokens do not collide; a repeated hash is a caller's bug.
        return invalid([FieldViolation("verification.token_hash", "is already stored")])
    return _taken(constraint) if constraint in _TAKEN else None


def _taken(constraint: str) -> AlreadyExists:
    """The AlreadyExists of a broken uniqueness rule of accounts (a key of _TAKEN)."""
    reason, field, message = _TAKEN[constraint]
    return AlreadyExists(message=message, reason=reason, metadata={"field": field})
