"""Failed-login counters, one per key the caller chooses (an account from one client network, an
account, a client network), so that auth_svc can slow down or lock out password guessing.

A counter starts again from one when its last failure is older than the caller's reset_after,
and reads as zero meanwhile; the sweeper deletes counters idle for longer than any reset_after
may be (COUNTER_IDLE_MAX). Counting is one upsert per key, so 20 concurrent failures on a key
end at exactly 20; a call counting several keys upserts them in one order that every call
shares (code-point order), so no two calls wait for each other's rows in a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import Interval, bindparam, case, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, insert

from data_access.database import Database
from data_access.models import LoginAttempt
from data_access.records import LoginAttemptCounter
from data_access.validation import Violations

KEYS_MAX = 8
KEY_MAX = 200
# reset_after may be at most this: the sweeper deletes counters idle longer (sweeper.py).
COUNTER_IDLE_MAX = timedelta(days=1)
_RESET_AFTER_MIN = timedelta(seconds=1)

# One statement: lock the rows in code-point order (COLLATE "C" compares UTF-8 bytes, which
# sort as code points do, the order RecordLoginFailure upserts in), then delete them.
_CLEAR = text(
    """
    DELETE FROM login_attempts WHERE key IN (
        SELECT key FROM login_attempts WHERE key = ANY(:keys)
        ORDER BY key COLLATE "C" FOR UPDATE
    )
    """
).bindparams(bindparam("keys", type_=ARRAY(LoginAttempt.key.type)))


class LoginAttemptStore:
    """Reads, counts and forgets failed logins per key."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def get(self, keys: Sequence[str], reset_after: timedelta) -> list[LoginAttemptCounter]:
        """Return the counter of each key, in the order given: zero (and no time) for unknown
        keys and for those whose last failure is older than reset_after."""
        check = Violations()
        checked_keys(check, keys)
        _check_reset_after(check, reset_after)
        check.raise_if_any()
        fresh_since = func.now() - bindparam("reset_after", reset_after, type_=Interval())
        async with self._database.read() as connection:
            rows = await connection.execute(
                select(LoginAttempt.key, LoginAttempt.failures, LoginAttempt.last_failure_at).where(
                    LoginAttempt.key.in_(keys), LoginAttempt.last_failure_at >= fresh_since
                )
            )
            found = {row.key: LoginAttemptCounter(*row) for row in rows}
        return [found.get(key, LoginAttemptCounter(key)) for key in keys]

    async def record_failure(
        self, keys: Sequence[str], reset_after: timedelta
    ) -> list[LoginAttemptCounter]:
        """Count one failure on each key (from one again when its last failure is older than
        reset_after) in one transaction and return the counters after it, in the order given."""
        check = Violations()
        checked_keys(check, keys)
        _check_reset_after(check, reset_after)
        check.raise_if_any()
        stale_before = func.now() - bindparam("reset_after", reset_after, type_=Interval())
        counted: dict[str, LoginAttemptCounter] = {}
        async with self._database.transaction() as session:
            for key in sorted(keys):
                statement = insert(LoginAttempt).values(
                    key=key, failures=1, last_failure_at=func.now()
                )
                row = (
                    await session.execute(
                        statement.on_conflict_do_update(
                            index_elements=[LoginAttempt.key],
                            set_={
                                "failures": case(
                                    (LoginAttempt.last_failure_at < stale_before, 1),
                                    else_=LoginAttempt.failures + 1,
                                ),
                                # now() is when this transaction began: one that began earlier
                                # but counts later must not move the time back.
                                "last_failure_at": func.greatest(
                                    LoginAttempt.last_failure_at, func.now()
                                ),
                            },
                        ).returning(
                            LoginAttempt.key, LoginAttempt.failures, LoginAttempt.last_failure_at
                        )
                    )
                ).one()
                counted[key] = LoginAttemptCounter(*row)
        return [counted[key] for key in keys]

    async def clear(self, keys: Sequence[str]) -> None:
        """Forget the counters of the keys; unknown keys are not an error."""
        check = Violations()
        checked_keys(check, keys)
        check.raise_if_any()
        async with self._database.transaction() as session:
            await session.execute(_CLEAR, {"keys": list(keys)})


def checked_keys(
    check: Violations, keys: Sequence[str], *, required: bool = True, field: str = "keys"
) -> list[str]:
    """Return keys, recording their problems under field: 1 (0 unless required) to KEYS_MAX
    distinct keys of 1 to KEY_MAX characters each."""
    if not (1 if required else 0) <= len(keys) <= KEYS_MAX:
        check.add(field, f"must hold {'1' if required else '0'} to {KEYS_MAX} keys")
    seen: set[str] = set()
    for index, key in enumerate(keys):
        check.text(f"{field}[{index}]", key, max_chars=KEY_MAX)
        if key in seen:
            # Counted once or twice? Neither is what a caller repeating a key could mean.
            check.add(f"{field}[{index}]", "is repeated")
        seen.add(key)
    return list(keys)


def _check_reset_after(check: Violations, reset_after: timedelta) -> None:
    """Record a reset_after outside what a counter can live for."""
    check.duration("reset_after", reset_after, _RESET_AFTER_MIN, COUNTER_IDLE_MAX)
