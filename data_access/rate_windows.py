"""Fixed-window hit counters for the edge's limits that must hold across its replicas
(docs/rate-limits.md): one row per key, holding the count of the key's current window.

A window starts at a whole multiple of its length since the Unix epoch, on PostgreSQL's clock,
so every replica of every service agrees on it. Counting is one upsert per key, so 20 concurrent
hits on a key end at exactly 20; a call counting several keys upserts them in code-point order,
the order every call shares, so no two calls wait for each other's rows in a cycle. The sweeper
deletes rows whose window has ended (sweeper.RATE_WINDOWS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, func, literal
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.types import Float

from data_access.database import Database
from data_access.login_attempts import KEY_MAX, KEYS_MAX
from data_access.models import RateWindow
from data_access.validation import Violations

WINDOW_MIN = timedelta(seconds=1)
WINDOW_MAX = timedelta(days=1)
COUNT_MAX = 1000


@dataclass(frozen=True)
class WindowHit:
    """Hits on one key, counted in windows of one length."""

    key: str
    window: timedelta


@dataclass(frozen=True)
class WindowCount:
    """A key's count in its current window, after the hits."""

    key: str
    hits: int
    ends_at: datetime


class RateWindowStore:
    """Counts hits per key and window."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def hit(self, hits: Sequence[WindowHit], count: int) -> list[WindowCount]:
        """Count `count` hits in the current window of each key in one transaction and return
        the counts after them, in the order given; InvalidArgument for bad keys, windows or
        counts."""
        _check(hits, count)
        counted: dict[str, WindowCount] = {}
        async with self._database.transaction() as session:
            for hit in sorted(hits, key=lambda item: item.key):
                seconds = bindparam("seconds", hit.window.total_seconds(), type_=Float())
                epoch = func.extract("epoch", func.now())
                starts_at = func.to_timestamp(func.floor(epoch / seconds) * seconds)
                ends_at = func.to_timestamp((func.floor(epoch / seconds) + 1) * seconds)
                statement = insert(RateWindow).values(
                    key=hit.key, starts_at=starts_at, ends_at=ends_at, hits=literal(count)
                )
                row = (
                    await session.execute(
                        statement.on_conflict_do_update(
                            index_elements=[RateWindow.key],
                            set_={
                                # A new window starts from these hits alone.
                                "hits": case(
                                    (
                                        RateWindow.starts_at == statement.excluded.starts_at,
                                        RateWindow.hits + statement.excluded.hits,
                                    ),
                                    else_=statement.excluded.hits,
                                ),
                                "starts_at": statement.excluded.starts_at,
                                "ends_at": statement.excluded.ends_at,
                            },
                        ).returning(RateWindow.key, RateWindow.hits, RateWindow.ends_at)
                    )
                ).one()
                counted[hit.key] = WindowCount(*row)
        return [counted[hit.key] for hit in hits]


def _check(hits: Sequence[WindowHit], count: int) -> None:
    """Raise InvalidArgument unless hits holds 1 to KEYS_MAX distinct keys with windows from
    WINDOW_MIN to WINDOW_MAX, and count is from 1 to COUNT_MAX."""
    check = Violations()
    if not 1 <= len(hits) <= KEYS_MAX:
        check.add("hits", f"must hold 1 to {KEYS_MAX} keys")
    seen: set[str] = set()
    for index, hit in enumerate(hits):
        check.text(f"hits[{index}].key", hit.key, max_chars=KEY_MAX)
        if hit.key in seen:
            check.add(f"hits[{index}].key", "is repeated")
        seen.add(hit.key)
        if not WINDOW_MIN <= hit.window <= WINDOW_MAX:
            check.add(f"hits[{index}].window", "must be from one second to one day")
    if not 1 <= count <= COUNT_MAX:
        check.add("count", f"must be from 1 to {COUNT_MAX}")
    check.raise_if_any()
