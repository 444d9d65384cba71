"""A coherent read-through cache of profiles, kept true by data_access's change feed.

Consistency promise (docs/architecture.md, "Profile cache and change feed", says it for users):
a profile is served from the cache only while the feed's latest heartbeat vouches for a time
less than `fresh_seconds` ago — every change committed before that time has been applied here —
so a cached read reflects every write committed more than fresh_seconds (1 s by default) before
it, and in practice every write acknowledged before it. The replica that made a write serves
that write's result to its next reads at once (read-your-own-writes). While the feed is silent
or down, the cache is emptied and every read goes to data_access.

A load that races a change cannot leave an old value behind: each load takes a ticket (the
invalidation count) before it asks data_access, and its result is stored only if its profile
was not invalidated after the ticket was taken.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields

from user_svc.profiles import Profile, ProfileChanges, ProfileStore

# Invalidations remembered to judge racing loads; a load older than the oldest remembered one
# is simply not stored.
_REMEMBERED_INVALIDATIONS = 10_000
# Python object overhead of an entry beyond its strings (dataclass, two datetimes, dict slots).
_ENTRY_OVERHEAD_BYTES = 400


@dataclass
class CacheFigures:
    """Counters since start; exported as metrics and read by the benchmark."""

    hits: int = 0
    misses: int = 0
    bypassed: int = 0
    stored: int = 0
    refused: int = 0
    """Loads not stored because their profile changed (or the feed reset) while loading."""
    invalidations: int = 0
    evictions: int = 0
    clears: int = 0


@dataclass(frozen=True)
class _Entry:
    profile: Profile
    size: int


class ProfileCache:
    """Profiles by account id (and username), bounded by count and by estimated memory."""

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        fresh_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._fresh = fresh_seconds
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._names: dict[str, str] = {}
        self._bytes = 0
        self._connected = False
        self._heard_at = float("-inf")
        self._generation = 0
        self._cleared_at = 0
        self._forgotten_up_to = 0
        self._invalidated: OrderedDict[str, int] = OrderedDict()
        self.figures = CacheFigures()

    @property
    def entries(self) -> int:
        """Profiles held now."""
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Estimated memory the held profiles take."""
        return self._bytes

    def live(self) -> bool:
        """Whether the feed vouches for a recent enough time to trust the cache (no side
        effect: safe to call from a metrics thread)."""
        return self._connected and self._clock() - self._heard_at <= self._fresh

    def usable(self) -> bool:
        """Whether reads may be served from the cache now; a silent feed empties it."""
        if self.live():
            return True
        if self._connected:
            self._connected = False
            self.clear()
        return False

    # Feed side: called by the change subscriber.

    def feed_heard(self, covered_until: float | None = None) -> None:
        """The feed sent a heartbeat: every change committed before `covered_until` (seconds
        since the epoch, by default now) has been applied."""
        self._connected = True
        self._heard_at = max(
            self._heard_at, self._clock() if covered_until is None else covered_until
        )

    def feed_lost(self) -> None:
        """The feed is down: drop everything and bypass until it is heard again."""
        self._connected = False
        self._heard_at = float("-inf")
        self.clear()

    def invalidate(self, account_id: str) -> None:
        """A change of account_id's profile committed: forget it."""
        self.figures.invalidations += 1
        self._mark_changed(account_id)

    def clear(self) -> None:
        """Forget every profile (feed reset or lost); loads in flight are not stored."""
        self._generation += 1
        self._cleared_at = self._generation
        self._invalidated.clear()
        self._entries.clear()
        self._names.clear()
        self._bytes = 0
        self.figures.clears += 1

    # Read side: called by CachedProfiles.

    def ticket(self) -> int:
        """Take before loading a profile; pass to store()."""
        return self._generation

    def by_account_id(self, account_id: str) -> Profile | None:
        """The cached profile of account_id, or None."""
        entry = self._entries.get(account_id)
        if entry is None:
            return None
        self._entries.move_to_end(account_id)
        return entry.profile

    def by_username(self, username: str) -> Profile | None:
        """The cached profile with this normalised username, or None."""
        account_id = self._names.get(username)
        return None if account_id is None else self.by_account_id(account_id)

    def store(self, profile: Profile, ticket: int) -> None:
        """Keep profile, loaded after `ticket` was taken, unless it changed since then."""
        if not self._storable(profile.account_id, ticket):
            self.figures.refused += 1
            return
        self._keep(profile)

    def store_written(self, profile: Profile, ticket: int) -> None:
        """Keep the result of this replica's own write, begun after `ticket` was taken: unless
        another change of the profile arrived meanwhile, later reads here are served it; loads
        that began before it can no longer overwrite it."""
        storable = self._storable(profile.account_id, ticket)
        self._mark_changed(profile.account_id)
        if storable:
            self._keep(profile)
        else:
            self.figures.refused += 1

    def _storable(self, account_id: str, ticket: int) -> bool:
        """Whether a value of account_id read after `ticket` is still current."""
        return (
            ticket >= self._cleared_at
            and ticket >= self._forgotten_up_to
            and self._invalidated.get(account_id, 0) <= ticket
            and self.usable()
        )

    def _mark_changed(self, account_id: str) -> None:
        """Forget account_id's profile and refuse loads of it that began before now."""
        self._generation += 1
        self._invalidated[account_id] = self._generation
        self._invalidated.move_to_end(account_id)
        if len(self._invalidated) > _REMEMBERED_INVALIDATIONS:
            _, generation = self._invalidated.popitem(last=False)
            self._forgotten_up_to = generation
        self._drop(account_id)

    def _keep(self, profile: Profile) -> None:
        """Hold profile, evicting the least recently used beyond the bounds."""
        account_id = profile.account_id
        self._drop(account_id)
        entry = _Entry(profile, _estimated_size(profile))
        self._entries[account_id] = entry
        self._names[profile.username] = account_id
        self._bytes += entry.size
        self.figures.stored += 1
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.figures.evictions += 1

    def _drop(self, account_id: str) -> None:
        """Remove one entry and its username index."""
        entry = self._entries.pop(account_id, None)
        if entry is None:
            return
        self._bytes -= entry.size
        if self._names.get(entry.profile.username) == account_id:
            del self._names[entry.profile.username]


class CachedProfiles:
    """A ProfileStore that serves reads from a ProfileCache and fills it from another store."""

    def __init__(self, store: ProfileStore, cache: ProfileCache) -> None:
        self._store = store
        self._cache = cache

    async def get_by_account_id(self, account_id: str) -> Profile:
        """Return the profile of an account or raise NotFound."""
        return await self._read(
            self._cache.by_account_id, self._store.get_by_account_id, account_id
        )

    async def get_by_username(self, username: str) -> Profile:
        """Return the profile with a normalised username or raise NotFound."""
        return await self._read(self._cache.by_username, self._store.get_by_username, username)

    async def _read(
        self,
        cached: Callable[[str], Profile | None],
        load: Callable[[str], Awaitable[Profile]],
        key: str,
    ) -> Profile:
        """Serve key from the cache when it may be used and holds it, else load and keep it."""
        cache = self._cache
        if not cache.usable():
            cache.figures.bypassed += 1
            return await load(key)
        hit = cached(key)
        if hit is not None:
            cache.figures.hits += 1
            return hit
        cache.figures.misses += 1
        ticket = cache.ticket()
        profile = await load(key)
        cache.store(profile, ticket)
        return profile

    async def update(self, account_id: str, changes: ProfileChanges) -> Profile:
        """Apply changes through the store; this replica's next reads see the result."""
        return await self._written(self._store.update(account_id, changes))

    async def change_username(
        self, account_id: str, username: str, *, cooldown_seconds: float
    ) -> Profile:
        """Rename through the store; this replica's next reads see the new name."""
        return await self._written(
            self._store.change_username(account_id, username, cooldown_seconds=cooldown_seconds)
        )

    async def _written(self, write: Awaitable[Profile]) -> Profile:
        """Run a write of a profile and keep its result for this replica's next reads."""
        ticket = self._cache.ticket()
        profile = await write
        # If another change of this profile arrived meanwhile, nothing is kept and the next
        # read asks data_access, which has this write or a later one.
        self._cache.store_written(profile, ticket)
        return profile


def _estimated_size(profile: Profile) -> int:
    """Approximate bytes a cached profile occupies."""
    text = sum(
        sys.getsizeof(value)
        for value in (getattr(profile, f.name) for f in fields(profile))
        if isinstance(value, str)
    )
    return _ENTRY_OVERHEAD_BYTES + text
