"""Keeps a ProfileCache coherent from data_access's change feed: subscribe, apply, resubscribe."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import time

import grpc

from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.background import BackgroundTask
from meshkit.clients import PeerCaller
from user_svc.cache import ProfileCache

log = logging.getLogger("user_svc.feed")

TOPIC = "profile"
_RETRY_FIRST_SECONDS = 0.1
# Short: while unsubscribed the cache is bypassed, so every read costs a database query; a
# refused subscription is cheap (data_access answers UNAVAILABLE at once while its feed is down).
_RETRY_MAX_SECONDS = 1.0


# Upper bounds of the lag histogram, in seconds.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FeedFigures:
    """What the subscriber has seen, for metrics: changes applied and how late they came."""

    def __init__(self) -> None:
        self.changes = 0
        self.resets = 0
        self.subscriptions = 0
        self.max_lag_seconds = 0.0
        self.lag_sum = 0.0
        self._lag_counts = [0] * (len(LAG_BUCKETS) + 1)

    def observe_lag(self, seconds: float) -> None:
        """Record how long after it was written a change was applied."""
        self.max_lag_seconds = max(self.max_lag_seconds, seconds)
        self.lag_sum += seconds
        self._lag_counts[bisect.bisect_left(LAG_BUCKETS, seconds)] += 1

    def lag_buckets(self) -> list[tuple[str, float]]:
        """Cumulative (upper bound, count) pairs in Prometheus' histogram form."""
        bounds = [*(str(b) for b in LAG_BUCKETS), "+Inf"]
        return list(zip(bounds, itertools.accumulate(self._lag_counts), strict=True))


class ChangeSubscriber:
    """Subscribes to profile changes and applies them to the cache; empties it while down."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        peer: PeerCaller,
        cache: ProfileCache,
        *,
        silence_seconds: float,
    ) -> None:
        self._stub = dataaccess_pb2_grpc.ChangeFeedServiceStub(channel)
        self._peer = peer
        self._cache = cache
        self._silence = silence_seconds
        self._delivered = False
        self._background = BackgroundTask("profile-change-subscriber", self._run)
        self.figures = FeedFigures()

    def start(self) -> None:
        """Start following the feed in the background of the running event loop."""
        self._background.start()

    async def stop(self) -> None:
        """Stop following the feed; the cache is emptied and bypassed from now on."""
        await self._background.stop()
        self._cache.feed_lost()

    async def _run(self) -> None:
        """Follow the feed, resubscribing with growing pauses while it cannot be reached; a
        subscription that delivered anything resets the pause."""
        pause = _RETRY_FIRST_SECONDS
        while True:
            self._delivered = False
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "profile change feed interrupted",
                    extra={"code": error.code().name, "retry_seconds": pause},
                )
            except Exception:  # whatever broke, the cache must not be trusted now
                log.exception("profile change feed failed")
            self._cache.feed_lost()
            if self._delivered:
                pause = _RETRY_FIRST_SECONDS
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RETRY_MAX_SECONDS)

    async def _follow(self) -> None:
        """Apply one subscription's events until it ends."""
        # Live changes only: the cache starts empty on every subscription, so it has nothing a
        # replay could correct.
        call = self._stub.SubscribeChanges(
            dataaccess_pb2.SubscribeChangesRequest(topics=[TOPIC]), metadata=self._peer.metadata()
        )
        self.figures.subscriptions += 1
        try:
            while True:
                # A feed that says nothing for this long is as good as down.
                async with asyncio.timeout(self._silence):
                    event = await call.read()
                if not isinstance(event, dataaccess_pb2.SubscribeChangesResponse):
                    return  # grpc.aio.EOF: the feed ended the stream
                if not self._delivered:
                    # A fresh subscription cannot vouch for what happened before it: start empty.
                    self._cache.clear()
                    self._delivered = True
                self._apply(event)
        except TimeoutError:
            log.warning("profile change feed silent", extra={"seconds": self._silence})
        finally:
            call.cancel()

    def _apply(self, event: dataaccess_pb2.SubscribeChangesResponse) -> None:
        """Apply one feed event to the cache."""
        kind = event.WhichOneof("event")
        if kind == "change":
            change = event.change
            self._cache.invalidate(change.key)
            self.figures.changes += 1
            self.figures.observe_lag(time.time() - change.record_time.ToNanoseconds() / 1e9)
        elif kind == "heartbeat":
            self._cache.feed_heard(event.heartbeat.time.ToNanoseconds() / 1e9)
        elif kind == "reset":
            self._cache.clear()
            self.figures.resets += 1
            log.warning("profile cache reset by the feed", extra={"reason": event.reset.reason})
