"""The profile cache: hits and bypasses, invalidation, freshness, racing loads, bounds, figures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from meshkit.errors import NotFound
from meshkit.reasons import Reason
from user_svc.cache import _REMEMBERED_INVALIDATIONS, CachedProfiles, CacheFigures, ProfileCache
from user_svc.profiles import Profile, ProfileChanges

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FRESH = 1.0


def profile(account_id: str, username: str, *, bio: str = "") -> Profile:
    """A profile with the given identity and bio."""
    return Profile(
        account_id=account_id,
        username=username,
        display_name="",
        bio=bio,
        avatar_image_id="",
        create_time=NOW,
        update_time=NOW,
    )


ADA = profile("a1", "ada")
BOB = profile("a2", "bob")
CYD = profile("a3", "cyd")
DEE = profile("a4", "dee")


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


class FakeStore:
    """In-memory ProfileStore that records its calls and can hold one call before it answers."""

    def __init__(self, *profiles: Profile) -> None:
        self.profiles = {p.account_id: p for p in profiles}
        self.reads_by_id: list[str] = []
        self.reads_by_username: list[str] = []
        self.updates: list[tuple[str, ProfileChanges]] = []
        self.holding = asyncio.Event()
        self._gate: asyncio.Event | None = None

    def hold_next(self) -> asyncio.Event:
        """Make the next call wait, its answer already read, until the returned event is set."""
        self._gate = asyncio.Event()
        self.holding.clear()
        return self._gate

    async def _answer(self, result: Profile) -> Profile:
        """Return result, first waiting for release if a hold was asked for."""
        gate, self._gate = self._gate, None
        if gate is not None:
            self.holding.set()
            await gate.wait()
        return result

    async def get_by_account_id(self, account_id: str) -> Profile:
        self.reads_by_id.append(account_id)
        found = self.profiles.get(account_id)
        if found is None:
            raise NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND)
        return await self._answer(found)

    async def get_by_username(self, username: str) -> Profile:
        self.reads_by_username.append(username)
        for found in self.profiles.values():
            if found.username == username:
                return await self._answer(found)
        raise NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND)

    async def update(self, account_id: str, changes: ProfileChanges) -> Profile:
        self.updates.append((account_id, changes))
        updated = self.profiles[account_id]
        if changes.display_name is not None:
            updated = replace(updated, display_name=changes.display_name)
        if changes.bio is not None:
            updated = replace(updated, bio=changes.bio)
        self.profiles[account_id] = updated
        return await self._answer(updated)

    @property
    def reads(self) -> int:
        """Reads asked of the store so far, by id and by username."""
        return len(self.reads_by_id) + len(self.reads_by_username)


@dataclass
class Rig:
    """A CachedProfiles, the fake store behind it and the clock its cache reads."""

    clock: FakeClock
    store: FakeStore
    cache: ProfileCache
    profiles: CachedProfiles


def rig(
    *stored: Profile, max_entries: int = 100, max_bytes: int = 1_000_000, heard: bool = True
) -> Rig:
    """A cache over a store holding `stored`, the feed heard just now unless heard=False."""
    clock = FakeClock()
    store = FakeStore(*stored)
    cache = ProfileCache(
        max_entries=max_entries, max_bytes=max_bytes, fresh_seconds=FRESH, clock=clock
    )
    if heard:
        cache.feed_heard()
    return Rig(clock, store, cache, CachedProfiles(store, cache))


async def held(store: FakeStore, call: Coroutine[Any, Any, Profile]) -> asyncio.Task[Profile]:
    """Start call as a task and return once the store holds it (see FakeStore.hold_next)."""
    task = asyncio.create_task(call)
    for _ in range(10):
        await asyncio.sleep(0)
        if store.holding.is_set():
            return task
        if task.done():
            task.result()
            raise AssertionError("the call finished without reaching the store")
    task.cancel()
    raise AssertionError("the call never reached the store")


def entry_size(p: Profile) -> int:
    """Bytes a cache charges for holding p, measured on a cache of its own."""
    probe = ProfileCache(max_entries=1, max_bytes=10**9, fresh_seconds=FRESH, clock=FakeClock())
    probe.feed_heard()
    probe.store(p, probe.ticket())
    return probe.size_bytes


# 1. Hits, and bypasses before the feed is heard.


async def test_reads_go_to_the_store_and_are_not_kept_until_the_feed_is_heard() -> None:
    r = rig(ADA, heard=False)
    for _ in range(2):
        assert await r.profiles.get_by_account_id("a1") == ADA
        assert await r.profiles.get_by_username("ada") == ADA
    assert r.store.reads_by_id == ["a1", "a1"]
    assert r.store.reads_by_username == ["ada", "ada"]
    assert r.cache.entries == 0

    r.cache.feed_heard()
    assert await r.profiles.get_by_account_id("a1") == ADA
    assert await r.profiles.get_by_account_id("a1") == ADA
    assert r.store.reads_by_id == ["a1", "a1", "a1"]


async def test_a_second_read_by_account_id_is_served_from_the_cache() -> None:
    r = rig(ADA, BOB)
    assert await r.profiles.get_by_account_id("a1") == ADA
    assert await r.profiles.get_by_account_id("a1") == ADA
    assert await r.profiles.get_by_account_id("a2") == BOB
    assert r.store.reads_by_id == ["a1", "a2"]
    assert r.cache.entries == 2


async def test_a_read_by_username_fills_the_entry_a_read_by_id_then_hits() -> None:
    r = rig(ADA)
    assert await r.profiles.get_by_username("ada") == ADA
    assert await r.profiles.get_by_account_id("a1") == ADA
    assert await r.profiles.get_by_username("ada") == ADA
    assert r.store.reads_by_username == ["ada"]
    assert r.store.reads_by_id == []


async def test_a_read_by_id_fills_the_entry_a_read_by_username_then_hits() -> None:
    r = rig(ADA)
    assert await r.profiles.get_by_account_id("a1") == ADA
    assert await r.profiles.get_by_username("ada") == ADA
    assert r.store.reads_by_id == ["a1"]
    assert r.store.reads_by_username == []


# 2. Invalidation.


async def test_an_invalidated_profile_is_read_again_with_its_new_value() -> None:
    r = rig(ADA)
    await r.profiles.get_by_account_id("a1")
    changed = replace(ADA, bio="new")
    r.store.profiles["a1"] = changed
    assert await r.profiles.get_by_account_id("a1") == ADA  # nothing told the cache yet

    r.cache.invalidate("a1")
    assert await r.profiles.get_by_account_id("a1") == changed
    assert await r.profiles.get_by_account_id("a1") == changed
    assert r.store.reads_by_id == ["a1", "a1"]


async def test_an_invalidated_profile_is_not_found_by_username_in_the_cache() -> None:
    r = rig(ADA)
    await r.profiles.get_by_account_id("a1")
    r.cache.invalidate("a1")
    assert await r.profiles.get_by_username("ada") == ADA
    assert r.store.reads_by_username == ["ada"]


async def test_invalidating_one_account_keeps_the_others_cached() -> None:
    r = rig(ADA, BOB)
    await r.profiles.get_by_account_id("a1")
    await r.profiles.get_by_account_id("a2")
    r.cache.invalidate("a1")
    assert await r.profiles.get_by_account_id("a2") == BOB
    assert await r.profiles.get_by_username("bob") == BOB
    assert r.store.reads == 2
    assert await r.profiles.get_by_account_id("a1") == ADA
    assert r.store.reads_by_id == ["a1", "a2", "a1"]


# 3. Freshness.


async def test_the_cache_is_trusted_for_fresh_seconds_after_the_feed_was_last_heard() -> None:
    r = rig(ADA)
    await r.profiles.get_by_account_id("a1")
    r.clock.advance(0.75 * FRESH)
    r.cache.feed_heard()
    r.clock.advance(0.75 * FRESH)  # 1.5 x fresh since the first heartbeat, 0.75 x since the last
    assert await r.profiles.get_by_account_id("a1") == ADA
    assert r.store.reads_by_id == ["a1"]


async def test_a_silent_feed_bypasses_the_cache_and_empties_it() -> None:
    r = rig(ADA)
    await r.profiles.get_by_account_id("a1")
    r.clock.advance(FRESH + 0.01)
    changed = replace(ADA, bio="new")
    r.store.profiles["a1"] = changed

    assert await r.profiles.get_by_account_id("a1") == changed
    assert await r.profiles.get_by_username("ada") == changed
    assert r.cache.entries == 0
    assert r.cache.size_bytes == 0
    assert r.store.reads == 3

    r.cache.feed_heard()
    assert await r.profiles.get_by_account_id("a1") == changed  # a miss, not the old entry
    assert await r.profiles.get_by_account_id("a1") == changed
    assert r.store.reads_by_id == ["a1", "a1", "a1"]


async def test_a_lost_feed_empties_the_cache_and_bypasses_it_until_heard_again() -> None:
    r = rig(ADA)
    await r.profiles.get_by_account_id("a1")
    r.cache.feed_lost()
    assert r.cache.entries == 0
    assert r.cache.size_bytes == 0

    await r.profiles.get_by_account_id("a1")
    await r.profiles.get_by_account_id("a1")
    assert r.store.reads_by_id == ["a1", "a1", "a1"]
    assert r.cache.entries == 0

    r.cache.feed_heard()
    await r.profiles.get_by_account_id("a1")
    await r.profiles.get_by_account_id("a1")
    assert r.store.reads_by_id == ["a1", "a1", "a1", "a1"]


# 4. Loads racing changes.


def _reset_feed(cache: ProfileCache, account_id: str) -> None:
    """The feed drops and comes back."""
    cache.feed_lost()
    cache.feed_heard()


# The ways the cache learns that an account's profile may have changed.
CHANGES: dict[str, Callable[[ProfileCache, str], None]] = {
    "invalidation": ProfileCache.invalidate,
    "clear": lambda cache, account_id: cache.clear(),
    "feed lost and heard again": _reset_feed,
}


@pytest.mark.parametrize("by", ["account id", "username"])
@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
async def test_a_load_racing_a_change_returns_the_old_value_but_does_not_keep_it(
    change: Callable[[ProfileCache, str], None], by: str
) -> None:
    r = rig(ADA)
    changed = replace(ADA, bio="new")
    release = r.store.hold_next()
    read = (
        r.profiles.get_by_account_id("a1")
        if by == "account id"
        else r.profiles.get_by_username("ada")
    )
    loading = await held(r.store, read)

    r.store.profiles["a1"] = changed
    change(r.cache, "a1")
    release.set()
    assert await loading == ADA  # read before the change: right for that caller
    assert r.cache.entries == 0
    assert r.cache.figures.refused == 1

    assert await r.profiles.get_by_account_id("a1") == changed
    assert await r.profiles.get_by_username("ada") == changed
    assert r.store.reads == 2


async def test_a_load_racing_an_invalidation_of_another_account_is_kept() -> None:
    r = rig(ADA, BOB)
    release = r.store.hold_next()
    loading = await held(r.store, r.profiles.get_by_account_id("a1"))
    r.cache.invalidate("a2")
    release.set()
    assert await loading == ADA
    assert r.cache.figures.stored == 1

    assert await r.profiles.get_by_account_id("a1") == ADA
    assert r.store.reads_by_id == ["a1"]


async def test_a_load_finishing_after_the_feed_fell_silent_is_not_kept() -> None:
    r = rig(ADA)
    release = r.store.hold_next()
    loading = await held(r.store, r.profiles.get_by_account_id("a1"))
    r.clock.advance(FRESH + 0.01)
    release.set()
    assert await loading == ADA
    assert r.cache.entries == 0

    r.cache.feed_heard()
    await r.profiles.get_by_account_id("a1")
    assert r.store.reads_by_id == ["a1", "a1"]


# 5. Read-your-own-writes.


async def test_an_update_is_read_back_at_once_without_asking_the_store() -> None:
    r = rig(ADA)
    await r.profiles.get_by_account_id("a1")
    updated = await r.profiles.update("a1", ProfileChanges(bio="Counting machines."))
    assert updated.bio == "Counting machines."

    assert await r.profiles.get_by_account_id("a1") == updated
    assert await r.profiles.get_by_username("ada") == updated
    assert r.store.reads_by_id == ["a1"]
    assert r.store.reads_by_username == []


async def test_an_update_racing_an_invalidation_of_its_account_is_not_kept() -> None:
    r = rig(ADA)
    await r.profiles.get_by_account_id("a1")
    release = r.store.hold_next()
    updating = await held(r.store, r.profiles.update("a1", ProfileChanges(bio="mine")))

    later = replace(ADA, bio="someone else's, committed after mine")
    r.store.profiles["a1"] = later
    r.cache.invalidate("a1")
    release.set()
    assert (await updating).bio == "mine"
    assert r.cache.entries == 0

    assert await r.profiles.get_by_account_id("a1") == later
    assert r.store.reads_by_id == ["a1", "a1"]


async def test_an_update_while_the_feed_is_down_is_not_kept() -> None:
    r = rig(ADA, heard=False)
    await r.profiles.update("a1", ProfileChanges(bio="mine"))
    r.cache.feed_heard()
    assert (await r.profiles.get_by_account_id("a1")).bio == "mine"
    assert r.store.reads_by_id == ["a1"]


async def test_an_update_that_cannot_be_kept_still_drops_the_old_profile() -> None:
    r = rig(ADA)
    await r.profiles.get_by_account_id("a1")
    release = r.store.hold_next()
    updating = await held(r.store, r.profiles.update("a1", ProfileChanges(bio="mine")))
    for i in range(_REMEMBERED_INVALIDATIONS + 1):  # too many to judge the update's ticket by
        r.cache.invalidate(f"other-{i}")
    release.set()
    await updating
    assert r.cache.figures.refused == 1

    assert (await r.profiles.get_by_account_id("a1")).bio == "mine"
    assert r.store.reads_by_id == ["a1", "a1"]


async def test_a_read_that_started_before_an_update_cannot_hide_it_from_later_reads() -> None:
    r = rig(ADA)
    release = r.store.hold_next()
    loading = await held(r.store, r.profiles.get_by_account_id("a1"))  # answered ADA already
    updated = await r.profiles.update("a1", ProfileChanges(bio="mine"))
    release.set()
    assert await loading == ADA

    # The update has returned: this replica's next read must see it (read-your-own-writes).
    assert await r.profiles.get_by_account_id("a1") == updated


# 6. Bounds.


async def test_the_least_recently_used_profile_is_evicted_first() -> None:
    r = rig(ADA, BOB, CYD, DEE, max_entries=3)
    for account_id in ("a1", "a2", "a3"):
        await r.profiles.get_by_account_id(account_id)
    await r.profiles.get_by_account_id("a1")  # a hit: a1 is now used more recently than a2
    await r.profiles.get_by_account_id("a4")
    assert r.cache.entries == 3
    assert r.cache.figures.evictions == 1

    for account_id in ("a1", "a3", "a4"):
        await r.profiles.get_by_account_id(account_id)
    assert r.store.reads_by_id == ["a1", "a2", "a3", "a4"]
    await r.profiles.get_by_account_id("a2")
    assert r.store.reads_by_id == ["a1", "a2", "a3", "a4", "a2"]


async def test_long_bios_evict_older_profiles_to_stay_within_max_bytes() -> None:
    short = [profile(f"s{i}", f"short{i}") for i in range(3)]
    long = [profile(f"l{i}", f"long{i}", bio="\U0001f9ee" * 300) for i in range(4)]
    short_size, long_size = entry_size(short[0]), entry_size(long[0])
    assert long_size > 2 * short_size  # so the bound, not the count, is what evicts
    max_bytes = 3 * short_size + long_size - 1
    r = rig(*short, *long, max_bytes=max_bytes)

    for p in short:
        await r.profiles.get_by_account_id(p.account_id)
    assert r.cache.entries == 3
    assert r.cache.size_bytes == 3 * short_size

    await r.profiles.get_by_account_id("l0")  # one byte too many: the oldest short one goes
    assert r.cache.entries == 3
    assert r.cache.size_bytes <= max_bytes
    await r.profiles.get_by_account_id("s1")
    await r.profiles.get_by_account_id("s2")
    await r.profiles.get_by_account_id("l0")
    assert r.store.reads_by_id == ["s0", "s1", "s2", "l0"]

    for p in long[1:]:
        await r.profiles.get_by_account_id(p.account_id)
        assert r.cache.size_bytes <= max_bytes
        assert await r.profiles.get_by_account_id(p.account_id) == p  # the newest stays
    kept = max_bytes // long_size  # the newest long ones that fit; every short one is gone
    assert r.cache.entries == kept
    assert r.cache.size_bytes == kept * long_size
    assert r.cache.figures.evictions == len(short) + len(long) - kept


async def test_entries_and_size_fall_back_to_zero_when_emptied() -> None:
    r = rig(ADA, BOB, CYD)
    for account_id in ("a1", "a2", "a3"):
        await r.profiles.get_by_account_id(account_id)
    assert r.cache.entries == 3
    assert r.cache.size_bytes == sum(entry_size(p) for p in (ADA, BOB, CYD))

    r.cache.invalidate("a2")
    assert r.cache.entries == 2
    assert r.cache.size_bytes == entry_size(ADA) + entry_size(CYD)

    r.cache.clear()
    assert (r.cache.entries, r.cache.size_bytes) == (0, 0)


# 7. The username index and absent profiles.


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
async def test_a_renamed_account_is_not_found_by_its_old_username(
    change: Callable[[ProfileCache, str], None],
) -> None:
    r = rig(BOB)
    assert await r.profiles.get_by_username("bob") == BOB
    renamed = replace(BOB, username="rob")
    r.store.profiles["a2"] = renamed
    change(r.cache, "a2")
    assert await r.profiles.get_by_account_id("a2") == renamed

    with pytest.raises(NotFound):
        await r.profiles.get_by_username("bob")
    assert r.store.reads_by_username == ["bob", "bob"]
    assert await r.profiles.get_by_username("rob") == renamed
    assert r.store.reads_by_username == ["bob", "bob"]


async def test_a_missing_profile_is_asked_for_again() -> None:
    r = rig()
    for _ in range(2):
        with pytest.raises(NotFound):
            await r.profiles.get_by_account_id("a1")
        with pytest.raises(NotFound):
            await r.profiles.get_by_username("ada")
    assert r.store.reads_by_id == ["a1", "a1"]
    assert r.store.reads_by_username == ["ada", "ada"]
    assert r.cache.entries == 0

    r.store.profiles["a1"] = ADA  # registered since
    assert await r.profiles.get_by_account_id("a1") == ADA


# 8. Figures.


async def test_figures_count_what_happened() -> None:
    r = rig(ADA, BOB, CYD, max_entries=2, heard=False)
    await r.profiles.get_by_account_id("a1")  # bypassed
    r.cache.feed_heard()
    await r.profiles.get_by_account_id("a1")  # miss, stored
    await r.profiles.get_by_account_id("a1")  # hit
    await r.profiles.get_by_username("ada")  # hit
    await r.profiles.get_by_username("bob")  # miss, stored
    r.cache.invalidate("a1")  # invalidation
    release = r.store.hold_next()
    loading = await held(r.store, r.profiles.get_by_account_id("a1"))  # miss
    r.cache.invalidate("a1")  # invalidation
    release.set()
    await loading  # refused
    await r.profiles.get_by_account_id("a3")  # miss, stored (a2, a3)
    await r.profiles.get_by_account_id("a1")  # miss, stored, a2 evicted
    r.clock.advance(FRESH + 0.01)
    await r.profiles.get_by_account_id("a1")  # bypassed, cleared by the silence
    await r.profiles.get_by_account_id("a1")  # bypassed
    r.cache.feed_heard()
    r.cache.feed_lost()  # cleared
    await r.profiles.get_by_username("ada")  # bypassed

    assert r.cache.figures == CacheFigures(
        hits=2,
        misses=5,
        bypassed=4,
        stored=4,
        refused=1,
        invalidations=2,
        evictions=1,
        clears=2,
    )


# 9. The bound on remembered invalidations.


async def test_a_load_outlasting_the_remembered_invalidations_is_not_kept() -> None:
    r = rig(ADA)
    release = r.store.hold_next()
    loading = await held(r.store, r.profiles.get_by_account_id("a1"))
    for i in range(_REMEMBERED_INVALIDATIONS + 1):
        r.cache.invalidate(f"other-{i}")
    release.set()
    assert await loading == ADA
    assert r.cache.figures.refused == 1

    await r.profiles.get_by_account_id("a1")
    assert r.store.reads_by_id == ["a1", "a1"]


async def test_a_load_racing_as_many_invalidations_as_are_remembered_is_kept() -> None:
    r = rig(ADA)
    release = r.store.hold_next()
    loading = await held(r.store, r.profiles.get_by_account_id("a1"))
    for i in range(_REMEMBERED_INVALIDATIONS):
        r.cache.invalidate(f"other-{i}")
    release.set()
    assert await loading == ADA
    assert r.cache.figures.stored == 1

    await r.profiles.get_by_account_id("a1")
    assert r.store.reads_by_id == ["a1"]
