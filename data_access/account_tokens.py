"""Single-use tokens mailed to an address: an email verification, a password reset, or an email
change (mailed to the new address, which becomes the account's when the token is used).

Only SHA-256 hashes are stored, with the address each token was mailed to. A token is usable
while it is unused and unexpired; a verification also only while the account still has the
address it was mailed to. Every use of an account's tokens waits for the account's row lock, so
that of 20 concurrent uses of one token exactly one applies it, and the others find it used.
"""

from __future__ import annotations

import hashlib
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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.accounts import ACCOUNT_COLUMNS, account_record
from data_access.database import Database, violated_constraint
from data_access.models import (
    EMAIL_MAX,
    PASSWORD_HASH_MAX,
    Account,
    AccountToken,
    MailRequest,
    OutboxMail,
)
from data_access.outbox import queue_mail
from data_access.records import AccountRecord, Device, Mail, NewToken, TokenPurpose
from data_access.security_events import DETAIL_MAX, CheckedEvent, append_event
from data_access.sessions import end_sessions
from data_access.validation import Violations, parse_id
from meshkit.errors import AlreadyExists, NotFound
from meshkit.reasons import Reason

# First key of the two-key advisory locks that serialise token issues per address ("atis").
_ISSUE_LOCK_SPACE = 0x61746973
_EMAIL_UNIQUE = "uq_accounts_email"


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
            # Every request writes (and so commits with a WAL flush), registered address or not;
            # the token and the mail are a few more rows in the same commit.
            await session.execute(_count_request(email, purpose))
            await session.execute(_issue_statement(email, purpose, token, mail, cooldown))

    async def request_email_change(
        self,
        account_id: str,
        new_email: str,
        token: NewToken,
        mail: Mail,
        notice: Mail | None,
        *,
        cooldown: timedelta = timedelta(0),
    ) -> None:
        """Store a token that changes the account's email to new_email and queue its mail and
        the notice to the current address, in one transaction, voiding older pending changes;
        nothing when the account asked less than cooldown ago. NotFound (ACCOUNT_NOT_FOUND)."""
        check = Violations()
        new_email = check.text("new_email", new_email.strip(), max_chars=EMAIL_MAX).lower()
        token = NewToken(check.sha256_hex("token.token_hash", token.token_hash), token.expires_at)
        check.mail("mail", mail)
        notice = check.mail("notice", notice)
        if cooldown < timedelta(0):
            check.add("cooldown", "must not be negative")
        check.raise_if_any()
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        purpose = TokenPurpose.CHANGE_EMAIL
        async with self._database.transaction() as session:
            found = await session.execute(
                select(Account.id).where(Account.id == owner).with_for_update(key_share=True)
            )
            if found.one_or_none() is None:
                raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
            recent = await session.scalar(
                select(
                    exists().where(
                        AccountToken.account_id == owner,
                        AccountToken.purpose == purpose.value,
                        AccountToken.created_at
                        > func.now() - bindparam("cooldown", cooldown, type_=Interval()),
                    )
                )
            )
            if recent:
                return
            await _use_up(session, owner, purpose)
            session.add(
                AccountToken(
                    id=uuid.uuid4(),
                    account_id=owner,
                    purpose=purpose.value,
                    token_hash=token.token_hash,
                    email=new_email,
                    expires_at=token.expires_at,
                )
            )
            await session.flush()
            await queue_mail(session, mail)
            if notice is not None:
                await queue_mail(session, notice)

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
        purpose or (a verification) mailed to another address than the account's. An email
        change makes the address it was mailed to the account's, verified, and logs it;
        AlreadyExists (EMAIL_TAKEN) when another account has that address by now. A reset also
        voids the account's pending email changes."""
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
            if purpose is TokenPurpose.CHANGE_EMAIL:
                changes.update(email=mailed_to, email_verified_at=func.now())
            elif mailed_to == owner.email:
                # Following the link proved the mailbox (a reset's too).
                changes["email_verified_at"] = func.coalesce(Account.email_verified_at, func.now())
            try:
                async with session.begin_nested():
                    account = (
                        await session.execute(
                            update(Account)
                            .where(Account.id == account_id)
                            .values(**changes)
                            .returning(*ACCOUNT_COLUMNS)
                            .execution_options(synchronize_session=False)
                        )
                    ).one()
            except IntegrityError as error:
                if violated_constraint(error) == _EMAIL_UNIQUE:
                    raise AlreadyExists(
                        message="this address belongs to another account now",
                        reason=Reason.EMAIL_TAKEN,
                        metadata={"field": "email"},
                    ) from None
                raise
            if purpose is TokenPurpose.RESET_PASSWORD:
                await end_sessions(session, account_id)
                # Whoever asked to move the account to another address may not finish it now.
                await _use_up(session, account_id, TokenPurpose.CHANGE_EMAIL)
            if purpose is TokenPurpose.CHANGE_EMAIL:
                await _use_up(session, account_id, TokenPurpose.VERIFY_EMAIL)
                await append_event(
                    session,
                    account_id,
                    CheckedEvent(
                        kind="email_changed",
                        device=Device(),
                        session_id=None,
                        detail=f"from {owner.email} to {mailed_to}"[:DETAIL_MAX],
                    ),
                )
            await _use_up(session, account_id, purpose)
            if mail is not None:
                await queue_mail(session, mail)
        return account_record(account)


async def _use_up(session: AsyncSession, account_id: uuid.UUID, purpose: TokenPurpose) -> None:
    """Mark every unused token of purpose for the account used."""
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


def _count_request(email: str, purpose: TokenPurpose) -> Any:
    """One upsert counting a request for a token of purpose to email."""
    digest = hashlib.sha256(email.encode()).hexdigest()
    statement = insert(MailRequest).values(
        key=f"{purpose.value}:{digest}", requests=1, last_request_at=func.now()
    )
    return statement.on_conflict_do_update(
        index_elements=[MailRequest.key],
        set_={"requests": MailRequest.requests + 1, "last_request_at": func.now()},
    )


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
