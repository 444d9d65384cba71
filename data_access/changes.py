"""The change feed: changes of cached records, from PostgreSQL's notifications to subscribers.

Triggers (migration 0002) write each change to change_log and send it on a notification channel
in the transaction that makes it, so a change reaches listeners exactly when it commits. Each
data_access process holds one listening connection and fans its notifications out to bounded
per-subscriber queues. Every `heartbeat_seconds` it makes a round trip on that connection and
then sends a heartbeat: PostgreSQL delivers the notifications pending for a connection before it
answers a query, so a heartbeat proves that every change committed before its round trip began
is already queued ahead of it. Subscribers that reconnect name the last position they processed
and get the log replayed from there.

Why notifications plus a log table rather than logical decoding: it works on any PostgreSQL
without `wal_level=logical`, replication privileges or a replication slot (which, left behind by
a dead consumer, keeps WAL until the disk fills); the log gives resumption, its retention bounds
its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.database import Database
from data_access.models import ChangeLog
from meshkit.background import BackgroundTask
from meshkit.errors import FieldViolation, Unavailable, invalid
from meshkit.reasons import Reason

log = logging.getLogger("data_access.changes")

CHANNEL = "meshgram_changes"
TOPICS = frozenset({"profile"})

# A transaction's change row gets its position when written but becomes visible at commit, so
# a change with a lower position may commit after one with a higher position. A replay goes
# back this far before the subscriber's last position: data_access's transactions are capped
# well below it (idle_in_transaction_session_timeout and statement_timeout in database.py).
REPLAY_MARGIN_SECONDS = 60.0
# A replay longer than this is not worth it: the subscriber is told to start afresh instead.
REPLAY_LIMIT = 10_000
# Positions recently passed on, so a writer that asks after its change already went by
# returns at once.
_RECENT_POSITIONS = 4_096
# A write waits at most this long for the feed to pass its change on before acknowledging.
DELIVERY_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class Change:
    """One recorded change."""

    position: int
    topic: str
    key: str
    recorded_at: datetime


@dataclass(frozen=True)
class Heartbeat:
    """The feed is live: every change committed before `at` has been sent (for the opening
    heartbeat of a subscription: was committed before it began)."""

    position: int
    at: datetime


@dataclass(frozen=True)
class Reset:
    """Changes may have been missed; drop whatever was derived from them."""

    reason: str
    position: int


FeedEvent = Change | Heartbeat | Reset


@dataclass(eq=False)
class _Subscriber:
    """One stream's topics and its bounded queue."""

    topics: frozenset[str]
    queue: asyncio.Queue[FeedEvent | None]
    """Events in order; None, always last, means the feed lost PostgreSQL."""


class ChangeFeed:
    """Listens for changes on one connection and serves them to any number of subscribers."""

    def __init__(
        self,
        database: Database,
        *,
        heartbeat_seconds: float = 0.25,
        queue_limit: int = 10_000,
        retry_seconds: float = 1.0,
    ) -> None:
        self._database = database
        self._heartbeat = heartbeat_seconds
        self._queue_limit = queue_limit
        self._retry = retry_seconds
        self._subscribers: set[_Subscriber] = set()
        self._live = asyncio.Event()
        self._position = 0
        self._background = BackgroundTask("change-feed", self._run)
        self._recent: dict[int, None] = {}
        self._waiters: dict[int, asyncio.Future[None]] = {}

    async def wait_live(self, seconds: float) -> bool:
        """Wait up to `seconds` for the feed to listen; return whether it does."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._live.wait()
        return self._live.is_set()

    def start(self) -> None:
        """Start listening in the background of the running event loop."""
        self._background.start()

    async def stop(self) -> None:
        """Stop listening and end every subscription."""
        self._live.clear()
        await self._background.stop()
        self._drop_subscribers()

    async def delivered(self, position: int | None) -> None:
        """Return once the change at position has been queued for every subscriber, so that a
        write's acknowledgement leaves after its invalidation (at most DELIVERY_WAIT_SECONDS;
        at once when there is no position or the feed is down, as subscribers then bypass
        their caches)."""
        if position is None or position in self._recent or not self._live.is_set():
            return
        # One writer per position: the waiter is this call's own, and goes with it.
        waiter = self._waiters[position] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(DELIVERY_WAIT_SECONDS):
                await waiter
        except TimeoutError:
            log.warning("change not seen on the feed in time", extra={"position": position})
        finally:
            self._waiters.pop(position, None)

    async def subscribe(
        self, topics: Iterable[str], after_position: int
    ) -> AsyncIterator[FeedEvent]:
        """Yield the replay after after_position (0: none), then live changes and heartbeats,
        until the feed loses PostgreSQL (Unavailable); InvalidArgument for unknown topics."""
        wanted = _checked_topics(topics, after_position)
        if not self._live.is_set():
            raise _feed_unavailable()
        subscriber = _Subscriber(wanted, asyncio.Queue(self._queue_limit))
        registered = datetime.now(UTC)
        # Listen first, then replay: a change committed in between arrives twice rather than never.
        self._subscribers.add(subscriber)
        try:
            if after_position > 0:
                for event in await self._replay(wanted, after_position):
                    yield event
            else:
                # Registered above: whatever commits from now on reaches this subscriber.
                yield Heartbeat(position=self._position, at=registered)
            while True:
                event = await self._next(subscriber)
                yield event
        finally:
            self._subscribers.discard(subscriber)

    @staticmethod
    async def _next(subscriber: _Subscriber) -> FeedEvent:
        """The subscriber's next event; Unavailable once the feed has lost PostgreSQL."""
        event = await subscriber.queue.get()
        if event is None:
            raise _feed_unavailable()
        return event

    async def _replay(self, topics: frozenset[str], after: int) -> list[FeedEvent]:
        """The recorded changes a subscriber that processed `after` may have missed, or a
        reset when the log no longer holds them or they are too many."""
        async with self._database.read() as connection:
            oldest = await connection.scalar(select(func.min(ChangeLog.position)))
            if oldest is None or after < oldest - 1:
                return [Reset(reason="position no longer retained", position=self._position)]
            rows = (
                await connection.execute(
                    _REPLAY,
                    {
                        "topics": sorted(topics),
                        "after": after,
                        "margin": REPLAY_MARGIN_SECONDS,
                        "limit": REPLAY_LIMIT + 1,
                    },
                )
            ).all()
        if len(rows) > REPLAY_LIMIT:
            return [Reset(reason="too many changes to replay", position=self._position)]
        return [Change(**row._mapping) for row in rows]

    async def _run(self) -> None:
        """Listen, reconnecting after a failure; subscribers of a lost connection are ended."""
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database went away; subscribers must start afresh
                log.warning("change feed lost its database connection", exc_info=True)
            self._live.clear()
            self._drop_subscribers()
            await asyncio.sleep(self._retry)

    async def _listen(self) -> None:
        """Hold one listening connection and send heartbeats until it fails."""
        async with self._database.engine.connect() as pooled:
            raw = await pooled.get_raw_connection()
            driver: Any = raw.driver_connection
            # Out of the pool for good: it is busy listening, and closes with this block.
            pooled.sync_connection.detach()  # type: ignore[union-attr]
            await driver.add_listener(CHANNEL, self._on_notification)
            self._live.set()
            log.info("change feed listening")
            try:
                while True:
                    began = datetime.now(UTC)
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
                    # cancellation that arrives as the query completes, and stop() would then
                    # wait forever for a feed that keeps beating.
                    async with asyncio.timeout(4 * self._heartbeat + 1):
                        await driver.fetchval("SELECT 1")
                    # Every change committed before `began` has now been broadcast.
                    self._broadcast(Heartbeat(position=self._position, at=began))
                    await asyncio.sleep(self._heartbeat)
            finally:
                with contextlib.suppress(Exception):
                    await driver.remove_listener(CHANNEL, self._on_notification)

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        """Queue one notified change for every subscriber of its topic."""
        try:
            data = json.loads(payload)
            change = Change(
                position=int(data["position"]),
                topic=str(data["topic"]),
                key=str(data["key"]),
                recorded_at=datetime.fromtimestamp(float(data["recorded_at"]), UTC),
            )
        except (ValueError, KeyError, TypeError):
            log.error("unreadable change notification ignored", extra={"bytes": len(payload)})
            return
        self._position = max(self._position, change.position)
        self._broadcast(change)
        self._passed_on(change.position)

    def _passed_on(self, position: int) -> None:
        """Remember that position went out and release the writer waiting for it."""
        self._recent[position] = None
        if len(self._recent) > _RECENT_POSITIONS:
            del self._recent[next(iter(self._recent))]
        waiter = self._waiters.pop(position, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _broadcast(self, event: FeedEvent) -> None:
        """Queue event for each subscriber it concerns; one that fell behind gets a reset."""
        for subscriber in self._subscribers:
            if isinstance(event, Change) and event.topic not in subscriber.topics:
                continue
            try:
                subscriber.queue.put_nowait(event)
            except asyncio.QueueFull:
                # Its backlog is worthless now: replace it with one instruction to start afresh.
                _replace_backlog(
                    subscriber, Reset(reason="subscriber fell behind", position=self._position)
                )

    def _drop_subscribers(self) -> None:
        """End every current subscription with UNAVAILABLE and stop writers waiting: without
        the feed, subscribers bypass their caches."""
        for subscriber in self._subscribers:
            _replace_backlog(subscriber, None)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()


_REPLAY = text(
    """
    SELECT position, topic, key, recorded_at FROM change_log
    WHERE topic = ANY(:topics)
      AND (position > :after
           OR recorded_at >= (SELECT max(recorded_at) FROM change_log WHERE position <= :after)
                             - make_interval(secs => :margin))
    ORDER BY position
    LIMIT :limit
    """
)


async def recorded_position(session: AsyncSession) -> int | None:
    """The position of the last change the session's transaction recorded, or None."""
    value = await session.scalar(_LAST_POSITION)
    return int(value) if value else None


_LAST_POSITION = text("SELECT current_setting('meshgram.change_position', true)")


def _checked_topics(topics: Iterable[str], after_position: int) -> frozenset[str]:
    """The requested topics; InvalidArgument when none, unknown ones or a negative position."""
    wanted = frozenset(topics)
    violations = []
    if not wanted:
        violations.append(FieldViolation("topics", "name at least one topic"))
    unknown = sorted(wanted - TOPICS)
    if unknown:
        allowed = ", ".join(sorted(TOPICS))
        violations.append(
            FieldViolation("topics", f"unknown topic {unknown[0][:64]!r}; known: {allowed}")
        )
    if after_position < 0:
        violations.append(FieldViolation("after_position", "must not be negative"))
    if violations:
        raise invalid(violations)
    return wanted


def _replace_backlog(subscriber: _Subscriber, last: FeedEvent | None) -> None:
    """Empty a subscriber's queue and leave only `last` in it."""
    while not subscriber.queue.empty():
        subscriber.queue.get_nowait()
    subscriber.queue.put_nowait(last)


def _feed_unavailable() -> Unavailable:
    """The error that ends a subscription when the feed cannot guarantee delivery."""
    return Unavailable(
        message="the change feed is unavailable, please resubscribe",
        reason=Reason.DEPENDENCY_UNAVAILABLE,
    )
