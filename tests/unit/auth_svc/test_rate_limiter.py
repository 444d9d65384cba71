"""The shared limiter's decisions: what the edge's descriptors mean, when a client is over its
limit and when it may try again (counts in memory; data_access keeps them for real)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from auth_svc.rate_limiter import Descriptor, RateLimiter, WindowCount, read_descriptor

NOW = datetime(2026, 12, 3, 5, 0, 10, tzinfo=UTC)


class MemoryWindows:
    """Windows of fixed length starting at whole multiples of it, counted in memory."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.asked: list[list[tuple[str, int]]] = []

    async def hit_rate_windows(
        self, windows: Sequence[tuple[str, int]], count: int
    ) -> list[WindowCount]:
        self.asked.append(list(windows))
        counts = []
        for key, seconds in windows:
            self.hits[key] = self.hits.get(key, 0) + count
            start = int(NOW.timestamp()) // seconds * seconds
            ends_at = datetime.fromtimestamp(start + seconds, tz=UTC)
            counts.append(WindowCount(self.hits[key], ends_at))
        return counts


def _login(client: str = "203.0.113.7", limit: str = "3/60") -> Descriptor | None:
    """The edge's descriptor of a login from client."""
    return read_descriptor([("group", "login"), ("limit", limit), ("remote_address", client)])


def test_the_edge_descriptor_names_group_limit_and_client() -> None:
    assert _login() == Descriptor("login", 3, 60, "203.0.113.7")
    assert _login().key == "edge:login:203.0.113.7"  # type: ignore[union-attr]


def test_descriptors_that_are_not_the_edges_are_not_read() -> None:
    assert read_descriptor([("remote_address", "203.0.113.7")]) is None
    assert _login(limit="3") is None
    assert _login(limit="0/60") is None
    assert _login(limit="3/0") is None
    assert _login(limit="3/90000") is None
    assert _login(client="") is None


async def test_the_request_past_the_limit_is_over_with_the_rest_of_the_window() -> None:
    limiter = RateLimiter(MemoryWindows())
    verdicts = [await limiter.check([_login()], 1, NOW) for _ in range(4)]
    assert [verdict.over for verdict in verdicts] == [False, False, False, True]
    assert [verdict.statuses[0].remaining for verdict in verdicts] == [2, 1, 0, 0]
    # The window started at 05:00:00 and ends at 05:01:00; it is 05:00:10.
    assert verdicts[-1].retry_after_seconds == 50
    assert verdicts[0].retry_after_seconds == 0


async def test_clients_are_counted_apart() -> None:
    limiter = RateLimiter(MemoryWindows())
    for _ in range(3):
        await limiter.check([_login("203.0.113.7")], 1, NOW)
    assert (await limiter.check([_login("203.0.113.7")], 1, NOW)).over
    assert not (await limiter.check([_login("198.51.100.2")], 1, NOW)).over


async def test_retry_after_is_at_least_a_second_and_at_most_a_window() -> None:
    limiter = RateLimiter(MemoryWindows())
    late = NOW + timedelta(seconds=49, milliseconds=900)
    for _ in range(4):
        verdict = await limiter.check([_login()], 1, late)
    assert verdict.retry_after_seconds == 1
    early = NOW - timedelta(hours=1)
    assert (await limiter.check([_login()], 1, early)).retry_after_seconds == 60


async def test_other_descriptors_are_neither_counted_nor_limited() -> None:
    windows = MemoryWindows()
    verdict = await RateLimiter(windows).check([None, _login()], 0, NOW)
    assert [status.over for status in verdict.statuses] == [False, False]
    assert windows.asked == [[("edge:login:203.0.113.7", 60)]]
    assert not (await RateLimiter(windows).check([None], 1, NOW)).over
    assert windows.asked == [[("edge:login:203.0.113.7", 60)]]


async def test_hits_addend_counts_that_many() -> None:
    verdict = await RateLimiter(MemoryWindows()).check([_login()], 4, NOW)
    assert verdict.over
