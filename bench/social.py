"""The loads of the social scenarios: profile pages signed out and signed in, follows and
unfollows, and search over 100,000 seeded accounts, all through the edge.

Profile pages go over REST with h2load (a list of paths, cycled; with or without a bearer
token). Follow churn runs one h2load process per client, each with its own account's token and
its own target, one request in flight, alternating FollowProfile and UnfollowProfile (both
requests are the same bytes: a username in field 1), so every request changes the follow. Search
sends a different query each time, so it goes through bench/grpc_load.mjs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench import grpc_load, h2load
from meshgram.user.v1 import user_pb2
from tools import seed as seeding

SERVICE = "meshgram.user.v1.UserService"
SEARCH_POPULATION = 100_000
"""Seeded accounts the search scenario runs over."""
SEARCH_CLIENTS = 4
"""People searching at once in the target's scenario: each waits for its results to type on."""
SEARCH_DRAWS = 20_000
# Every seeded username starts with "seed_": a query of 1 to 3 letters that is a prefix of it
# ("s", "se", "see") matches all of them.
SEEDED_PREFIXES = frozenset(seeding.SEEDED_PREFIX[:length] for length in (1, 2, 3))
Load = Callable[[float], h2load.Run]


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC message frame."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def profile_pages(
    base: str, usernames: Sequence[str], order: Sequence[int], token: str | None, clients: int
) -> Load:
    """GET /v1/profiles/{username} over usernames in the given order, signed in when token is
    set, else signed out."""
    paths = [f"{base}/v1/profiles/{usernames[i]}" for i in order]
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return lambda seconds: h2load.run(
        paths, connections=clients, seconds=seconds, warmup=0, headers=headers, http1=True
    )


def follow_targets(count: int) -> list[str]:
    """count public seeded accounts among the most followed ones, one per client."""
    public = (i for i in range(SEARCH_POPULATION) if not seeding.is_private(i))
    return [seeding.seeded_username(next(public)) for _ in range(count)]


def follow_churn(base: str, pairs: Sequence[tuple[str, str]]) -> Load:
    """Each (access token, username) pair follows then unfollows its username again and again,
    one request in flight per pair, all pairs at once."""
    follow, unfollow = f"{base}/{SERVICE}/FollowProfile", f"{base}/{SERVICE}/UnfollowProfile"

    def one(pair: tuple[str, str], seconds: float) -> h2load.Run:
        """One client's alternating follows and unfollows."""
        token, username = pair
        body = user_pb2.FollowProfileRequest(username=username).SerializeToString()
        return h2load.run(
            [follow, unfollow],
            connections=1,
            seconds=seconds,
            warmup=0,
            headers={
                "authorization": f"Bearer {token}",
                "content-type": "application/grpc",
                "te": "trailers",
            },
            body=grpc_frame(body),
        )

    def load(seconds: float) -> h2load.Run:
        """All clients at once, their outcomes together."""
        with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
            runs = list(pool.map(one, pairs, [seconds] * len(pairs)))
        return h2load.Run(
            seconds=seconds,
            statuses=[status for run in runs for status in run.statuses],
            latencies_ms=[latency for run in runs for latency in run.latencies_ms],
        )

    return load


def follower_counts(base: str, token: str, usernames: Sequence[str]) -> dict[str, int]:
    """The follower count each profile shows (REST, signed in)."""
    counts = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for username in usernames:
            reply = client.get(
                f"/v1/profiles/{username}", headers={"authorization": f"Bearer {token}"}
            )
            reply.raise_for_status()
            counts[username] = int(reply.json()["profile"].get("followerCount", 0))
    return counts


def unfollow_all(base: str, pairs: Sequence[tuple[str, str]]) -> None:
    """Make every pair end unfollowed, whichever request its client sent last."""
    with httpx.Client(base_url=base, timeout=30) as client:
        for token, username in pairs:
            client.post(
                f"/v1/profiles/{username}:unfollow",
                json={},
                headers={"authorization": f"Bearer {token}"},
            ).raise_for_status()


def search_queries(
    population: int, draws: int, *, lengths: Sequence[int] = (1, 2, 3), seed: int = 11
) -> list[str]:
    """Search queries as people type them: the first 1, 2 or 3 letters (one of lengths) of the
    display name of a seeded account drawn at random, so a prefix comes as often as names start
    with it. Prefixes of "seed_" are left out: they match every seeded username, which no real
    population of handles does (see seeded_prefix_queries)."""
    rng = random.Random(seed)
    queries: list[str] = []
    while len(queries) < draws:
        name = seeding.display_name(rng.randrange(population)).lower()
        query = name[: rng.choice(lengths)]
        if query not in SEEDED_PREFIXES:
            queries.append(query)
    return queries


def seeded_prefix_queries(draws: int) -> list[str]:
    """The worst case: "s", "se" and "see" in turn, each matching all seeded usernames."""
    ordered = sorted(SEEDED_PREFIXES)
    return [ordered[i % len(ordered)] for i in range(draws)]


def search(base: str, token: str, queries: Sequence[str], clients: int) -> Load:
    """SearchProfiles (first page, default size) for each query in turn, signed in."""
    distinct = sorted(set(queries))
    index = {query: i for i, query in enumerate(distinct)}
    bodies = [user_pb2.SearchProfilesRequest(query=q).SerializeToString() for q in distinct]
    order = [index[query] for query in queries]
    connections = min(8, clients)
    return lambda seconds: grpc_load.run_requests(
        base,
        connections=connections,
        streams=max(1, clients // connections),
        seconds=seconds,
        warmup=0,
        path=f"/{SERVICE}/SearchProfiles",
        headers={"authorization": f"Bearer {token}"},
        bodies=bodies,
        order=order,
    )


def search_sample(base: str, token: str, query: str) -> tuple[int, list[str]]:
    """One search over REST: how many results the first page holds, and their display names."""
    with httpx.Client(base_url=base, timeout=30) as client:
        reply = client.get(
            "/v1/profiles:search",
            params={"query": query},
            headers={"authorization": f"Bearer {token}"},
        )
        reply.raise_for_status()
        found = reply.json().get("profiles", [])
    return len(found), [str(profile.get("displayName", "")) for profile in found]
