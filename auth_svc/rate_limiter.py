"""The shared limiter behind the edge's strict rate limits (docs/rate-limits.md): it counts each
request against a fixed window per route group and client address, kept in PostgreSQL through
data_access, so every edge replica and every auth_svc replica see one count. Free of grpc and
protobuf (auth_svc/rate_limit_servicer.py speaks Envoy's protocol).

The edge writes the limit into each descriptor (group, "<requests>/<seconds>", client address)
from meshkit.rate_limits, so this side needs no copy of the table and cannot disagree with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from meshkit.rate_limits import CLIENT_KEY, GROUP_KEY, LIMIT_KEY, WINDOW_MAX_SECONDS


@dataclass(frozen=True)
class Descriptor:
    """One limit the edge asks about: `requests` per `window_seconds` of `group` from
    `client`."""

    group: str
    requests: int
    window_seconds: int
    client: str

    @property
    def key(self) -> str:
        """The counter's key: one per group and client address."""
        return f"edge:{self.group}:{self.client}"


@dataclass(frozen=True)
class WindowCount:
    """A counter's hits in its current window (these included) and when the window ends."""

    hits: int
    ends_at: datetime


@dataclass(frozen=True)
class Status:
    """The verdict on one descriptor."""

    over: bool
    remaining: int
    reset_seconds: int


@dataclass(frozen=True)
class Verdict:
    """The verdict on a request: over when any of its descriptors is, with the statuses in
    request order and the seconds until the client may try again (0 unless over)."""

    over: bool
    statuses: list[Status]
    retry_after_seconds: int


class RateWindows(Protocol):
    """Where the counts are kept (data_access's AccountSecurityService)."""

    async def hit_rate_windows(
        self, windows: Sequence[tuple[str, int]], count: int
    ) -> list[WindowCount]:
        """Count `count` hits in the current window of each (key, window seconds) and return
        the counts after them, in order."""
        ...


def read_descriptor(entries: Sequence[tuple[str, str]]) -> Descriptor | None:
    """The descriptor the edge's entries (key, value) describe, or None when they are not one
    of the edge's (another domain's, or malformed): such a descriptor is never limited."""
    values = dict(entries)
    group, limit, client = (values.get(key, "") for key in (GROUP_KEY, LIMIT_KEY, CLIENT_KEY))
    requests, _, seconds = limit.partition("/")
    if not (group and client and requests.isdigit() and seconds.isdigit()):
        return None
    if not 1 <= int(seconds) <= WINDOW_MAX_SECONDS or int(requests) < 1:
        return None
    return Descriptor(group, int(requests), int(seconds), client)


class RateLimiter:
    """Counts requests in shared windows and says whether one is over its limits."""

    def __init__(self, windows: RateWindows) -> None:
        self._windows = windows

    async def check(
        self, descriptors: Sequence[Descriptor | None], hits: int, now: datetime
    ) -> Verdict:
        """Count hits (at least 1) against every descriptor and return the verdict; None
        descriptors are not counted and never over."""
        # One count per key, however many descriptors name it.
        keyed = {d.key: d for d in descriptors if d is not None}
        counts: dict[str, WindowCount] = {}
        if keyed:
            windows = [(key, d.window_seconds) for key, d in keyed.items()]
            found = await self._windows.hit_rate_windows(windows, max(hits, 1))
            counts = dict(zip(keyed, found, strict=True))
        statuses: list[Status] = []
        retry_after = 0
        for descriptor in descriptors:
            if descriptor is None:
                statuses.append(Status(over=False, remaining=0, reset_seconds=0))
                continue
            count = counts[descriptor.key]
            # Whole seconds, at least one: HTTP's Retry-After has no fractions, and a window
            # that ends "now" on the database's clock may not have ended on the client's.
            left = (count.ends_at - now).total_seconds()
            reset = min(max(math.ceil(left), 1), descriptor.window_seconds)
            over = count.hits > descriptor.requests
            if over:
                retry_after = max(retry_after, reset)
            statuses.append(Status(over, max(descriptor.requests - count.hits, 0), reset))
        return Verdict(any(status.over for status in statuses), statuses, retry_after)
