"""The profile cache of user_svc, end to end: two user_svc replicas, each with its own cache kept
true by data_access's change feed, read straight over native gRPC.

- A write is read back at once on the replica that made it (read-your-own-writes) and seen by
  the other replica within the documented bound (a cached read reflects every write committed
  more than USER_CACHE_FRESH_SECONDS, 1 s, before it), while most reads are still cache hits.
- A change made by another service (an avatar set through storage_svc) is seen by both replicas
  within the bound, usually on their first read after it was acknowledged.
- While the change feed is down nothing is served from a cache; once it is back, the cache is.

Runs its own mesh (user_svc twice), so that its load, and stopping data_access in the last test,
cannot disturb the other end-to-end tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from prometheus_client.parser import text_string_to_metric_families

from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshgram.user.v1 import user_pb2, user_pb2_grpc
from tests.e2e.support import free_ports, png_bytes, rest_sign_in
from tools.mesh import Mesh

if TYPE_CHECKING:
    from meshgram.user.v1.user_pb2_grpc import UserServiceAsyncStub as Stub

REPLICAS = {"user_svc": 2}
FRESH_SECONDS = 1.0
HEARTBEAT_SECONDS = 0.25
# A read that began this long after a write was acknowledged (so committed) must show it, on any
# replica (user_svc/cache.py, docs/architecture.md "Profile cache and change feed"; one host, so
# no clock skew to add).
BOUND_SECONDS = FRESH_SECONDS

# Test 1: ACCOUNTS x ROUNDS x (1 + BURST + PACED) reads. Each round writes once, reads the writer
# once, reads the other replica BURST times back to back (the race with the invalidation), then
# PACED times spread until SPREAD_SECONDS after the ack: without reads past the bound, a replica
# that never invalidated anything could not fail the test.
ACCOUNTS = 8
ROUNDS = 15
BURST = 45
PACED = 40
SPREAD_SECONDS = BOUND_SECONDS + 0.3
# Every USERNAME_EVERY-th read on the other replica is GetProfile by username.
USERNAME_EVERY = 4

AVATAR_ROUNDS = 20


@pytest.fixture(scope="module")
def own_mesh(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A private mesh on its own ports with two user_svc replicas."""
    state: Path = tmp_path_factory.mktemp("profile-cache")
    mesh = Mesh(
        database_url=database_url,
        ports=free_ports(REPLICAS),
        state_dir=state,
        extra_env={
            "MESHGRAM_ENV": "development",
            "AUTH_BCRYPT_ROUNDS": "4",
            # The session mesh delivers the shared database's mail, not this one.
            "AUTH_MAIL_SENDING": "false",
            # The defaults, pinned: BOUND_SECONDS relies on them.
            "USER_CACHE_FRESH_SECONDS": str(FRESH_SECONDS),
            "DATA_ACCESS_CHANGE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        },
        log_dir=state / "logs",
        replicas=REPLICAS,
    )
    mesh.start(timeout=90)
    yield mesh
    mesh.stop()


@pytest.fixture
async def replicas(own_mesh: Mesh) -> AsyncIterator[list[Stub]]:
    """A UserService stub on a native gRPC channel straight to each user_svc replica."""
    channels = [
        own_mesh.channel("user_svc", replica, as_workload="edge")
        for replica in range(REPLICAS["user_svc"])
    ]
    try:
        yield [user_pb2_grpc.UserServiceStub(channel) for channel in channels]
    finally:
        for channel in channels:
            await channel.close()


@pytest.fixture
async def metrics_http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the replicas' /metrics endpoints."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        yield http


@dataclass(frozen=True)
class Account:
    """A signed-up user: its username and access token."""

    username: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata that authenticates a call as this user."""
        return (("authorization", f"Bearer {self.token}"),)

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers that authenticate a REST call as this user."""
        return {"authorization": f"Bearer {self.token}"}


def sign_up(mesh: Mesh, count: int) -> list[Account]:
    """Register and log in `count` fresh users over REST through the edge."""
    accounts = []
    with httpx.Client(base_url=f"http://{mesh.edge_address}", timeout=30, trust_env=False) as http:
        for _ in range(count):
            user, tokens = rest_sign_in(http)
            accounts.append(Account(user.username.lower(), tokens["accessToken"]))
    return accounts


async def scrape(http: httpx.AsyncClient, mesh: Mesh, replica: int) -> dict[str, float]:
    """One user_svc replica's metric samples, keyed `name` or `name{label="value",...}`."""
    reply = await http.get(f"http://127.0.0.1:{mesh.ports.metrics('user_svc', replica)}/metrics")
    reply.raise_for_status()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            labels = ",".join(f'{name}="{value}"' for name, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@dataclass(frozen=True)
class Lookups:
    """A replica's profile cache lookups by outcome."""

    hit: float
    miss: float
    bypassed: float

    @property
    def total(self) -> float:
        """Lookups of any outcome."""
        return self.hit + self.miss + self.bypassed

    def __sub__(self, earlier: Lookups) -> Lookups:
        """The lookups made since `earlier` was read."""
        return Lookups(
            self.hit - earlier.hit, self.miss - earlier.miss, self.bypassed - earlier.bypassed
        )


async def lookups(http: httpx.AsyncClient, mesh: Mesh, replica: int) -> Lookups:
    """The lookup counters of one replica (0 when it exports none, as without a cache)."""
    samples = await scrape(http, mesh, replica)

    def count(outcome: str) -> float:
        """One outcome's counter."""
        return samples.get(f'meshgram_profile_cache_lookups_total{{outcome="{outcome}"}}', 0.0)

    return Lookups(count("hit"), count("miss"), count("bypassed"))


async def all_lookups(http: httpx.AsyncClient, mesh: Mesh) -> list[Lookups]:
    """The lookup counters of every user_svc replica, in replica order."""
    return [await lookups(http, mesh, replica) for replica in range(REPLICAS["user_svc"])]


async def my_profile(stub: Stub, account: Account) -> user_pb2.Profile:
    """GetMyProfile as account on one replica."""
    reply = await stub.GetMyProfile(user_pb2.GetMyProfileRequest(), metadata=account.metadata)
    return reply.profile


async def profile_by_username(stub: Stub, account: Account) -> user_pb2.Profile:
    """GetProfile of account's own username, as account, on one replica."""
    reply = await stub.GetProfile(
        user_pb2.GetProfileRequest(username=account.username), metadata=account.metadata
    )
    return reply.profile


@dataclass
class Tally:
    """What the readers of the acceptance test saw, over every account and round."""

    reads: int = 0
    reads_past_bound: int = 0
    """Reads on the other replica that began more than BOUND_SECONDS after their write's ack."""
    own_violations: list[str] = field(default_factory=list)
    stale_within: int = 0
    stale_past: list[str] = field(default_factory=list)
    oldest_stale: float = 0.0
    """Seconds after its write's ack that the latest stale read began."""
    first_fresh: int = 0
    """Rounds whose first read on the other replica already showed the write."""
    slowest_visible: float = 0.0
    """In the other rounds, most seconds from an ack to the end of the first read showing it."""
    never_visible: int = 0
    """Rounds in which the other replica never showed the write (each one also fails)."""


async def write_and_read(account: Account, offset: int, stubs: list[Stub], tally: Tally) -> None:
    """Run ROUNDS rounds for one account: write on one replica, read there and on the other."""
    for round_no in range(ROUNDS):
        writer_no = (offset + round_no) % 2
        writer, other = stubs[writer_no], stubs[1 - writer_no]
        bio = f"round {round_no} on replica {writer_no}: {uuid.uuid4().hex}"
        await writer.UpdateMyProfile(
            user_pb2.UpdateMyProfileRequest(
                profile=user_pb2.Profile(bio=bio), update_mask=FieldMask(paths=["bio"])
            ),
            metadata=account.metadata,
        )
        acked = time.monotonic()
        own = await my_profile(writer, account)
        tally.reads += 1
        if own.bio != bio:
            tally.own_violations.append(
                f"{account.username} round {round_no}: replica {writer_no} wrote {bio!r}, "
                f"then read {own.bio!r}"
            )
        visible_after: float | None = None
        first_stale = False
        for read_no in range(BURST + PACED):
            if read_no >= BURST:
                due = acked + SPREAD_SECONDS * (read_no - BURST + 1) / PACED
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            started = time.monotonic()
            if read_no % USERNAME_EVERY == USERNAME_EVERY - 1:
                seen = await profile_by_username(other, account)
            else:
                seen = await my_profile(other, account)
            tally.reads += 1
            age = started - acked
            if age > BOUND_SECONDS:
                tally.reads_past_bound += 1
            if seen.bio == bio:
                if visible_after is None:
                    visible_after = time.monotonic() - acked
                continue
            first_stale = first_stale or read_no == 0
            tally.oldest_stale = max(tally.oldest_stale, age)
            if age <= BOUND_SECONDS:
                tally.stale_within += 1
            else:
                tally.stale_past.append(
                    f"{account.username} round {round_no}: replica {1 - writer_no} read "
                    f"{seen.bio!r} {age:.3f} s after replica {writer_no} acknowledged {bio!r}"
                )
        if visible_after is None:
            tally.never_visible += 1
        elif first_stale:
            tally.slowest_visible = max(tally.slowest_visible, visible_after)
        else:
            tally.first_fresh += 1


async def test_every_update_is_seen_by_the_other_replica_within_the_bound(
    own_mesh: Mesh, replicas: list[Stub], metrics_http: httpx.AsyncClient
) -> None:
    accounts = sign_up(own_mesh, ACCOUNTS)
    # Every replica holds every profile before the first write, so staleness could show.
    for account in accounts:
        for stub in replicas:
            await my_profile(stub, account)
    before = await all_lookups(metrics_http, own_mesh)
    tally = Tally()
    began = time.monotonic()
    await asyncio.gather(
        *(write_and_read(account, i, replicas, tally) for i, account in enumerate(accounts))
    )
    took = time.monotonic() - began
    deltas = [
        after - earlier
        for after, earlier in zip(await all_lookups(metrics_http, own_mesh), before, strict=True)
    ]
    print(
        f"\n{tally.reads} reads in {took:.1f} s ({tally.reads_past_bound} of them past the "
        f"{BOUND_SECONDS} s bound); read-your-own-writes violations: "
        f"{len(tally.own_violations)}; stale reads: {tally.stale_within} within the bound, "
        f"{len(tally.stale_past)} past it (the latest began {tally.oldest_stale * 1000:.1f} ms "
        f"after its ack); the other replica's first read showed the write in "
        f"{tally.first_fresh} of {ACCOUNTS * ROUNDS} rounds, in the others it took up to "
        f"{tally.slowest_visible * 1000:.1f} ms"
    )
    for replica, delta in enumerate(deltas):
        print(
            f"user_svc replica {replica}: {delta.hit:.0f} hits, {delta.miss:.0f} misses, "
            f"{delta.bypassed:.0f} bypassed"
        )
    assert tally.reads >= 10_000
    assert tally.reads_past_bound >= ACCOUNTS * ROUNDS
    assert tally.own_violations == []
    assert tally.stale_past == []
    assert tally.never_visible == 0
    # The cache did serve: with it off (USER_CACHE_ENABLED=false) there are no lookups at all.
    for replica, delta in enumerate(deltas):
        assert delta.total > 0, f"replica {replica} counted no cache lookups"
        assert delta.hit >= 0.5 * delta.total, f"replica {replica}: {delta}"


async def until_avatar(stub: Stub, account: Account, image_id: str, acked: float) -> float:
    """Read account's profile on one replica until it shows image_id as the avatar (or the
    bound has long passed); return the seconds from acked to the read that showed it."""
    while time.monotonic() < acked + 2 * BOUND_SECONDS:
        if (await my_profile(stub, account)).avatar_image_id == image_id:
            break
        await asyncio.sleep(0.005)
    return time.monotonic() - acked


async def test_an_avatar_set_through_storage_is_seen_by_both_replicas_within_the_bound(
    own_mesh: Mesh, replicas: list[Stub], metrics_http: httpx.AsyncClient
) -> None:
    (account,) = sign_up(own_mesh, 1)
    before = await all_lookups(metrics_http, own_mesh)
    missed: list[str] = []
    late: list[str] = []
    async with httpx.AsyncClient(
        base_url=f"http://{own_mesh.edge_address}", timeout=30, trust_env=False
    ) as http:
        for attempt in range(AVATAR_ROUNDS):
            # Warm both caches: the second read of each is served from the cache.
            for stub in replicas:
                for _ in range(2):
                    await my_profile(stub, account)
            uploaded = await http.post(
                "/v1/images",
                content=png_bytes(16 + attempt, 12),
                headers={**account.headers, "content-type": "image/png"},
            )
            assert uploaded.status_code == 200, uploaded.text
            image_id = uploaded.json()["image"]["id"]
            set_avatar = await http.post(
                "/v1/profiles/me:setAvatar", json={"imageId": image_id}, headers=account.headers
            )
            assert set_avatar.status_code == 200, set_avatar.text
            acked = time.monotonic()
            seen = await asyncio.gather(*(my_profile(stub, account) for stub in replicas))
            for replica, profile in enumerate(seen):
                if profile.avatar_image_id == image_id:
                    continue
                delay = await until_avatar(replicas[replica], account, image_id, acked)
                report = (
                    f"attempt {attempt}: replica {replica} first showed avatar "
                    f"{profile.avatar_image_id!r}, {image_id!r} after {delay * 1000:.1f} ms"
                )
                (late if delay > BOUND_SECONDS else missed).append(report)
    deltas = [
        after - earlier
        for after, earlier in zip(await all_lookups(metrics_http, own_mesh), before, strict=True)
    ]
    print(
        f"\n{AVATAR_ROUNDS} avatars set; first reads still showing the old one: "
        f"{len(missed) + len(late)}, {len(late)} of them past the bound"
    )
    for report in missed + late:
        print(report)
    # Never past the documented bound, whatever the race below does.
    assert late == []
    # The caches held the old avatar when it changed: each warm-up's second read was a hit.
    for replica, delta in enumerate(deltas):
        assert delta.hit >= AVATAR_ROUNDS, f"replica {replica}: {delta}"
    # `missed` (a first read right behind the acknowledgement that still shows the old avatar)
    # is within the promise: the invalidation leaves data_access before the acknowledgement,
    # but under load the replica may serve the next read before applying it (docs/architecture.md).


async def stored_profile(mesh: Mesh, account_id: str) -> dataaccess_pb2.ProfileRecord:
    """The profile as data_access reads it from the database, past every cache."""
    metadata = mesh.caller_metadata("user_svc")
    async with mesh.channel("data_access", as_workload="user_svc") as channel:
        store = dataaccess_pb2_grpc.ProfileStoreServiceStub(channel)
        reply = await store.GetProfile(
            dataaccess_pb2.GetProfileRequest(account_id=account_id), metadata=metadata
        )
    return reply.profile


async def test_twenty_concurrent_updates_leave_every_replica_with_the_last_one(
    own_mesh: Mesh, replicas: list[Stub]
) -> None:
    (account,) = sign_up(own_mesh, 1)
    for stub in replicas:  # both caches hold the profile before the race
        await my_profile(stub, account)
        await my_profile(stub, account)

    async def update(index: int) -> user_pb2.Profile:
        """One of the racing updates, on alternating replicas, with and without reads."""
        stub = replicas[index % len(replicas)]
        reply = await stub.UpdateMyProfile(
            user_pb2.UpdateMyProfileRequest(
                profile=user_pb2.Profile(bio=f"racer {index}"), update_mask=FieldMask(paths=["bio"])
            ),
            metadata=account.metadata,
        )
        await my_profile(stub, account)
        return reply.profile

    results = await asyncio.gather(*(update(index) for index in range(20)))
    # Writers of one profile queue for its row: the last to write shows the newest update_time,
    # and what it wrote is what the database holds.
    last = max(results, key=lambda p: p.update_time.ToNanoseconds())
    stored = await stored_profile(own_mesh, last.account_id)
    assert stored.bio == last.bio
    await asyncio.sleep(BOUND_SECONDS)
    seen = [(await my_profile(stub, account)).bio for stub in replicas for _ in range(3)]
    by_name = [(await profile_by_username(stub, account)).bio for stub in replicas]
    assert set(seen + by_name) == {last.bio}, (last.bio, seen, by_name)


async def outcome(stub: Stub, account: Account) -> str:
    """GetMyProfile on one replica: "OK" or the name of the status it failed with."""
    try:
        await my_profile(stub, account)
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "OK"


async def until_a_hit(
    replicas: list[Stub], replica: int, account: Account, http: httpx.AsyncClient, mesh: Mesh
) -> bool:
    """Read account's profile on one replica until its metrics count a new cache hit (at most
    5 s); return whether one was counted."""
    before = await lookups(http, mesh, replica)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        await my_profile(replicas[replica], account)
        if (await lookups(http, mesh, replica)).hit > before.hit:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_while_the_feed_is_down_reads_are_not_served_from_the_cache(
    own_mesh: Mesh, replicas: list[Stub], metrics_http: httpx.AsyncClient
) -> None:
    (account,) = sign_up(own_mesh, 1)
    stub = replicas[0]
    assert await until_a_hit(replicas, 0, account, metrics_http, own_mesh)

    await asyncio.to_thread(own_mesh.stop_service, "data_access")
    stopped = time.monotonic()
    # Whatever replica 0 answers now that data_access is gone can only come from its cache.
    outcomes: list[str] = []
    usable: list[float] = []
    while time.monotonic() < stopped + 2:
        outcomes.append(await outcome(stub, account))
        usable.append((await scrape(metrics_http, own_mesh, 0))["meshgram_profile_cache_usable"])
        if outcomes[-1] == "UNAVAILABLE" and usable[-1] == 0:
            break
        await asyncio.sleep(0.05)
    assert "OK" not in outcomes, f"served from the cache with data_access down: {outcomes}"
    assert set(outcomes) == {"UNAVAILABLE"}, outcomes
    assert usable[-1] == 0, usable

    await asyncio.to_thread(own_mesh.start_service, "data_access")
    restarted = time.monotonic()
    healing = [await outcome(stub, account)]
    while healing[-1] != "OK" and time.monotonic() < restarted + 15:
        await asyncio.sleep(0.2)
        healing.append(await outcome(stub, account))
    assert healing[-1] == "OK", f"reads still fail 15 s after the restart: {healing}"
    assert set(healing) <= {"UNAVAILABLE", "OK"}, healing
    readable = time.monotonic() - restarted
    assert await until_a_hit(replicas, 0, account, metrics_http, own_mesh)
    hitting = time.monotonic() - restarted
    assert (await scrape(metrics_http, own_mesh, 0))["meshgram_profile_cache_usable"] == 1
    print(
        f"\nreplica 0 with data_access stopped: {outcomes} (usable {usable}); after its restart: "
        f"reads succeed within {readable:.1f} s, hits again within {hitting:.1f} s"
    )
