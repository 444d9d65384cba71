"""user_svc's own Prometheus figures: the profile cache and the change feed behind it."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from user_svc.cache import ProfileCache
from user_svc.feed import FeedFigures


class ProfileCacheCollector(Collector):
    """Reads the cache's and the feed's counters when Prometheus scrapes."""

    def __init__(self, cache: ProfileCache, feed: FeedFigures) -> None:
        self._cache = cache
        self._feed = feed

    def collect(self) -> Iterator[Metric]:
        """Yield the current figures."""
        figures = self._cache.figures
        lookups = CounterMetricFamily(
            "meshgram_profile_cache_lookups",
            "Profile reads by outcome: hit, miss (loaded from data_access), bypassed (cache off "
            "or change feed down).",
            labels=["outcome"],
        )
        for outcome, value in (
            ("hit", figures.hits),
            ("miss", figures.misses),
            ("bypassed", figures.bypassed),
        ):
            lookups.add_metric([outcome], value)
        yield lookups
        for name, value, text in (
            ("stored", figures.stored, "Loaded profiles kept in the cache."),
            ("refused", figures.refused, "Loads not kept: the profile changed while loading."),
            ("invalidations", figures.invalidations, "Profiles dropped by a change."),
            ("evictions", figures.evictions, "Profiles dropped to stay within the bounds."),
            ("clears", figures.clears, "Times the whole cache was emptied."),
        ):
            yield CounterMetricFamily(f"meshgram_profile_cache_{name}", text, value=value)
        yield GaugeMetricFamily(
            "meshgram_profile_cache_entries", "Profiles held.", value=self._cache.entries
        )
        yield GaugeMetricFamily(
            "meshgram_profile_cache_bytes",
            "Estimated memory of the profiles held.",
            value=self._cache.size_bytes,
        )
        yield GaugeMetricFamily(
            "meshgram_profile_cache_usable",
            "1 while reads may be served from the cache (change feed live).",
            value=int(self._cache.live()),
        )
        yield CounterMetricFamily(
            "meshgram_change_feed_changes", "Changes applied.", value=self._feed.changes
        )
        yield CounterMetricFamily(
            "meshgram_change_feed_resets", "Resets received.", value=self._feed.resets
        )
        yield CounterMetricFamily(
            "meshgram_change_feed_subscriptions",
            "Subscriptions opened (reconnects included).",
            value=self._feed.subscriptions,
        )
        lag = HistogramMetricFamily(
            "meshgram_change_feed_lag_seconds",
            "From a change's write in PostgreSQL to its invalidation in this cache.",
        )
        lag.add_metric([], self._feed.lag_buckets(), self._feed.lag_sum)
        yield lag
        yield GaugeMetricFamily(
            "meshgram_change_feed_max_lag_seconds",
            "The largest such delay since start.",
            value=self._feed.max_lag_seconds,
        )
