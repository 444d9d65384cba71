"""data_access's own Prometheus figures: the database connection pool shared by every RPC."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.pool import Pool, QueuePool


class PoolCollector(Collector):
    """Reads the pool's connection counts when Prometheus scrapes (only a queue pool, the
    kind open_database makes, keeps them; any other pool yields nothing)."""

    def __init__(self, pool: Pool, max_overflow: int) -> None:
        self._pool = pool
        self._max_overflow = max_overflow

    def collect(self) -> Iterator[Metric]:
        """Yield the current connection counts."""
        pool = self._pool
        if not isinstance(pool, QueuePool):
            return
        size = pool.size()
        # The pool's overflow starts at -size and grows with every connection opened.
        opened = size + pool.overflow()
        for name, value, text in (
            ("size", size, "Connections the pool keeps open once opened."),
            (
                "limit",
                size + self._max_overflow,
                "Most connections open at once (pool size plus overflow); calls beyond wait.",
            ),
            ("connections", opened, "Connections open now, idle or in use."),
            ("checked_out", pool.checkedout(), "Connections in use by a call now."),
            ("idle", pool.checkedin(), "Open connections waiting in the pool."),
        ):
            yield GaugeMetricFamily(f"meshgram_db_pool_{name}", text, value=value)
