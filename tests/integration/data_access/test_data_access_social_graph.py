"""SocialGraphService, and the ProfileStoreService fields and renames that go with it, through
real stubs against the real database, called as user_svc calls them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from meshkit.grpc_errors import STATUS_DETAILS_KEY
from tests.helpers import AccountFactory, Metadata, error_info, failure_of

pytestmark = pytest.mark.integration

FOLLOWERS = pb.FOLLOW_LIST_KIND_FOLLOWERS
FOLLOWING = pb.FOLLOW_LIST_KIND_FOLLOWING
REQUESTS = pb.FOLLOW_LIST_KIND_REQUESTS
HOUR = 3600

NamedAccountFactory = Callable[[str], Awaitable[pb.AccountRecord]]
"""Creates an account with the given (lower-case) username and returns its record."""


@dataclass(frozen=True)
class Graph:
    """SocialGraphService and ProfileStoreService, called with user_svc's credentials."""

    stub: pb_grpc.SocialGraphServiceAsyncStub
    profiles: pb_grpc.ProfileStoreServiceAsyncStub
    metadata: Metadata

    async def follow(self, follower: str, account: str) -> pb.Relationship:
        """Follow (or ask to follow) account; the relationship afterwards."""
        response = await self.stub.Follow(
            pb.FollowRequest(follower_id=follower, account_id=account), metadata=self.metadata
        )
        return response.relationship

    async def unfollow(self, follower: str, account: str) -> pb.Relationship:
        """Stop following account (or withdraw the request); the relationship afterwards."""
        response = await self.stub.Unfollow(
            pb.UnfollowRequest(follower_id=follower, account_id=account), metadata=self.metadata
        )
        return response.relationship

    async def decide(self, account: str, requester: str, *, approve: bool) -> pb.Relationship:
        """Approve or deny requester's request to follow account; account's view afterwards."""
        response = await self.stub.DecideFollowRequest(
            pb.DecideFollowRequestRequest(
                account_id=account, requester_id=requester, approve=approve
            ),
            metadata=self.metadata,
        )
        return response.relationship

    async def remove_follower(self, account: str, follower: str) -> pb.Relationship:
        """Drop follower from account's followers; account's view afterwards."""
        response = await self.stub.RemoveFollower(
            pb.RemoveFollowerRequest(account_id=account, follower_id=follower),
            metadata=self.metadata,
        )
        return response.relationship

    async def block(self, blocker: str, account: str) -> pb.Relationship:
        """Make blocker block account; blocker's view afterwards."""
        response = await self.stub.Block(
            pb.BlockRequest(blocker_id=blocker, account_id=account), metadata=self.metadata
        )
        return response.relationship

    async def unblock(self, blocker: str, account: str) -> pb.Relationship:
        """Lift blocker's block of account; blocker's view afterwards."""
        response = await self.stub.Unblock(
            pb.UnblockRequest(blocker_id=blocker, account_id=account), metadata=self.metadata
        )
        return response.relationship

    async def relationship(self, viewer: str, account: str) -> pb.Relationship:
        """How viewer relates to account, as stored now."""
        response = await self.stub.GetRelationship(
            pb.GetRelationshipRequest(viewer_id=viewer, account_id=account),
            metadata=self.metadata,
        )
        return response.relationship

    async def page(
        self,
        account: str,
        kind: pb.FollowListKind.ValueType,
        *,
        viewer: str = "",
        page_size: int = 100,
        before: int = 0,
    ) -> pb.ListFollowsResponse:
        """One page of a follow list of account."""
        return await self.stub.ListFollows(
            pb.ListFollowsRequest(
                account_id=account,
                kind=kind,
                viewer_id=viewer,
                page_size=page_size,
                before_position=before,
            ),
            metadata=self.metadata,
        )

    async def listed(
        self, account: str, kind: pb.FollowListKind.ValueType, *, viewer: str = ""
    ) -> list[str]:
        """Account ids of a whole follow list, newest first, read three entries a page."""
        ids: list[str] = []
        before = 0
        while True:
            page = await self.page(account, kind, viewer=viewer, page_size=3, before=before)
            ids.extend(entry.profile.account_id for entry in page.entries)
            if not page.more:
                return ids
            before = page.entries[-1].position

    async def blocks(
        self, account: str, *, page_size: int, before: int = 0
    ) -> pb.ListBlocksResponse:
        """One page of the accounts account blocks."""
        return await self.stub.ListBlocks(
            pb.ListBlocksRequest(account_id=account, page_size=page_size, before_position=before),
            metadata=self.metadata,
        )

    async def profile(self, account: str) -> pb.ProfileRecord:
        """The stored profile of an account id."""
        response = await self.profiles.GetProfile(
            pb.GetProfileRequest(account_id=account), metadata=self.metadata
        )
        return response.profile

    async def counts(self, account: str) -> tuple[int, int]:
        """(follower_count, following_count) of an account's stored profile."""
        profile = await self.profile(account)
        return profile.follower_count, profile.following_count

    async def update(self, account: str, **fields: str | bool) -> pb.ProfileRecord:
        """UpdateProfile with the fields passed set; the profile afterwards."""
        response = await self.profiles.UpdateProfile(
            pb.UpdateProfileRequest(account_id=account, **fields),  # type: ignore[arg-type]
            metadata=self.metadata,
        )
        return response.profile

    async def rename(self, account: str, username: str, *, cooldown: int) -> pb.ProfileRecord:
        """ChangeUsername with a cooldown in seconds; the profile afterwards."""
        response = await self.profiles.ChangeUsername(
            pb.ChangeUsernameRequest(
                account_id=account, username=username, cooldown=Duration(seconds=cooldown)
            ),
            metadata=self.metadata,
        )
        return response.profile

    async def search(
        self,
        prefix: str,
        *,
        viewer: str = "",
        page_size: int = 100,
        after: pb.SearchPosition | None = None,
    ) -> pb.SearchProfilesResponse:
        """One page of SearchProfiles."""
        return await self.stub.SearchProfiles(
            pb.SearchProfilesRequest(
                prefix=prefix, viewer_id=viewer, page_size=page_size, after=after
            ),
            metadata=self.metadata,
        )


@pytest.fixture(scope="session")
def social_graph(data_access_channel: grpc.aio.Channel) -> pb_grpc.SocialGraphServiceAsyncStub:
    """SocialGraphService stub."""
    return pb_grpc.SocialGraphServiceStub(data_access_channel)


@pytest.fixture(scope="session")
def graph(
    social_graph: pb_grpc.SocialGraphServiceAsyncStub,
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
) -> Graph:
    """The social graph and profiles as user_svc reaches them."""
    return Graph(social_graph, profile_store, as_user)


@pytest.fixture(scope="session")
def named_account(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> NamedAccountFactory:
    """Factory of accounts with a chosen username (and a unique email)."""

    async def create(username: str) -> pb.AccountRecord:
        unique = uuid.uuid4().hex
        response = await account_store.CreateAccount(
            pb.CreateAccountRequest(
                email=f"{unique}@example.com", username=username, password_hash=f"$2b$04${unique}"
            ),
            metadata=as_auth,
        )
        return response.account

    return create


async def accounts(new_account: AccountFactory, count: int) -> list[str]:
    """Ids of count new accounts, created one after another."""
    return [(await new_account()).id for _ in range(count)]


def stem() -> str:
    """A username prefix no other test uses (letters only, so "_" and "." can follow it)."""
    return "q" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:11])


def retry_delay_seconds(error: grpc.aio.AioRpcError) -> float:
    """The RetryInfo delay a failed call carries, in seconds; AssertionError when absent."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    retry = error_details_pb2.RetryInfo()
                    detail.Unpack(retry)
                    return float(retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9)
    raise AssertionError(f"no RetryInfo in {error!r}")


def flags(relation: pb.Relationship) -> set[str]:
    """The names of the relationship's flags that are set."""
    return {field.name for field, value in relation.ListFields() if value}


# Follow, unfollow and counts.


async def test_following_a_public_account_counts_once_however_often_it_is_repeated(
    graph: Graph, new_account: AccountFactory
) -> None:
    fan, star = await accounts(new_account, 2)

    first = await graph.follow(fan, star)
    again = await graph.follow(fan, star)

    assert flags(first) == flags(again) == {"following"}
    assert await graph.counts(star) == (1, 0)
    assert await graph.counts(fan) == (0, 1)
    assert await graph.listed(star, FOLLOWERS) == [fan]
    assert await graph.listed(fan, FOLLOWING) == [star]
    assert flags(await graph.relationship(star, fan)) == {"followed_by"}


async def test_unfollowing_twice_or_without_following_changes_nothing_more(
    graph: Graph, new_account: AccountFactory
) -> None:
    fan, star, bystander = await accounts(new_account, 3)
    await graph.follow(fan, star)
    await graph.follow(bystander, star)

    first = await graph.unfollow(fan, star)
    again = await graph.unfollow(fan, star)
    never = await graph.unfollow(star, fan)

    assert flags(first) == flags(again) == set()
    assert flags(never) == set()
    assert await graph.counts(star) == (1, 0)
    assert await graph.counts(fan) == (0, 0)
    assert await graph.listed(star, FOLLOWERS) == [bystander]


async def test_following_a_private_account_asks_and_changes_no_count(
    graph: Graph, new_account: AccountFactory
) -> None:
    fan, star = await accounts(new_account, 2)
    await graph.update(star, private=True)

    asked = await graph.follow(fan, star)
    asked_again = await graph.follow(fan, star)

    assert flags(asked) == flags(asked_again) == {"requested"}
    assert await graph.counts(star) == (0, 0)
    assert await graph.counts(fan) == (0, 0)
    assert await graph.listed(star, REQUESTS) == [fan]
    assert await graph.listed(star, FOLLOWERS) == []
    assert flags(await graph.relationship(star, fan)) == {"requested_by"}


async def test_withdrawing_a_follow_request_removes_it(
    graph: Graph, new_account: AccountFactory
) -> None:
    fan, star = await accounts(new_account, 2)
    await graph.update(star, private=True)
    await graph.follow(fan, star)

    withdrawn = await graph.unfollow(fan, star)

    assert flags(withdrawn) == set()
    assert await graph.listed(star, REQUESTS) == []
    assert await graph.counts(star) == (0, 0)


async def test_an_approved_requester_follows_and_is_the_newest_follower(
    graph: Graph, new_account: AccountFactory
) -> None:
    star, early, first_asker, second_asker = await accounts(new_account, 4)
    await graph.follow(early, star)
    await graph.update(star, private=True)
    await graph.follow(first_asker, star)
    await graph.follow(second_asker, star)

    assert await graph.listed(star, REQUESTS) == [second_asker, first_asker]
    await graph.decide(star, second_asker, approve=True)
    approved = await graph.decide(star, first_asker, approve=True)

    assert flags(approved) == {"followed_by"}
    assert flags(await graph.relationship(first_asker, star)) == {"following"}
    assert await graph.counts(star) == (3, 0)
    assert await graph.counts(first_asker) == (0, 1)
    # Approved last, so newest, although it asked first.
    assert await graph.listed(star, FOLLOWERS) == [first_asker, second_asker, early]
    assert await graph.listed(star, REQUESTS) == []


async def test_a_denied_request_is_gone_and_may_be_made_again(
    graph: Graph, new_account: AccountFactory
) -> None:
    star, asker = await accounts(new_account, 2)
    await graph.update(star, private=True)
    await graph.follow(asker, star)

    denied = await graph.decide(star, asker, approve=False)

    assert flags(denied) == set()
    assert flags(await graph.relationship(asker, star)) == set()
    assert await graph.listed(star, REQUESTS) == []
    assert await graph.counts(star) == (0, 0)
    assert flags(await graph.follow(asker, star)) == {"requested"}


async def test_deciding_a_request_that_does_not_exist_is_not_found(
    graph: Graph, new_account: AccountFactory
) -> None:
    star, asker, follower = await accounts(new_account, 3)
    await graph.follow(follower, star)
    await graph.update(star, private=True)
    await graph.follow(asker, star)
    await graph.decide(star, asker, approve=False)

    cases = [
        graph.decide(star, asker, approve=True),  # denied already
        graph.decide(star, asker, approve=False),
        graph.decide(star, follower, approve=True),  # follows, asks nothing
        graph.decide(asker, star, approve=True),  # the other direction
    ]
    for case in cases:
        failure = await failure_of(case)
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.NOT_FOUND,
            "FOLLOW_REQUEST_NOT_FOUND",
        )
    assert await graph.counts(star) == (1, 0)


async def test_removing_a_follower_ends_the_follow_and_its_counts(
    graph: Graph, new_account: AccountFactory
) -> None:
    star, fan, other = await accounts(new_account, 3)
    await graph.follow(fan, star)
    await graph.follow(other, star)
    await graph.follow(star, fan)

    removed = await graph.remove_follower(star, fan)
    again = await graph.remove_follower(star, fan)

    assert flags(removed) == flags(again) == {"following"}
    assert await graph.counts(star) == (1, 1)
    assert await graph.counts(fan) == (1, 0)
    assert await graph.listed(star, FOLLOWERS) == [other]


async def test_following_oneself_is_invalid(graph: Graph, new_account: AccountFactory) -> None:
    [me] = await accounts(new_account, 1)

    for call in (graph.follow(me, me), graph.block(me, me)):
        failure = await failure_of(call)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.fields == ["account_id"]
    assert await graph.counts(me) == (0, 0)


async def test_unknown_or_malformed_accounts_are_not_found(
    graph: Graph, new_account: AccountFactory
) -> None:
    [me] = await accounts(new_account, 1)
    unknown = str(uuid.uuid4())

    cases = [
        graph.follow(me, unknown),
        graph.follow(unknown, me),
        graph.follow(me, "not-an-id"),
        graph.follow("", me),
        graph.block(me, unknown),
        graph.block(me, "not-an-id"),
        graph.decide(me, "not-an-id", approve=True),
    ]
    for case in cases:
        failure = await failure_of(case)
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "PROFILE_NOT_FOUND")
    assert await graph.counts(me) == (0, 0)
    assert (await graph.blocks(me, page_size=10)).entries == []


# Concurrency.


async def test_concurrent_identical_follows_count_once(
    graph: Graph, new_account: AccountFactory
) -> None:
    fan, star = await accounts(new_account, 2)

    answers = await asyncio.gather(*(graph.follow(fan, star) for _ in range(20)))

    assert all(flags(answer) == {"following"} for answer in answers)
    assert await graph.counts(star) == (1, 0)
    assert await graph.counts(fan) == (0, 1)
    assert await graph.listed(star, FOLLOWERS) == [fan]


async def test_concurrent_follows_of_one_account_by_many_all_count(
    graph: Graph, new_account: AccountFactory
) -> None:
    [star] = await accounts(new_account, 1)
    fans = await accounts(new_account, 20)

    await asyncio.gather(*(graph.follow(fan, star) for fan in fans))

    assert await graph.counts(star) == (20, 0)
    assert sorted(await graph.listed(star, FOLLOWERS)) == sorted(fans)
    assert [await graph.counts(fan) for fan in fans] == [(0, 1)] * 20


async def test_crossing_follows_and_unfollows_neither_deadlock_nor_miscount(
    graph: Graph, new_account: AccountFactory
) -> None:
    ann, bob = await accounts(new_account, 2)
    calls: list[Awaitable[pb.Relationship]] = []
    for round_ in range(20):
        calls += [graph.follow(ann, bob), graph.follow(bob, ann)]
        if round_ % 3 == 0:
            calls += [graph.unfollow(ann, bob), graph.unfollow(bob, ann)]
        if round_ % 5 == 0:
            calls += [graph.remove_follower(ann, bob)]

    await asyncio.wait_for(asyncio.gather(*calls), timeout=60)

    for account in (ann, bob):
        followers, following = await graph.counts(account)
        assert followers == len(await graph.listed(account, FOLLOWERS))
        assert following == len(await graph.listed(account, FOLLOWING))
    relation = await graph.relationship(ann, bob)
    assert await graph.counts(ann) == (int(relation.followed_by), int(relation.following))
    assert await graph.counts(bob) == (int(relation.following), int(relation.followed_by))


async def test_requests_withdrawn_while_the_account_goes_public_neither_fail_nor_miscount(
    graph: Graph, new_account: AccountFactory
) -> None:
    for _ in range(5):
        [star] = await accounts(new_account, 1)
        await graph.update(star, private=True)
        askers = await accounts(new_account, 15)
        for asker in askers:
            await graph.follow(asker, star)
        calls: list[Awaitable[object]] = [graph.unfollow(asker, star) for asker in askers]
        calls.insert(len(calls) // 2, graph.update(star, private=False))

        outcomes = await asyncio.gather(*calls, return_exceptions=True)

        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        profile = await graph.profile(star)
        assert not profile.private
        assert profile.follower_count == len(await graph.listed(star, FOLLOWERS))
        assert await graph.listed(star, REQUESTS) == []


# Blocks.


async def test_blocking_ends_follows_both_ways_and_their_counts(
    graph: Graph, new_account: AccountFactory
) -> None:
    ann, bob, carol = await accounts(new_account, 3)
    await graph.follow(ann, bob)
    await graph.follow(bob, ann)
    await graph.follow(carol, ann)
    await graph.follow(ann, carol)

    blocked = await graph.block(ann, bob)
    again = await graph.block(ann, bob)

    assert flags(blocked) == flags(again) == {"blocking"}
    assert flags(await graph.relationship(bob, ann)) == {"blocked_by"}
    assert await graph.counts(ann) == (1, 1)
    assert await graph.counts(bob) == (0, 0)
    assert await graph.listed(ann, FOLLOWERS) == [carol]
    assert await graph.listed(ann, FOLLOWING) == [carol]
    assert await graph.listed(bob, FOLLOWERS) == []


async def test_blocking_removes_pending_requests_both_ways(
    graph: Graph, new_account: AccountFactory
) -> None:
    ann, bob = await accounts(new_account, 2)
    await graph.update(ann, private=True)
    await graph.update(bob, private=True)
    await graph.follow(ann, bob)
    await graph.follow(bob, ann)

    await graph.block(bob, ann)
    await graph.unblock(bob, ann)

    assert flags(await graph.relationship(ann, bob)) == set()
    assert await graph.listed(ann, REQUESTS) == []
    assert await graph.listed(bob, REQUESTS) == []
    assert await graph.counts(ann) == (0, 0)
    assert await graph.counts(bob) == (0, 0)


async def test_a_block_stops_follows_from_either_side(
    graph: Graph, new_account: AccountFactory
) -> None:
    ann, bob = await accounts(new_account, 2)
    await graph.block(ann, bob)

    by_the_blocked = await failure_of(graph.follow(bob, ann))
    by_the_blocker = await failure_of(graph.follow(ann, bob))

    assert (by_the_blocked.code, by_the_blocked.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "PROFILE_NOT_FOUND",
    )
    assert (by_the_blocker.code, by_the_blocker.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROFILE_BLOCKED",
    )
    assert await graph.counts(ann) == (0, 0)
    assert await graph.counts(bob) == (0, 0)


async def test_unblocking_is_idempotent_and_allows_following_again(
    graph: Graph, new_account: AccountFactory
) -> None:
    ann, bob = await accounts(new_account, 2)
    await graph.block(ann, bob)

    lifted = await graph.unblock(ann, bob)
    again = await graph.unblock(ann, bob)
    never_blocked = await graph.unblock(bob, ann)

    assert flags(lifted) == flags(again) == flags(never_blocked) == set()
    assert (await graph.blocks(ann, page_size=10)).entries == []
    assert flags(await graph.follow(bob, ann)) == {"following"}
    assert flags(await graph.follow(ann, bob)) == {"following", "followed_by"}
    assert await graph.counts(ann) == (1, 1)


async def test_blocks_are_listed_newest_first_a_page_at_a_time(
    graph: Graph, new_account: AccountFactory
) -> None:
    [blocker] = await accounts(new_account, 1)
    blocked = await accounts(new_account, 3)
    for account in blocked:
        await graph.block(blocker, account)
    await graph.block(blocker, blocked[0])  # repeated: stays where it was

    first = await graph.blocks(blocker, page_size=2)
    rest = await graph.blocks(blocker, page_size=2, before=first.entries[-1].position)

    assert [e.profile.account_id for e in first.entries] == [blocked[2], blocked[1]]
    assert first.more
    assert [e.profile.account_id for e in rest.entries] == [blocked[0]]
    assert not rest.more
    names = [(await graph.profile(account)).username for account in reversed(blocked)]
    assert [e.profile.username for e in [*first.entries, *rest.entries]] == names


# Follow lists.


async def test_follow_lists_page_newest_first_and_stay_stable_as_follows_arrive(
    graph: Graph, new_account: AccountFactory
) -> None:
    [star] = await accounts(new_account, 1)
    fans = await accounts(new_account, 5)
    for fan in fans:
        await graph.follow(fan, star)

    first = await graph.page(star, FOLLOWERS, page_size=2)
    for late in await accounts(new_account, 2):
        await graph.follow(late, star)
    second = await graph.page(star, FOLLOWERS, page_size=2, before=first.entries[-1].position)
    third = await graph.page(star, FOLLOWERS, page_size=2, before=second.entries[-1].position)

    pages = [first, second, third]
    assert [[e.profile.account_id for e in page.entries] for page in pages] == [
        [fans[4], fans[3]],
        [fans[2], fans[1]],
        [fans[0]],
    ]
    assert [page.more for page in pages] == [True, True, False]
    assert (await graph.counts(star))[0] == 7


async def test_follow_lists_leave_out_accounts_blocking_or_blocked_by_the_viewer(
    graph: Graph, new_account: AccountFactory
) -> None:
    star, viewer, blocks_viewer, blocked_by_viewer, plain = await accounts(new_account, 5)
    for fan in (blocks_viewer, blocked_by_viewer, plain):
        await graph.follow(fan, star)
        await graph.follow(star, fan)
    await graph.block(blocks_viewer, viewer)
    await graph.block(viewer, blocked_by_viewer)

    everyone = [plain, blocked_by_viewer, blocks_viewer]
    assert await graph.listed(star, FOLLOWERS) == everyone
    assert await graph.listed(star, FOLLOWERS, viewer=viewer) == [plain]
    assert await graph.listed(star, FOLLOWING, viewer=viewer) == [plain]
    assert await graph.listed(star, FOLLOWING, viewer=star) == everyone


async def test_follow_lists_refuse_a_missing_kind_and_out_of_range_page_sizes(
    graph: Graph, new_account: AccountFactory
) -> None:
    [me] = await accounts(new_account, 1)

    no_kind = await failure_of(graph.page(me, pb.FOLLOW_LIST_KIND_UNSPECIFIED))
    empty_page = await failure_of(graph.page(me, FOLLOWERS, page_size=0))
    huge_page = await failure_of(graph.page(me, FOLLOWERS, page_size=1001))
    huge_blocks = await failure_of(graph.blocks(me, page_size=1001))

    assert (no_kind.code, no_kind.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["kind"])
    for failure in (empty_page, huge_page, huge_blocks):
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_size"])
    assert (await graph.page(me, FOLLOWERS, page_size=1000)).entries == []


# Profile fields.


async def test_website_pronouns_and_privacy_are_stored_and_read_back(
    graph: Graph, new_account: AccountFactory
) -> None:
    [me] = await accounts(new_account, 1)

    updated = await graph.update(
        me, website="https://example.com/ann", pronouns="she/her", private=True
    )
    renamed = await graph.update(me, display_name="Ann")

    assert (updated.website, updated.pronouns, updated.private) == (
        "https://example.com/ann",
        "she/her",
        True,
    )
    assert (renamed.website, renamed.pronouns, renamed.private) == (
        "https://example.com/ann",
        "she/her",
        True,
    )
    assert await graph.profile(me) == renamed
    cleared = await graph.update(me, website="", pronouns="", private=False)
    assert (cleared.website, cleared.pronouns, cleared.private) == ("", "", False)
    assert cleared.display_name == "Ann"


async def test_going_public_approves_pending_requests_with_their_counts(
    graph: Graph, new_account: AccountFactory
) -> None:
    star, first, second, follower = await accounts(new_account, 4)
    await graph.follow(follower, star)
    await graph.update(star, private=True)
    await graph.follow(first, star)
    await graph.follow(second, star)

    public = await graph.update(star, private=False)

    assert (public.private, public.follower_count, public.following_count) == (False, 3, 0)
    assert await graph.counts(first) == (0, 1)
    assert await graph.counts(second) == (0, 1)
    assert await graph.listed(star, REQUESTS) == []
    assert sorted(await graph.listed(star, FOLLOWERS)) == sorted([first, second, follower])
    assert flags(await graph.relationship(first, star)) == {"following"}


async def test_staying_private_approves_nothing(graph: Graph, new_account: AccountFactory) -> None:
    star, asker = await accounts(new_account, 2)
    await graph.update(star, private=True)
    await graph.follow(asker, star)

    await graph.update(star, private=True, display_name="Still private")

    assert await graph.listed(star, REQUESTS) == [asker]
    assert await graph.counts(star) == (0, 0)


# Username changes.


async def test_a_renamed_account_is_found_by_its_new_name_only(
    graph: Graph,
    new_account: AccountFactory,
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
) -> None:
    account = await new_account()
    new_name = f"{stem()}_renamed"

    renamed = await graph.rename(account.id, new_name, cooldown=HOUR)

    assert renamed.username == new_name
    found = await profile_store.GetProfile(
        pb.GetProfileRequest(username=new_name), metadata=as_user
    )
    assert found.profile.account_id == account.id
    old = await failure_of(
        profile_store.GetProfile(pb.GetProfileRequest(username=account.username), metadata=as_user)
    )
    assert (old.code, old.reason) == (grpc.StatusCode.NOT_FOUND, "PROFILE_NOT_FOUND")
    # The old name is free for anyone now.
    other = await new_account()
    taken_over = await graph.rename(other.id, account.username, cooldown=HOUR)
    assert taken_over.username == account.username


async def test_taking_another_accounts_username_is_refused(
    graph: Graph, new_account: AccountFactory
) -> None:
    mine, theirs = await new_account(), await new_account()

    taken = await failure_of(graph.rename(mine.id, theirs.username, cooldown=HOUR))

    assert (taken.code, taken.reason) == (grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN")
    assert (await graph.profile(mine.id)).username == mine.username
    # The refused attempt changed nothing, so it started no cooldown.
    free = f"{stem()}_free"
    assert (await graph.rename(mine.id, free, cooldown=HOUR)).username == free


async def test_a_second_rename_within_the_cooldown_says_when_to_retry(
    graph: Graph, new_account: AccountFactory
) -> None:
    account = await new_account()
    first, second = f"{stem()}_first", f"{stem()}_second"
    await graph.rename(account.id, first, cooldown=HOUR)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await graph.rename(account.id, second, cooldown=HOUR)

    refused = caught.value
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(refused).reason == "USERNAME_CHANGE_TOO_SOON"
    assert 0 < retry_delay_seconds(refused) <= HOUR
    assert (await graph.profile(account.id)).username == first


async def test_without_a_cooldown_renames_follow_each_other(
    graph: Graph, new_account: AccountFactory
) -> None:
    account = await new_account()
    first, second = f"{stem()}_first", f"{stem()}_second"

    await graph.rename(account.id, first, cooldown=0)
    again = await graph.rename(account.id, second, cooldown=0)

    assert again.username == second
    assert (await graph.profile(account.id)).username == second


async def test_renaming_to_the_current_name_changes_nothing_and_starts_no_cooldown(
    graph: Graph, new_account: AccountFactory
) -> None:
    account = await new_account()
    before = await graph.profile(account.id)

    same = await graph.rename(account.id, account.username, cooldown=HOUR)
    later = f"{stem()}_later"
    renamed = await graph.rename(account.id, later, cooldown=HOUR)

    assert same == before
    assert renamed.username == later


# Search.


async def test_search_ranks_exact_name_then_name_prefixes_then_display_names(
    graph: Graph, named_account: NamedAccountFactory
) -> None:
    base = stem()
    exact = await named_account(base)
    by_name = [await named_account(f"{base}{suffix}") for suffix in ("_z", ".b", "9", "a")]
    by_display = [await named_account(f"{stem()}_x") for _ in range(2)]
    for account in by_display:
        await graph.update(account.id, display_name=f"{base.upper()} Fan")
    both = by_name[0]  # its display name matches too: listed once, among the usernames
    await graph.update(both.id, display_name=f"{base} too")

    found = await graph.search(base)

    # Display-name matches go by lower-case display name, then account id (equal names here).
    expected = (
        [(0, exact.username)]
        + [(1, name) for name in sorted(a.username for a in by_name)]
        + [(2, a.username) for a in sorted(by_display, key=lambda a: str(a.id))]
    )
    assert [(r.position.rank, r.profile.username) for r in found.results] == expected
    keys = [r.position.key for r in found.results]
    assert keys == [name for _, name in expected[:5]] + [f"{base} fan"] * 2
    assert not found.more
    assert found.results[-1].profile.display_name == f"{base.upper()} Fan"


async def test_search_takes_like_wildcards_literally(
    graph: Graph, named_account: NamedAccountFactory
) -> None:
    base = stem()
    underscored = await named_account(f"{base}_abc")
    lettered = await named_account(f"{base}xabc")
    percent = await named_account(f"{stem()}_p")
    await graph.update(percent.id, display_name=f"{base}% off")
    await graph.update(lettered.id, display_name=f"{base}x off")

    def names(page: pb.SearchProfilesResponse) -> list[str]:
        """Usernames of a page of results."""
        return [r.profile.username for r in page.results]

    assert names(await graph.search(f"{base}_")) == [underscored.username]
    assert names(await graph.search(f"{base}%")) == [percent.username]
    assert names(await graph.search(f"{base}x")) == [lettered.username]
    assert names(await graph.search(f"{base}\\")) == []


async def test_search_pages_continue_after_the_last_result_without_repeats(
    graph: Graph, named_account: NamedAccountFactory
) -> None:
    base = stem()
    made = [await named_account(base)]
    made += [await named_account(f"{base}{i}") for i in range(4)]
    for _ in range(3):
        shown = await named_account(f"{stem()}_y")
        await graph.update(shown.id, display_name=base)
        made.append(shown)

    seen: list[str] = []
    after: pb.SearchPosition | None = None
    more = True
    while more:
        page = await graph.search(base, page_size=3, after=after)
        assert len(page.results) <= 3
        seen += [r.profile.username for r in page.results]
        after, more = page.results[-1].position, page.more

    everything = await graph.search(base)
    assert seen == [r.profile.username for r in everything.results]
    assert sorted(seen) == sorted(a.username for a in made)
    assert len(set(seen)) == len(seen)


async def test_search_leaves_out_accounts_blocking_or_blocked_by_the_viewer(
    graph: Graph, named_account: NamedAccountFactory, new_account: AccountFactory
) -> None:
    base = stem()
    blocks_viewer = await named_account(f"{base}a")
    blocked_by_viewer = await named_account(f"{base}b")
    plain = await named_account(f"{base}c")
    viewer = await new_account()
    await graph.block(blocks_viewer.id, viewer.id)
    await graph.block(viewer.id, blocked_by_viewer.id)

    seen_by_viewer = await graph.search(base, viewer=viewer.id)
    seen_by_anyone = await graph.search(base)

    assert [r.profile.account_id for r in seen_by_viewer.results] == [plain.id]
    assert [r.profile.account_id for r in seen_by_anyone.results] == [
        blocks_viewer.id,
        blocked_by_viewer.id,
        plain.id,
    ]


async def test_search_refuses_an_empty_or_overlong_prefix(graph: Graph) -> None:
    for prefix in ("", "a" * 65):
        failure = await failure_of(graph.search(prefix))
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["prefix"])
    no_room = await failure_of(graph.search("abc", page_size=0))
    assert (no_room.code, no_room.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_size"])
    assert (await graph.search("q" * 64)).results == []


# Caller policy.


async def test_only_user_svc_may_use_the_social_graph(
    social_graph: pb_grpc.SocialGraphServiceAsyncStub,
    as_storage: Metadata,
    as_auth: Metadata,
    new_account: AccountFactory,
    graph: Graph,
) -> None:
    fan, star = await accounts(new_account, 2)

    for caller in (as_storage, as_auth):
        calls: list[Awaitable[object]] = [
            social_graph.Follow(
                pb.FollowRequest(follower_id=fan, account_id=star), metadata=caller
            ),
            social_graph.ListFollows(
                pb.ListFollowsRequest(account_id=star, kind=FOLLOWERS, page_size=10),
                metadata=caller,
            ),
            social_graph.SearchProfiles(
                pb.SearchProfilesRequest(prefix="user_", page_size=10), metadata=caller
            ),
        ]
        for call in calls:
            refused = await failure_of(call)
            assert (refused.code, refused.reason) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "CALLER_NOT_ALLOWED",
            )
    assert await graph.counts(star) == (0, 0)
