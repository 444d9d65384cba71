"""Second factors: each account's TOTP factor and its enrolment in progress (secrets sealed by
auth_svc, which alone can open them), its single-use recovery codes (SHA-256 hashes only), and
the use of the MFA challenges of logins whose password was right.

A TOTP time step is accepted only when later than the last one used, and a recovery code only
once, each by one conditional UPDATE: of 20 concurrent uses of one code exactly one wins. auth_svc
makes a challenge and keeps it sealed in the token it hands out, so a password step writes
nothing here; a challenge's row appears with its first wrong code or its completion, which
claims it (once), uses its code and starts the session in one transaction, so a refused code
leaves it usable and two completions of one challenge start one session.

Lock order: a completion locks its challenge's row, then the factor (using a step); every other
call that changes a factor, its codes or its enrolment locks the factor first and touches no
challenge; counting a wrong code locks only the challenge. So no two calls wait for each other
in a cycle.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Interval,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.database import Database, violated_constraint
from data_access.login_attempts import checked_keys
from data_access.models import Account, LoginAttempt, MfaChallenge, MfaFactor, RecoveryCode
from data_access.outbox import queue_mail
from data_access.records import (
    ChallengeUse,
    CompletedChallenge,
    Mail,
    MfaCode,
    MfaRecord,
    NewSecurityEvent,
    NewSession,
    RecoveryCodeUse,
    TotpStep,
)
from data_access.refresh_tokens import checked_login, start_session
from data_access.security_events import append_event, check_event_account, checked_event
from data_access.validation import Violations, parse_id
from meshkit.errors import FailedPrecondition, NotFound
from meshkit.reasons import Reason

# A sealed TOTP secret is a few dozen bytes; this leaves room for any sealing format.
SEALED_SECRET_MAX_BYTES = 1024
RECOVERY_CODES_MAX = 20
MAX_ATTEMPTS_MAX = 100
_FACTOR_ACCOUNT_CONSTRAINT = "fk_mfa_factors_account_id_accounts"
_CHALLENGE_ACCOUNT_CONSTRAINT = "fk_mfa_challenges_account_id_accounts"
_CHALLENGE_TOKEN_CONSTRAINT = "uq_mfa_challenges_token_hash"

# The factor columns an MfaRecord is made of, with its unused recovery codes counted.
_FACTOR_COLUMNS = (
    MfaFactor.secret_sealed,
    MfaFactor.last_used_step,
    MfaFactor.enabled_at,
    MfaFactor.pending_secret_sealed,
    MfaFactor.pending_started_at,
)


class MfaStore:
    """Keeps TOTP factors, recovery codes and MFA login challenges."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def get(self, account_id: str) -> MfaRecord:
        """Return an account's factor, pending enrolment and unused recovery-code count (an
        account without a factor has MFA off); NotFound (ACCOUNT_NOT_FOUND) for an unknown
        account."""
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        query = (
            select(*_FACTOR_COLUMNS, _codes_left(Account.id))
            .select_from(Account)
            .outerjoin(MfaFactor, MfaFactor.account_id == Account.id)
            .where(Account.id == owner)
        )
        async with self._database.read() as connection:
            row = (await connection.execute(query)).one_or_none()
        if row is None:
            raise _account_not_found()
        return _mfa_record(row)

    async def start_enrollment(self, account_id: str, pending_secret_sealed: bytes) -> None:
        """Store a sealed secret as the account's pending enrolment (started now), replacing an
        earlier one; FailedPrecondition (MFA_ALREADY_ENABLED) when MFA is on, NotFound
        (ACCOUNT_NOT_FOUND) for an unknown account."""
        check = Violations()
        _check_secret(check, "pending_secret_sealed", pending_secret_sealed)
        check.raise_if_any()
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        statement = upsert(MfaFactor).values(
            account_id=owner,
            pending_secret_sealed=pending_secret_sealed,
            pending_started_at=func.now(),
        )
        async with self._database.transaction() as session:
            try:
                stored = await session.scalar(
                    statement.on_conflict_do_update(
                        index_elements=[MfaFactor.account_id],
                        set_={
                            "pending_secret_sealed": statement.excluded.pending_secret_sealed,
                            "pending_started_at": func.now(),
                        },
                        where=MfaFactor.secret_sealed.is_(None),
                    ).returning(MfaFactor.account_id)
                )
            except IntegrityError as exc:
                if violated_constraint(exc) == _FACTOR_ACCOUNT_CONSTRAINT:
                    raise _account_not_found() from None
                raise
            if stored is None:
                raise _already_enabled()

    async def enable(
        self,
        account_id: str,
        pending_secret_sealed: bytes,
        used_step: int,
        recovery_code_hashes: Sequence[str],
        event: NewSecurityEvent,
        *,
        enrollment_ttl: timedelta,
        mail: Mail | None = None,
    ) -> None:
        """Turn the pending enrolment into the account's factor (used_step its last used time
        step), replace its recovery codes, append event and queue mail (when given), in one
        transaction. FailedPrecondition (MFA_ALREADY_ENABLED) when MFA is on; NotFound
        (MFA_ENROLLMENT_NOT_FOUND) when the pending secret is not pending_secret_sealed or
        started enrollment_ttl ago or earlier."""
        check = Violations()
        _check_secret(check, "pending_secret_sealed", pending_secret_sealed)
        check.positive("used_step", used_step)
        hashes = _checked_codes(check, recovery_code_hashes)
        checked = checked_event(check, event)
        check_event_account(check, event, account_id)
        mail = check.mail("mail", mail)
        if enrollment_ttl <= timedelta(0):
            check.add("enrollment_ttl", "must be greater than zero")
        check.raise_if_any()
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        started_since = func.now() - bindparam("ttl", enrollment_ttl, type_=Interval())
        async with self._database.transaction() as session:
            factor = (
                await session.execute(
                    select(
                        MfaFactor.secret_sealed,
                        MfaFactor.pending_secret_sealed,
                        (MfaFactor.pending_started_at > started_since).label("fresh"),
                    )
                    .where(MfaFactor.account_id == owner)
                    .with_for_update()
                )
            ).one_or_none()
            if factor is not None and factor.secret_sealed is not None:
                raise _already_enabled()
            if (
                factor is None
                or factor.pending_secret_sealed is None
                or not factor.fresh
                # The confirming code was checked against this secret: it must still be the
                # pending one (a newer enrolment may have replaced it meanwhile).
                or not hmac.compare_digest(factor.pending_secret_sealed, pending_secret_sealed)
            ):
                raise NotFound(
                    message="no pending MFA enrolment matches",
                    reason=Reason.MFA_ENROLLMENT_NOT_FOUND,
                )
            await session.execute(
                update(MfaFactor)
                .where(MfaFactor.account_id == owner)
                .values(
                    secret_sealed=MfaFactor.pending_secret_sealed,
                    enabled_at=func.now(),
                    last_used_step=used_step,
                    pending_secret_sealed=None,
                    pending_started_at=None,
                )
                .execution_options(synchronize_session=False)
            )
            await _replace_codes(session, owner, hashes)
            await append_event(session, owner, checked)
            if mail is not None:
                await queue_mail(session, mail)

    async def disable(
        self, account_id: str, event: NewSecurityEvent, *, mail: Mail | None = None
    ) -> None:
        """Remove the account's factor, pending enrolment and recovery codes, append event and
        queue mail (when given), in one transaction (voiding the challenges of logins under
        way);
        FailedPrecondition (MFA_NOT_ENABLED) when MFA is off."""
        check = Violations()
        checked = checked_event(check, event)
        check_event_account(check, event, account_id)
        mail = check.mail("mail", mail)
        check.raise_if_any()
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            await _lock_enabled(session, owner)
            await session.execute(delete(MfaFactor).where(MfaFactor.account_id == owner))
            await session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == owner))
            # A login waiting for its second factor cannot complete now: its challenge names
            # the secret this deletes (complete_challenge).
            await append_event(session, owner, checked)
            if mail is not None:
                await queue_mail(session, mail)

    async def replace_recovery_codes(
        self, account_id: str, recovery_code_hashes: Sequence[str], event: NewSecurityEvent
    ) -> None:
        """Replace every recovery code of the account and append event, in one transaction;
        FailedPrecondition (MFA_NOT_ENABLED) when MFA is off."""
        check = Violations()
        hashes = _checked_codes(check, recovery_code_hashes)
        checked = checked_event(check, event)
        check_event_account(check, event, account_id)
        check.raise_if_any()
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            await _lock_enabled(session, owner)
            await _replace_codes(session, owner, hashes)
            await append_event(session, owner, checked)

    async def use_code(self, account_id: str, code: MfaCode | None) -> int:
        """Use a TOTP step (only when later than the last used one) or a recovery code (only
        once) and return the unused recovery codes left; FailedPrecondition (MFA_CODE_INVALID)
        when it was used already or is unknown, (MFA_NOT_ENABLED) when MFA is off."""
        check = Violations()
        code = _checked_code(check, code)
        check.raise_if_any()
        owner = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            return await _use_code(session, owner, code)

    async def fail_challenge(
        self, token_hash: str, account_id: str, expires_at: datetime, max_attempts: int
    ) -> int:
        """Count a wrong code against a challenge of an account (stored at its first count),
        using it up at max_attempts, and return the codes it still accepts; NotFound
        (MFA_CHALLENGE_INVALID) when it is used, used up or another account's."""
        check = Violations()
        token_hash = check.sha256_hex("token_hash", token_hash)
        check.in_range("max_attempts", max_attempts, 1, MAX_ATTEMPTS_MAX)
        check.raise_if_any()
        owner = _challenge_owner(account_id)
        # SET sees the row as it was: both columns count this attempt once.
        attempts = MfaChallenge.attempts + 1
        first = upsert(MfaChallenge).values(
            id=uuid.uuid4(),
            account_id=owner,
            token_hash=token_hash,
            expires_at=expires_at,
            attempts=1,
            used_at=func.now() if max_attempts <= 1 else None,
        )
        counted = first.on_conflict_do_update(
            index_elements=[MfaChallenge.token_hash],
            set_={
                "attempts": attempts,
                "used_at": case((attempts >= max_attempts, func.now()), else_=None),
            },
            where=MfaChallenge.used_at.is_(None) & (MfaChallenge.account_id == owner),
        ).returning(MfaChallenge.attempts)
        async with self._database.transaction() as session:
            try:
                count = await session.scalar(counted)
            except IntegrityError as exc:
                raise _challenge_refusal(exc) from None
        if count is None:
            raise _challenge_invalid()
        return max(0, max_attempts - count)

    async def complete_challenge(
        self, challenge: ChallengeUse, code: MfaCode | None, login: NewSession
    ) -> CompletedChallenge:
        """Use a challenge (once) and its code (as use_code does, while the account's secret is
        still challenge.secret_sealed), start the login's session (as RefreshTokenStore.create
        does) and forget challenge.clear_keys, in one transaction; nothing changes when any of
        it is refused. NotFound (MFA_CHALLENGE_INVALID) when the challenge is used or used up
        or the factor changed; FailedPrecondition (MFA_CODE_INVALID) as use_code."""
        check = Violations()
        token_hash = check.sha256_hex("token_hash", challenge.token_hash)
        _check_secret(check, "secret_sealed", challenge.secret_sealed)
        keys = checked_keys(check, challenge.clear_keys, required=False, field="clear_attempt_keys")
        code = _checked_code(check, code)
        login = checked_login(check, login, prefix="session.")
        check.raise_if_any()
        owner = _challenge_owner(login.account_id)
        # Claiming the challenge first makes concurrent completions of one take turns on its
        # row; each later one finds it used. (No call locks the factor before a challenge.)
        claim = (
            upsert(MfaChallenge)
            .values(
                id=uuid.uuid4(),
                account_id=owner,
                token_hash=token_hash,
                expires_at=challenge.expires_at,
                used_at=func.now(),
            )
            .on_conflict_do_update(
                index_elements=[MfaChallenge.token_hash],
                set_={"used_at": func.now()},
                where=MfaChallenge.used_at.is_(None) & (MfaChallenge.account_id == owner),
            )
            .returning(MfaChallenge.id)
        )
        async with self._database.transaction() as session:
            try:
                claimed = await session.scalar(claim)
            except IntegrityError as exc:
                raise _challenge_refusal(exc) from None
            if claimed is None:
                raise _challenge_invalid()
            # Refused (rolling all of this back) when MFA was turned off or enrolled anew since
            # the password step.
            left = await _use_code(session, owner, code, secret_sealed=challenge.secret_sealed)
            started = await start_session(session, owner, login, prefix="session.")
            if keys:
                await session.execute(delete(LoginAttempt).where(LoginAttempt.key.in_(keys)))
        return CompletedChallenge(session=started, recovery_codes_left=left)


async def _use_code(
    session: AsyncSession,
    account_id: uuid.UUID,
    code: MfaCode,
    *,
    secret_sealed: bytes | None = None,
) -> int:
    """Use a (checked) code of an account inside the caller's transaction (only while the
    factor's secret is secret_sealed, when given) and return the unused recovery codes left;
    FailedPrecondition as MfaStore.use_code, NotFound (MFA_CHALLENGE_INVALID) when the secret
    is no longer secret_sealed."""
    secret = (
        MfaFactor.secret_sealed.is_not(None)
        if secret_sealed is None
        else MfaFactor.secret_sealed == secret_sealed
    )
    # One statement each, with the codes left in its answer: of concurrent uses of a code, the
    # first to update the row wins, and the others, re-checking the updated row, find it used.
    # The count is of the statement's snapshot, before its own update.
    if isinstance(code, TotpStep):
        used = (
            await session.execute(
                update(MfaFactor)
                .where(
                    MfaFactor.account_id == account_id, secret, MfaFactor.last_used_step < code.step
                )
                .values(last_used_step=code.step)
                .returning(_codes_left(account_id))
                .execution_options(synchronize_session=False)
            )
        ).one_or_none()
        left = None if used is None else used.codes_left
    else:
        used = (
            await session.execute(
                update(RecoveryCode)
                .where(
                    RecoveryCode.account_id == account_id,
                    RecoveryCode.code_hash == code.code_hash,
                    RecoveryCode.used_at.is_(None),
                    exists().where(MfaFactor.account_id == account_id, secret),
                )
                .values(used_at=func.now())
                .returning(_codes_left(account_id))
                .execution_options(synchronize_session=False)
            )
        ).one_or_none()
        left = None if used is None else used.codes_left - 1
    if left is not None:
        return int(left)
    current = await session.scalar(
        select(MfaFactor.secret_sealed).where(MfaFactor.account_id == account_id)
    )
    if current is None:
        if secret_sealed is not None:
            raise _challenge_invalid()
        raise _not_enabled()
    if secret_sealed is not None and not hmac.compare_digest(current, secret_sealed):
        # MFA was enrolled anew since the challenge was made.
        raise _challenge_invalid()
    raise FailedPrecondition(
        message="the code was used already or is not valid", reason=Reason.MFA_CODE_INVALID
    )


async def _lock_enabled(session: AsyncSession, account_id: uuid.UUID) -> None:
    """Lock an account's factor until the transaction ends; FailedPrecondition
    (MFA_NOT_ENABLED) when MFA is off."""
    enabled = await session.scalar(
        select(MfaFactor.secret_sealed.is_not(None))
        .where(MfaFactor.account_id == account_id)
        .with_for_update()
    )
    if not enabled:
        raise _not_enabled()


async def _replace_codes(session: AsyncSession, account_id: uuid.UUID, hashes: list[str]) -> None:
    """Replace every recovery code of an account (whose factor the caller holds locked)."""
    await session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))
    await session.execute(
        insert(RecoveryCode).values(
            [{"account_id": account_id, "code_hash": code_hash} for code_hash in hashes]
        )
    )


def _codes_left(account_id: Any) -> Any:
    """The count of an account's unused recovery codes, as a scalar subquery."""
    return (
        select(func.count())
        .where(RecoveryCode.account_id == account_id, RecoveryCode.used_at.is_(None))
        .scalar_subquery()
        .label("codes_left")
    )


def _mfa_record(row: Any) -> MfaRecord:
    """Return a row of _FACTOR_COLUMNS and codes_left (all None: no factor) as a record."""
    return MfaRecord(
        enabled=row.secret_sealed is not None,
        secret_sealed=row.secret_sealed or b"",
        last_used_step=row.last_used_step or 0,
        enabled_at=row.enabled_at,
        recovery_codes_left=int(row.codes_left or 0),
        pending_secret_sealed=row.pending_secret_sealed or b"",
        pending_started_at=row.pending_started_at,
    )


def _check_secret(check: Violations, field: str, sealed: bytes) -> None:
    """Record a sealed secret that is empty or longer than SEALED_SECRET_MAX_BYTES."""
    if not sealed:
        check.add(field, "is required")
    elif len(sealed) > SEALED_SECRET_MAX_BYTES:
        check.add(field, f"must be at most {SEALED_SECRET_MAX_BYTES} bytes")


def _checked_codes(check: Violations, hashes: Sequence[str]) -> list[str]:
    """Return recovery-code hashes lower-cased, recording their problems: 1 to
    RECOVERY_CODES_MAX distinct hex SHA-256 digests."""
    field = "recovery_code_hashes"
    if not 1 <= len(hashes) <= RECOVERY_CODES_MAX:
        check.add(field, f"must hold 1 to {RECOVERY_CODES_MAX} hashes")
    checked: list[str] = []
    for index, code_hash in enumerate(hashes):
        lowered = check.sha256_hex(f"{field}[{index}]", code_hash)
        if lowered in checked:
            check.add(f"{field}[{index}]", "is repeated")
        checked.append(lowered)
    return checked


def _checked_code(check: Violations, code: MfaCode | None) -> TotpStep | RecoveryCodeUse:
    """Return code with a recovery-code hash lower-cased, recording its problems: none given,
    a step not above zero, a hash that is no hex SHA-256 digest."""
    if code is None:
        check.add("code", "set step or recovery_code_hash")
        return TotpStep(0)
    if isinstance(code, TotpStep):
        check.positive("code.step", code.step)
        return code
    return RecoveryCodeUse(check.sha256_hex("code.recovery_code_hash", code.code_hash))


def _as_id(value: str) -> uuid.UUID | None:
    """Return value as a UUID, or None when it is not one."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _account_not_found() -> NotFound:
    """The answer for an account that does not exist."""
    return NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)


def _already_enabled() -> FailedPrecondition:
    """The answer for an enrolment while MFA is on."""
    return FailedPrecondition(message="MFA is already on", reason=Reason.MFA_ALREADY_ENABLED)


def _not_enabled() -> FailedPrecondition:
    """The answer for a change that needs MFA on while it is off."""
    return FailedPrecondition(message="MFA is off", reason=Reason.MFA_NOT_ENABLED)


def _challenge_owner(account_id: str) -> uuid.UUID:
    """The account id of a challenge; NotFound (MFA_CHALLENGE_INVALID) when malformed."""
    return parse_id(account_id, reason=Reason.MFA_CHALLENGE_INVALID, what="challenge")


def _challenge_refusal(error: IntegrityError) -> Exception:
    """What a broken rule of a challenge's row means: no such account, or a caller's bug."""
    if violated_constraint(error) == _CHALLENGE_ACCOUNT_CONSTRAINT:
        return _challenge_invalid()
    return error


def _challenge_invalid() -> NotFound:
    """The one answer for unknown, used, expired and foreign challenges."""
    return NotFound(
        message="MFA challenge is invalid, used or expired", reason=Reason.MFA_CHALLENGE_INVALID
    )
