"""Accounts and their credentials; a new account gets its empty profile in the same transaction."""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from data_access.database import Database, violated_constraint
from data_access.models import EMAIL_MAX, PASSWORD_HASH_MAX, USERNAME_MAX, Account, Profile
from data_access.records import AccountRecord, Credentials
from data_access.validation import Violations, lookup_key, parse_id
from meshkit.errors import AlreadyExists, NotFound
from meshkit.reasons import Reason

_TAKEN = {
    "uq_accounts_email": (Reason.EMAIL_TAKEN, "email", "email is already registered"),
    "uq_accounts_username": (Reason.USERNAME_TAKEN, "username", "username is already taken"),
}

# Built once: a login only binds the email.
_CREDENTIALS = select(
    Account.id, Account.email, Account.username, Account.created_at, Account.password_hash
).where(Account.email == bindparam("key"))


def account_record(account: Account) -> AccountRecord:
    """Return the stored account as a record."""
    return AccountRecord(
        id=account.id, email=account.email, username=account.username, created_at=account.created_at
    )


class AccountStore:
    """Creates accounts and reads the credentials a login checks."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(self, email: str, username: str, password_hash: str) -> AccountRecord:
        """Store an account (email and username lower-cased) and its empty profile atomically;
        AlreadyExists (EMAIL_TAKEN / USERNAME_TAKEN, metadata field) when either is in use."""
        check = Violations()
        email = check.text("email", email.strip(), max_chars=EMAIL_MAX).lower()
        username = check.text("username", username.strip(), max_chars=USERNAME_MAX).lower()
        check.text("password_hash", password_hash, max_chars=PASSWORD_HASH_MAX)
        check.raise_if_any()
        account_id = uuid.uuid4()
        async with self._database.transaction() as session:
            try:
                inserted = await session.execute(
                    insert(Account)
                    .values(
                        id=account_id, email=email, username=username, password_hash=password_hash
                    )
                    .returning(Account)
                )
            except IntegrityError as exc:
                taken = _taken(exc)
                if taken is None:
                    raise
                raise taken from None
            account = inserted.scalar_one()
            await session.execute(insert(Profile).values(account_id=account_id))
        return account_record(account)

    async def credentials(self, email: str) -> Credentials:
        """Return the account and password hash for an email (any case), or NotFound."""
        key = lookup_key(email.strip(), max_chars=EMAIL_MAX)
        row = None
        if key is not None:
            async with self._database.read() as connection:
                row = (await connection.execute(_CREDENTIALS, {"key": key})).one_or_none()
        if row is None:
            raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
        return Credentials(
            account=AccountRecord(
                id=row.id, email=row.email, username=row.username, created_at=row.created_at
            ),
            password_hash=row.password_hash,
        )

    async def replace_password_hash(self, account_id: str, old_hash: str, new_hash: str) -> bool:
        """Set new_hash where the account's hash is still old_hash; return whether it was
        replaced; NotFound (ACCOUNT_NOT_FOUND) for an unknown account."""
        check = Violations()
        new_hash = check.text("new_password_hash", new_hash, max_chars=PASSWORD_HASH_MAX)
        check.raise_if_any()
        key = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            current = await session.scalar(
                select(Account.password_hash).where(Account.id == key).with_for_update()
            )
            if current is None:
                raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
            if current != old_hash:
                return False
            await session.execute(
                update(Account).where(Account.id == key).values(password_hash=new_hash)
            )
        return True


def _taken(error: IntegrityError) -> AlreadyExists | None:
    """Return the AlreadyExists for a broken uniqueness rule of accounts, if it was one."""
    known = _TAKEN.get(violated_constraint(error) or "")
    if known is None:
        return None
    reason, field, message = known
    return AlreadyExists(message=message, reason=reason, metadata={"field": field})
