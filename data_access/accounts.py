"""Accounts and their credentials; a new account gets its empty profile (and, when asked, its
email verification token and mail) in the same transaction."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Executable, bindparam, exists, func, select, text, update
from sqlalchemy.exc import IntegrityError

from data_access.database import Database, violated_constraint
from data_access.models import (
    EMAIL_MAX,
    PASSWORD_HASH_MAX,
    USERNAME_MAX,
    Account,
)
from data_access.outbox import queue_mail
from data_access.records import (
    AccountRecord,
    Credentials,
    Mail,
    NewToken,
    TakenEmailMail,
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

# A sign-up in one statement: the account, its profile, its verification token and mail when
# both its email and username are free (ON CONFLICT DO NOTHING covers both unique keys); else,
# when only the email is taken, the notice to its owner under a lease per account that spaces
# such notices (at most one per cooldown). Foreign keys are checked at the statement's end, so
# the profile and token may refer to the account inserted beside them.
_REGISTER = text(
    """
    WITH new_account AS (
        INSERT INTO accounts (id, email, username, password_hash)
        VALUES (:id, :email, :username, :password_hash)
        ON CONFLICT DO NOTHING
        RETURNING id, email, username, created_at, email_verified_at
    ), profile AS (
        INSERT INTO profiles (account_id) SELECT id FROM new_account
    ), token AS (
        INSERT INTO account_tokens (id, account_id, purpose, token_hash, email, expires_at)
        SELECT CAST(:token_id AS uuid), id, 'verify_email', CAST(:token_hash AS varchar),
               email, CAST(:token_expires_at AS timestamptz)
        FROM new_account WHERE CAST(:token_id AS uuid) IS NOT NULL
    ), mail AS (
        INSERT INTO outbox (kind, sealed)
        SELECT CAST(:mail_kind AS text), CAST(:mail_sealed AS bytea)
        FROM new_account WHERE CAST(:mail_kind AS text) IS NOT NULL
    ), owner AS (
        SELECT id FROM accounts
        WHERE email = :email
          AND NOT EXISTS (SELECT 1 FROM new_account)
          AND NOT EXISTS (SELECT 1 FROM accounts WHERE username = :username)
          AND CAST(:notice_kind AS text) IS NOT NULL
    ), lease AS (
        INSERT INTO leases (name, holder, expires_at)
        SELECT 'signup-attempt:' || id, :holder, now() + CAST(:cooldown AS interval) FROM owner
        ON CONFLICT (name) DO UPDATE
        SET holder = excluded.holder, expires_at = excluded.expires_at
        WHERE leases.holder = excluded.holder OR leases.expires_at <= now()
        RETURNING name
    ), notice AS (
        INSERT INTO outbox (kind, sealed)
        SELECT CAST(:notice_kind AS text), CAST(:notice_sealed AS bytea) FROM lease
    )
    SELECT created.id, created.email, created.username, created.created_at,
           created.email_verified_at,
           EXISTS (SELECT 1 FROM accounts WHERE username = :username) AS username_taken,
           EXISTS (SELECT 1 FROM accounts WHERE email = :email) AS email_taken
    FROM (SELECT 1) AS always LEFT JOIN new_account AS created ON true
    """
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
        params = {
            "id": uuid.uuid4(),
            "email": email,
            "username": username,
            "password_hash": password_hash,
            "token_id": uuid.uuid4() if verification else None,
            "token_hash": verification.token_hash if verification else None,
            "token_expires_at": verification.expires_at if verification else None,
            "mail_kind": mail.kind if mail else None,
            "mail_sealed": mail.sealed if mail else None,
            "holder": uuid.uuid4().hex,
            "cooldown": if_email_taken.cooldown if if_email_taken else timedelta(0),
            "notice_kind": if_email_taken.mail.kind if if_email_taken else None,
            "notice_sealed": if_email_taken.mail.sealed if if_email_taken else None,
        }
        # One statement either way: a taken email costs what a free one costs (one round trip,
        # a write, a commit), or the reply time would tell registered addresses apart.
        try:
            async with self._database.transaction() as session:
                row = (await session.execute(_REGISTER, params)).one()
        except IntegrityError as exc:
            raise _refusal(exc) or exc from None
        if row.id is not None:
            return account_record(row)
        if row.username_taken or (
            # Neither was taken as the statement began: a sign-up committed meanwhile took one
            # of them, which a fresh look tells.
            not row.email_taken and await self._username_taken(username)
        ):
            raise _taken("uq_accounts_username")
        raise _taken("uq_accounts_email")

    async def _username_taken(self, username: str) -> bool:
        """Whether an account has this (normalised) username now."""
        async with self._database.read() as connection:
            return bool(
                await connection.scalar(select(exists().where(Account.username == username)))
            )

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
