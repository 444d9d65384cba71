"""The profile page and the social graph: who sees what, lists, page tokens and search."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from meshkit.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from meshkit.page_tokens import encode_page_token, scope_of
from meshkit.reasons import Reason
from user_svc.graph import (
    FollowList,
    Found,
    Listed,
    Page,
    Relationship,
    SearchCursor,
    SocialService,
    Summary,
    Viewer,
)
from user_svc.profiles import Profile, ProfileChanges

# The scope of the search tokens of the query "ada".
SEARCH_ADA = scope_of("search", "ada")

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def account_id(name: str) -> str:
    """The account id of the profile made by profile("a-<name>", ...)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"a-{name}"))


def profile(
    account_id: str, username: str, *, display_name: str = "", private: bool = False
) -> Profile:
    """A stored profile with an email address and a filled-in header; its account id is a UUID
    named after account_id, as real ones are UUIDs."""
    return Profile(
        account_id=str(uuid.uuid5(uuid.NAMESPACE_URL, account_id)),
        username=username,
        display_name=display_name or username.title(),
        bio=f"{username} writes here",
        avatar_image_id=f"img-{account_id}",
        create_time=NOW,
        update_time=NOW,
        website=f"https://{username}.example",
        pronouns="they/them",
        private=private,
        follower_count=3,
        following_count=4,
        post_count=5,
        email=f"{username}@mail.example",
    )


def not_found() -> NotFound:
    """What a store answers for an account it does not show."""
    return NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND)


class FakeProfiles:
    """In-memory ProfileStore."""

    def __init__(self) -> None:
        self.by_id: dict[str, Profile] = {}
        self.lookups: list[str] = []

    def add(self, *profiles: Profile) -> None:
        """Store profiles."""
        for stored in profiles:
            self.by_id[stored.account_id] = stored

    async def get_by_account_id(self, account_id: str) -> Profile:
        """The profile of account_id, or NotFound."""
        try:
            return self.by_id[account_id]
        except KeyError:
            raise not_found() from None

    async def get_by_username(self, username: str) -> Profile:
        """The profile named username exactly, or NotFound."""
        self.lookups.append(username)
        for stored in self.by_id.values():
            if stored.username == username:
                return stored
        raise not_found()

    async def update(self, account_id: str, changes: ProfileChanges) -> Profile:
        """Apply the private flag changes sets (the only change these tests make)."""
        stored = await self.get_by_account_id(account_id)
        if changes.private is not None:
            stored = replace(stored, private=changes.private)
        self.by_id[account_id] = stored
        return stored

    async def change_username(
        self, account_id: str, username: str, *, cooldown_seconds: float
    ) -> Profile:
        """Rename an account."""
        stored = replace(await self.get_by_account_id(account_id), username=username)
        self.by_id[account_id] = stored
        return stored


@dataclass(frozen=True)
class ListCall:
    """One page a list asked the store for."""

    account_id: str
    kind: FollowList | None
    viewer_id: str
    size: int
    before: int


@dataclass(frozen=True)
class SearchCall:
    """One page a search asked the store for."""

    prefix: str
    viewer_id: str
    size: int
    after: SearchCursor | None


class FakeGraph:
    """In-memory GraphStore: follows, requests and blocks between the accounts of profiles."""

    def __init__(self, profiles: FakeProfiles) -> None:
        self.profiles = profiles
        self.follows: dict[tuple[str, str], int] = {}  # (follower, account) -> position
        self.requests: dict[tuple[str, str], int] = {}  # (requester, account) -> position
        self.blocks: dict[tuple[str, str], int] = {}  # (blocker, blocked) -> position
        self.answer: Relationship | None = None
        """When set, what every change answers instead of the computed relationship."""
        self.changes: list[tuple[str, str, str]] = []
        self.list_calls: list[ListCall] = []
        self.search_calls: list[SearchCall] = []
        self._positions = itertools.count(1)

    def connect(self, follower_id: str, account_id: str) -> None:
        """Make follower_id follow account_id, as the newest follow."""
        self.follows[(follower_id, account_id)] = next(self._positions)

    def ask(self, requester_id: str, account_id: str) -> None:
        """Make requester_id ask to follow account_id."""
        self.requests[(requester_id, account_id)] = next(self._positions)

    def bar(self, blocker_id: str, account_id: str) -> None:
        """Make blocker_id block account_id."""
        self.blocks[(blocker_id, account_id)] = next(self._positions)

    def _relation(self, viewer_id: str, account_id: str) -> Relationship:
        """How viewer_id relates to account_id in the stored graph."""
        return Relationship(
            following=(viewer_id, account_id) in self.follows,
            followed_by=(account_id, viewer_id) in self.follows,
            requested=(viewer_id, account_id) in self.requests,
            requested_by=(account_id, viewer_id) in self.requests,
            blocking=(viewer_id, account_id) in self.blocks,
            blocked_by=(account_id, viewer_id) in self.blocks,
        )

    def _changed(self, name: str, viewer_id: str, account_id: str) -> Relationship:
        """Record a change and answer the relationship after it."""
        self.changes.append((name, viewer_id, account_id))
        return self.answer or self._relation(viewer_id, account_id)

    def _hidden(self, viewer_id: str, account_id: str) -> bool:
        """Whether a block either way keeps account_id out of viewer_id's results."""
        return (viewer_id, account_id) in self.blocks or (account_id, viewer_id) in self.blocks

    def _summary(self, account_id: str) -> Summary:
        """What lists show of an account."""
        stored = self.profiles.by_id[account_id]
        return Summary(
            account_id=stored.account_id,
            username=stored.username,
            display_name=stored.display_name,
            avatar_image_id=stored.avatar_image_id,
            private=stored.private,
        )

    async def relationship(self, viewer_id: str, account_id: str) -> Relationship:
        """How viewer_id relates to account_id."""
        return self._relation(viewer_id, account_id)

    async def follow(self, follower_id: str, account_id: str) -> Relationship:
        """Follow, or ask to follow a private account."""
        if (account_id, follower_id) in self.blocks:
            raise not_found()
        if (follower_id, account_id) in self.blocks:
            raise FailedPrecondition(message="unblock it first", reason=Reason.PROFILE_BLOCKED)
        if (follower_id, account_id) not in self.follows:
            if self.profiles.by_id[account_id].private:
                self.ask(follower_id, account_id)
            else:
                self.connect(follower_id, account_id)
        return self._changed("follow", follower_id, account_id)

    async def unfollow(self, follower_id: str, account_id: str) -> Relationship:
        """End a follow or a request."""
        self.follows.pop((follower_id, account_id), None)
        self.requests.pop((follower_id, account_id), None)
        return self._changed("unfollow", follower_id, account_id)

    async def decide_request(
        self, account_id: str, requester_id: str, *, approve: bool
    ) -> Relationship:
        """Approve or deny a pending request."""
        if self.requests.pop((requester_id, account_id), None) is None:
            raise NotFound(message="no request", reason=Reason.FOLLOW_REQUEST_NOT_FOUND)
        if approve:
            self.connect(requester_id, account_id)
        return self._changed("approve" if approve else "deny", account_id, requester_id)

    async def remove_follower(self, account_id: str, follower_id: str) -> Relationship:
        """Make follower_id stop following account_id."""
        self.follows.pop((follower_id, account_id), None)
        return self._changed("remove_follower", account_id, follower_id)

    async def block(self, blocker_id: str, account_id: str) -> Relationship:
        """Block an account, ending follows and requests both ways."""
        for pair in ((blocker_id, account_id), (account_id, blocker_id)):
            self.follows.pop(pair, None)
            self.requests.pop(pair, None)
        if (blocker_id, account_id) not in self.blocks:
            self.bar(blocker_id, account_id)
        return self._changed("block", blocker_id, account_id)

    async def unblock(self, blocker_id: str, account_id: str) -> Relationship:
        """Lift a block."""
        self.blocks.pop((blocker_id, account_id), None)
        return self._changed("unblock", blocker_id, account_id)

    async def list_follows(
        self, account_id: str, kind: FollowList, *, viewer_id: str, size: int, before: int
    ) -> tuple[list[Listed], bool]:
        """A page of a follow list, newest first, without accounts hidden from the viewer."""
        self.list_calls.append(ListCall(account_id, kind, viewer_id, size, before))
        if kind is FollowList.FOLLOWERS:
            entries = [(pos, f) for (f, a), pos in self.follows.items() if a == account_id]
        elif kind is FollowList.FOLLOWING:
            entries = [(pos, a) for (f, a), pos in self.follows.items() if f == account_id]
        else:
            entries = [(pos, r) for (r, a), pos in self.requests.items() if a == account_id]
        entries = [entry for entry in entries if not self._hidden(viewer_id, entry[1])]
        return self._page(entries, size, before)

    async def list_blocks(
        self, account_id: str, *, size: int, before: int
    ) -> tuple[list[Listed], bool]:
        """A page of the accounts account_id blocks, newest first."""
        self.list_calls.append(ListCall(account_id, None, account_id, size, before))
        entries = [(pos, b) for (a, b), pos in self.blocks.items() if a == account_id]
        return self._page(entries, size, before)

    def _page(
        self, entries: list[tuple[int, str]], size: int, before: int
    ) -> tuple[list[Listed], bool]:
        """Entries below position before, newest first, cut to size, and whether more remain."""
        ordered = sorted(
            (entry for entry in entries if not before or entry[0] < before), reverse=True
        )
        listed = [Listed(self._summary(account), position) for position, account in ordered]
        return listed[:size], len(listed) > size

    async def search(
        self, prefix: str, *, viewer_id: str, size: int, after: SearchCursor | None
    ) -> tuple[list[Found], bool]:
        """Profiles ranked exact username, username prefix (by username), display-name prefix
        (by lower-case display name, then account id)."""
        self.search_calls.append(SearchCall(prefix, viewer_id, size, after))
        ranked: list[tuple[int, str, str]] = []
        for stored in self.profiles.by_id.values():
            if self._hidden(viewer_id, stored.account_id):
                continue
            if stored.username == prefix:
                ranked.append((0, stored.username, stored.account_id))
            elif stored.username.startswith(prefix):
                ranked.append((1, stored.username, stored.account_id))
            elif stored.display_name.lower().startswith(prefix):
                ranked.append((2, stored.display_name.lower(), stored.account_id))
        ranked.sort()
        start = (-1, "", "") if after is None else (after.rank, after.key, after.account_id)
        found = [
            Found(self._summary(account), rank, key)
            for rank, key, account in ranked
            if (rank, key, account) > start
        ]
        return found[:size], len(found) > size


ADA = profile("a-ada", "ada")
BOB = profile("a-bob", "bob")
CY = profile("a-cy", "cy_private", private=True)
DEE = profile("a-dee", "dee")
EVE = profile("a-eve", "eve")


@dataclass
class World:
    """A SocialService over fresh fakes holding ADA, BOB, CY (private), DEE and EVE."""

    profiles: FakeProfiles
    graph: FakeGraph
    social: SocialService


@pytest.fixture
def world() -> World:
    """Fresh fakes and the service over them."""
    profiles = FakeProfiles()
    profiles.add(ADA, BOB, CY, DEE, EVE)
    graph = FakeGraph(profiles)
    return World(profiles, graph, SocialService(profiles, graph))


def violation_fields(error: InvalidArgument) -> list[str]:
    """The field paths an InvalidArgument names."""
    return [violation.field for violation in error.violations]


def usernames(page: Page) -> list[str]:
    """The usernames a page lists, in order."""
    return [summary.username for summary in page.profiles]


# --- the profile page ----------------------------------------------------------------------------


async def test_owner_sees_the_whole_profile_with_the_email(world: World) -> None:
    page = await world.social.profile_page("ADA", ADA.account_id)
    assert page.profile == ADA
    assert page.profile.email == "ada@mail.example"
    assert page.viewer is Viewer.OWNER
    assert page.relationship == Relationship()
    assert not page.content_hidden


async def test_owner_of_a_private_account_sees_its_content(world: World) -> None:
    page = await world.social.profile_page("cy_private", CY.account_id)
    assert page.viewer is Viewer.OWNER
    assert page.profile.email == CY.email
    assert not page.content_hidden


async def test_a_follower_sees_a_private_account_without_its_email(world: World) -> None:
    world.graph.connect(ADA.account_id, CY.account_id)
    page = await world.social.profile_page("cy_private", ADA.account_id)
    assert page.viewer is Viewer.FOLLOWER
    assert page.relationship == Relationship(following=True)
    assert not page.content_hidden
    assert page.profile == replace(CY, email="")


async def test_a_signed_in_stranger_sees_only_the_header_of_a_private_account(
    world: World,
) -> None:
    world.graph.ask(ADA.account_id, CY.account_id)
    world.graph.connect(CY.account_id, ADA.account_id)
    page = await world.social.profile_page("cy_private", ADA.account_id)
    assert page.viewer is Viewer.SIGNED_IN
    assert page.relationship == Relationship(requested=True, followed_by=True)
    assert page.content_hidden
    # The header stays visible: names, avatar, bio, website, pronouns, counts.
    assert page.profile == replace(CY, email="")


async def test_a_signed_in_stranger_sees_a_public_account(world: World) -> None:
    page = await world.social.profile_page("bob", ADA.account_id)
    assert page.viewer is Viewer.SIGNED_IN
    assert page.relationship == Relationship()
    assert not page.content_hidden
    assert page.profile == replace(BOB, email="")


async def test_signed_out_visitors_see_public_accounts_without_email(world: World) -> None:
    page = await world.social.profile_page("Bob", None)
    assert page.viewer is Viewer.SIGNED_OUT
    assert page.relationship == Relationship()
    assert not page.content_hidden
    assert page.profile == replace(BOB, email="")


async def test_signed_out_visitors_see_only_the_header_of_private_accounts(world: World) -> None:
    page = await world.social.profile_page("cy_private", None)
    assert page.viewer is Viewer.SIGNED_OUT
    assert page.content_hidden
    assert page.profile == replace(CY, email="")


async def test_an_account_that_blocks_the_viewer_does_not_exist_for_it(world: World) -> None:
    world.graph.bar(BOB.account_id, ADA.account_id)
    with pytest.raises(NotFound) as caught:
        await world.social.profile_page("bob", ADA.account_id)
    assert caught.value.reason is Reason.PROFILE_NOT_FOUND
    # Others, and signed-out visitors, still see it.
    assert (await world.social.profile_page("bob", DEE.account_id)).profile.username == "bob"
    assert (await world.social.profile_page("bob", None)).profile.username == "bob"


async def test_an_account_the_viewer_blocks_is_shown_as_blocked(world: World) -> None:
    world.graph.bar(ADA.account_id, BOB.account_id)
    page = await world.social.profile_page("bob", ADA.account_id)
    assert page.relationship == Relationship(blocking=True)
    assert page.viewer is Viewer.SIGNED_IN
    assert page.profile.email == ""


async def test_unknown_and_malformed_usernames(world: World) -> None:
    with pytest.raises(NotFound):
        await world.social.profile_page("nobody", ADA.account_id)
    with pytest.raises(InvalidArgument) as caught:
        await world.social.profile_page("no/body", None)
    assert violation_fields(caught.value) == ["username"]


# --- changes -------------------------------------------------------------------------------------

Change = Callable[[SocialService, str, str], Awaitable[Relationship]]


async def follow(social: SocialService, viewer_id: str, username: str) -> Relationship:
    """Follow username."""
    return await social.follow(viewer_id, username)


async def unfollow(social: SocialService, viewer_id: str, username: str) -> Relationship:
    """Unfollow username."""
    return await social.unfollow(viewer_id, username)


async def approve(social: SocialService, viewer_id: str, username: str) -> Relationship:
    """Approve username's follow request."""
    return await social.decide_request(viewer_id, username, approve=True)


async def deny(social: SocialService, viewer_id: str, username: str) -> Relationship:
    """Deny username's follow request."""
    return await social.decide_request(viewer_id, username, approve=False)


async def remove_follower(social: SocialService, viewer_id: str, username: str) -> Relationship:
    """Make username stop following the viewer."""
    return await social.remove_follower(viewer_id, username)


async def block(social: SocialService, viewer_id: str, username: str) -> Relationship:
    """Block username."""
    return await social.block(viewer_id, username)


async def unblock(social: SocialService, viewer_id: str, username: str) -> Relationship:
    """Unblock username."""
    return await social.unblock(viewer_id, username)


CHANGES = [follow, unfollow, approve, deny, remove_follower, block, unblock]


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("own_name", ["ada", "ADA", " Ada "])
async def test_changes_naming_oneself_are_invalid_on_field_username(
    world: World, change: Change, own_name: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await change(world.social, ADA.account_id, own_name)
    assert violation_fields(caught.value) == ["username"]
    assert world.graph.changes == []


@pytest.mark.parametrize("change", CHANGES)
async def test_changes_never_tell_that_the_other_account_blocks_the_caller(
    world: World, change: Change
) -> None:
    everything = Relationship(
        following=True,
        followed_by=True,
        requested=True,
        requested_by=True,
        blocking=True,
        blocked_by=True,
    )
    world.graph.answer = everything
    world.graph.ask(BOB.account_id, ADA.account_id)  # so that approve and deny find a request
    shown = await change(world.social, ADA.account_id, "bob")
    assert shown == replace(everything, blocked_by=False)
    assert type(shown) is Relationship


async def test_unblocking_someone_who_blocks_back_shows_no_block_at_all(world: World) -> None:
    world.graph.bar(ADA.account_id, BOB.account_id)
    world.graph.bar(BOB.account_id, ADA.account_id)
    assert await world.social.unblock(ADA.account_id, "Bob") == Relationship()
    assert world.graph.changes == [("unblock", ADA.account_id, BOB.account_id)]


async def test_follow_answers_the_relationship_after_it(world: World) -> None:
    assert await world.social.follow(ADA.account_id, "bob") == Relationship(following=True)
    assert await world.social.follow(ADA.account_id, "cy_private") == Relationship(requested=True)


async def test_approving_and_denying_reach_the_store_with_the_decision(world: World) -> None:
    world.graph.ask(ADA.account_id, CY.account_id)
    world.graph.ask(BOB.account_id, CY.account_id)
    assert await world.social.decide_request(CY.account_id, "ada", approve=True) == Relationship(
        followed_by=True
    )
    assert await world.social.decide_request(CY.account_id, "bob", approve=False) == (
        Relationship()
    )
    assert (ADA.account_id, CY.account_id) in world.graph.follows
    assert (BOB.account_id, CY.account_id) not in world.graph.follows
    with pytest.raises(NotFound) as caught:
        await world.social.decide_request(CY.account_id, "bob", approve=True)
    assert caught.value.reason is Reason.FOLLOW_REQUEST_NOT_FOUND


# --- follow lists --------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["me", "ME", " Me "])
async def test_me_names_the_callers_own_lists(world: World, alias: str) -> None:
    world.graph.connect(BOB.account_id, ADA.account_id)
    world.graph.connect(ADA.account_id, DEE.account_id)
    followers = await world.social.follow_list(
        ADA.account_id, alias, FollowList.FOLLOWERS, size=0, token=""
    )
    following = await world.social.follow_list(
        ADA.account_id, alias, FollowList.FOLLOWING, size=0, token=""
    )
    assert usernames(followers) == ["bob"]
    assert usernames(following) == ["dee"]
    assert world.profiles.lookups == []


async def test_lists_are_newest_first(world: World) -> None:
    for follower in (BOB, DEE, EVE):
        world.graph.connect(follower.account_id, ADA.account_id)
    page = await world.social.follow_list(
        CY.account_id, "ada", FollowList.FOLLOWERS, size=0, token=""
    )
    assert usernames(page) == ["eve", "dee", "bob"]
    assert page.next_page_token == ""


@pytest.mark.parametrize("kind", [FollowList.FOLLOWERS, FollowList.FOLLOWING])
async def test_private_lists_are_denied_to_non_followers(world: World, kind: FollowList) -> None:
    world.graph.ask(ADA.account_id, CY.account_id)  # a pending request is not a follow
    world.graph.connect(CY.account_id, ADA.account_id)  # nor is being followed by it
    with pytest.raises(PermissionDenied) as caught:
        await world.social.follow_list(ADA.account_id, "cy_private", kind, size=0, token="")
    assert caught.value.reason is Reason.PROFILE_PRIVATE


@pytest.mark.parametrize("kind", [FollowList.FOLLOWERS, FollowList.FOLLOWING])
async def test_private_lists_are_shown_to_owner_and_followers(
    world: World, kind: FollowList
) -> None:
    world.graph.connect(BOB.account_id, CY.account_id)
    world.graph.connect(CY.account_id, DEE.account_id)
    expected = ["bob"] if kind is FollowList.FOLLOWERS else ["dee"]
    for viewer in (CY, BOB):
        page = await world.social.follow_list(
            viewer.account_id, "cy_private", kind, size=0, token=""
        )
        assert usernames(page) == expected
    own = await world.social.follow_list(CY.account_id, "me", kind, size=0, token="")
    assert usernames(own) == expected


async def test_public_lists_are_shown_to_anyone_signed_in(world: World) -> None:
    world.graph.connect(DEE.account_id, BOB.account_id)
    page = await world.social.follow_list(
        ADA.account_id, "bob", FollowList.FOLLOWERS, size=0, token=""
    )
    assert usernames(page) == ["dee"]


@pytest.mark.parametrize("account", [BOB, CY])
async def test_lists_of_an_account_that_blocks_the_viewer_are_not_found(
    world: World, account: Profile
) -> None:
    world.graph.bar(account.account_id, ADA.account_id)
    with pytest.raises(NotFound) as caught:
        await world.social.follow_list(
            ADA.account_id, account.username, FollowList.FOLLOWERS, size=0, token=""
        )
    assert caught.value.reason is Reason.PROFILE_NOT_FOUND


async def test_lists_of_unknown_accounts_are_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        await world.social.follow_list(
            ADA.account_id, "nobody", FollowList.FOLLOWING, size=0, token=""
        )


async def test_follow_requests_and_blocks_list_the_callers_own(world: World) -> None:
    world.graph.ask(ADA.account_id, CY.account_id)
    world.graph.ask(BOB.account_id, CY.account_id)
    world.graph.bar(CY.account_id, EVE.account_id)
    requests = await world.social.follow_requests(CY.account_id, size=0, token="")
    assert usernames(requests) == ["bob", "ada"]
    blocked = await world.social.blocked(CY.account_id, size=0, token="")
    assert usernames(blocked) == ["eve"]


# --- pages ---------------------------------------------------------------------------------------


async def test_pages_continue_where_the_last_one_stopped(world: World) -> None:
    for follower in (BOB, CY, DEE, EVE):
        world.graph.connect(follower.account_id, ADA.account_id)
    seen: list[str] = []
    token = ""
    for _ in range(3):
        page = await world.social.follow_list(
            ADA.account_id, "me", FollowList.FOLLOWERS, size=3, token=token
        )
        seen += usernames(page)
        token = page.next_page_token
        if not token:
            break
    assert seen == ["eve", "dee", "cy_private", "bob"]
    assert [call.size for call in world.graph.list_calls] == [3, 3]
    assert world.graph.list_calls[0].before == 0
    # The second page starts below the last entry of the first.
    assert world.graph.list_calls[1].before == world.graph.follows[(CY.account_id, ADA.account_id)]


async def test_a_page_that_ends_the_list_has_no_next_token(world: World) -> None:
    world.graph.connect(BOB.account_id, ADA.account_id)
    world.graph.connect(DEE.account_id, ADA.account_id)
    page = await world.social.follow_list(
        ADA.account_id, "me", FollowList.FOLLOWERS, size=2, token=""
    )
    assert usernames(page) == ["dee", "bob"]
    assert page.next_page_token == ""
    empty = await world.social.follow_list(
        ADA.account_id, "me", FollowList.FOLLOWING, size=2, token=""
    )
    assert empty == Page([], "")


async def test_blocked_and_request_lists_page_too(world: World) -> None:
    for other in (BOB, DEE, EVE):
        world.graph.bar(ADA.account_id, other.account_id)
        world.graph.ask(other.account_id, CY.account_id)
    first = await world.social.blocked(ADA.account_id, size=2, token="")
    rest = await world.social.blocked(ADA.account_id, size=2, token=first.next_page_token)
    assert usernames(first) + usernames(rest) == ["eve", "dee", "bob"]
    assert rest.next_page_token == ""
    first = await world.social.follow_requests(CY.account_id, size=2, token="")
    rest = await world.social.follow_requests(CY.account_id, size=2, token=first.next_page_token)
    assert usernames(first) + usernames(rest) == ["eve", "dee", "bob"]


async def first_followers_token(world: World) -> str:
    """A next_page_token of ada's followers (two pages of one)."""
    world.graph.connect(BOB.account_id, ADA.account_id)
    world.graph.connect(DEE.account_id, ADA.account_id)
    page = await world.social.follow_list(
        EVE.account_id, "ada", FollowList.FOLLOWERS, size=1, token=""
    )
    assert page.next_page_token
    return page.next_page_token


async def test_a_token_works_for_the_list_it_came_from_for_anyone(world: World) -> None:
    token = await first_followers_token(world)
    page = await world.social.follow_list(
        ADA.account_id, "me", FollowList.FOLLOWERS, size=1, token=token
    )
    assert usernames(page) == ["bob"]


async def test_a_token_of_another_accounts_list_is_refused(world: World) -> None:
    token = await first_followers_token(world)
    with pytest.raises(InvalidArgument) as caught:
        await world.social.follow_list(
            EVE.account_id, "bob", FollowList.FOLLOWERS, size=1, token=token
        )
    assert violation_fields(caught.value) == ["page_token"]


async def test_a_token_of_another_kind_of_list_is_refused(world: World) -> None:
    token = await first_followers_token(world)
    social = world.social
    attempts: list[Callable[[], Awaitable[Page]]] = [
        lambda: social.follow_list(
            EVE.account_id, "ada", FollowList.FOLLOWING, size=1, token=token
        ),
        lambda: social.follow_requests(ADA.account_id, size=1, token=token),
        lambda: social.blocked(ADA.account_id, size=1, token=token),
        lambda: social.search(ADA.account_id, "ada", size=1, token=token),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidArgument) as caught:
            await attempt()
        assert violation_fields(caught.value) == ["page_token"]


@pytest.mark.parametrize("token", ["not a token", "e30", encode_page_token("followers:a-ada", 0)])
async def test_garbage_tokens_are_refused(world: World, token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.social.follow_list(
            ADA.account_id, "me", FollowList.FOLLOWERS, size=1, token=token
        )
    assert violation_fields(caught.value) == ["page_token"]
    assert world.graph.list_calls == []


@pytest.mark.parametrize(("requested", "used"), [(0, 50), (1, 1), (100, 100), (101, 100)])
async def test_list_page_sizes(world: World, requested: int, used: int) -> None:
    await world.social.follow_list(
        ADA.account_id, "me", FollowList.FOLLOWERS, size=requested, token=""
    )
    await world.social.follow_requests(ADA.account_id, size=requested, token="")
    await world.social.blocked(ADA.account_id, size=requested, token="")
    assert [call.size for call in world.graph.list_calls] == [used, used, used]


@pytest.mark.parametrize(("requested", "used"), [(0, 20), (7, 7), (100, 100), (2**31 - 1, 100)])
async def test_search_page_sizes(world: World, requested: int, used: int) -> None:
    await world.social.search(ADA.account_id, "b", size=requested, token="")
    assert [call.size for call in world.graph.search_calls] == [used]


async def test_negative_page_sizes_are_refused(world: World) -> None:
    social = world.social
    attempts: list[Callable[[], Awaitable[Page]]] = [
        lambda: social.follow_list(ADA.account_id, "me", FollowList.FOLLOWERS, size=-1, token=""),
        lambda: social.follow_requests(ADA.account_id, size=-1, token=""),
        lambda: social.blocked(ADA.account_id, size=-5, token=""),
        lambda: social.search(ADA.account_id, "ada", size=-1, token=""),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidArgument) as caught:
            await attempt()
        assert violation_fields(caught.value) == ["page_size"]
    assert world.graph.list_calls == []
    assert world.graph.search_calls == []


# --- search --------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["ada", "ADA", "  @Ada ", "@ada", "@ ada"])
async def test_search_queries_are_trimmed_lower_cased_and_lose_a_leading_at(
    world: World, query: str
) -> None:
    page = await world.social.search(BOB.account_id, query, size=0, token="")
    assert usernames(page) == ["ada"]
    assert world.graph.search_calls == [SearchCall("ada", BOB.account_id, 20, None)]


@pytest.mark.parametrize("query", ["", "   ", "@", " @ "])
async def test_empty_search_queries_are_refused(world: World, query: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.social.search(ADA.account_id, query, size=0, token="")
    assert violation_fields(caught.value) == ["query"]
    assert world.graph.search_calls == []


async def test_search_queries_are_at_most_64_characters(world: World) -> None:
    await world.social.search(ADA.account_id, "q" * 64, size=0, token="")
    await world.social.search(ADA.account_id, "@" + "q" * 64, size=0, token="")
    with pytest.raises(InvalidArgument) as caught:
        await world.social.search(ADA.account_id, "q" * 65, size=0, token="")
    assert violation_fields(caught.value) == ["query"]
    assert [len(call.prefix) for call in world.graph.search_calls] == [64, 64]


@pytest.mark.parametrize("query", ["a\x00b", "a\nb", "ad\x1b[2J", "a\u202eb", "a\u2028b"])
async def test_search_queries_with_control_characters_are_refused(world: World, query: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.social.search(ADA.account_id, query, size=0, token="")
    assert violation_fields(caught.value) == ["query"]
    assert world.graph.search_calls == []


async def test_search_pages_hand_the_last_results_position_to_the_store(world: World) -> None:
    world.profiles.add(
        profile("a-adam", "adam"),
        profile("a-zed", "zed", display_name="Ada Zed"),
        profile("a-abe", "abe", display_name="Adalbert"),
    )
    seen: list[str] = []
    token = ""
    for _ in range(5):
        page = await world.social.search(DEE.account_id, "Ada", size=1, token=token)
        seen += usernames(page)
        token = page.next_page_token
        if not token:
            break
    # Display-name matches come in display-name order: "ada zed" before "adalbert".
    assert seen == ["ada", "adam", "zed", "abe"]
    ids = {name: account_id(name) for name in ("ada", "adam", "zed")}
    assert [call.after for call in world.graph.search_calls] == [
        None,
        SearchCursor(0, "ada", ids["ada"]),
        SearchCursor(1, "adam", ids["adam"]),
        SearchCursor(2, "ada zed", ids["zed"]),
    ]


async def test_a_search_token_is_bound_to_its_query(world: World) -> None:
    world.profiles.add(profile("a-abc", "abc"), profile("a-abd", "abd"))
    first = await world.social.search(ADA.account_id, "ab", size=1, token="")
    assert first.next_page_token
    with pytest.raises(InvalidArgument) as caught:
        await world.social.search(ADA.account_id, "abc", size=1, token=first.next_page_token)
    assert violation_fields(caught.value) == ["page_token"]
    # The same query, however typed, continues.
    more = await world.social.search(ADA.account_id, "@AB", size=1, token=first.next_page_token)
    assert usernames(more) == ["abd"]


async def test_search_leaves_out_accounts_that_block_the_searcher(world: World) -> None:
    world.profiles.add(profile("a-bobby", "bobby"))
    world.graph.bar(BOB.account_id, ADA.account_id)
    page = await world.social.search(ADA.account_id, "bob", size=0, token="")
    assert usernames(page) == ["bobby"]
    assert page.next_page_token == ""


async def test_a_search_for_a_long_emoji_display_name_pages(world: World) -> None:
    name = "\U0001f600" * 64  # a display name at its 64-character limit
    world.profiles.add(
        profile("a-smile1", "smile1", display_name=name),
        profile("a-smile2", "smile2", display_name=name),
    )
    first = await world.social.search(ADA.account_id, name, size=1, token="")
    assert usernames(first) == ["smile1"]
    second = await world.social.search(ADA.account_id, name, size=1, token=first.next_page_token)
    assert usernames(second) == ["smile2"]


@pytest.mark.parametrize(
    "token",
    [
        encode_page_token(SEARCH_ADA, 2**40, "ada", str(uuid.uuid4())),
        encode_page_token(SEARCH_ADA, 1, "\ud800", str(uuid.uuid4())),
        encode_page_token(SEARCH_ADA, 1, "ada", "not-an-id"),
        encode_page_token(SEARCH_ADA, 1, "ada"),
    ],
    ids=["rank-beyond-int32", "lone-surrogate", "not-an-account-id", "no-account-id"],
)
async def test_forged_search_cursors_are_refused_on_page_token(world: World, token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.social.search(ADA.account_id, "ada", size=1, token=token)
    assert violation_fields(caught.value) == ["page_token"]
