"""The profile page and the social graph as user_svc serves them: who sees what, and when.

Visibility rules, in one place:
- An account that blocks the viewer does not exist for it (NotFound), in profiles, lists and
  search alike; an account the viewer blocks is shown, with relationship.blocking set.
- A private account shows its header (names, avatar, bio, website, pronouns, counts) to
  everyone; its lists only to its owner and its followers (PermissionDenied, PROFILE_PRIVATE).
- The email is shown to the owner only.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Protocol

from meshkit.errors import FieldViolation, NotFound, PermissionDenied, invalid
from meshkit.page_tokens import (
    Part,
    decode_page_token,
    encode_page_token,
    page_size,
    position_part,
    scope_of,
    text_part,
)
from meshkit.reasons import Reason
from user_svc.profiles import Profile, ProfileStore, normalise_username

LIST_PAGE_SIZE = 50
SEARCH_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
SEARCH_QUERY_MAX_CHARS = 64
# Search ranks run from 0 (exact username) to this (display-name prefix).
_LAST_RANK = 2
# A display name is at most 64 characters; its key, lower-cased, a few more.
_KEY_MAX_CHARS = 256
# Names a list request may use for the caller's own profile.
ME = "me"


@dataclass(frozen=True)
class Relationship:
    """How a viewer and an account relate (both directions)."""

    following: bool = False
    followed_by: bool = False
    requested: bool = False
    requested_by: bool = False
    blocking: bool = False
    blocked_by: bool = False


class Viewer(Enum):
    """Who looks at a profile page."""

    OWNER = "owner"
    FOLLOWER = "follower"
    SIGNED_IN = "signed_in"
    SIGNED_OUT = "signed_out"


class FollowList(Enum):
    """The lists of an account."""

    FOLLOWERS = "followers"
    FOLLOWING = "following"
    REQUESTS = "requests"


@dataclass(frozen=True)
class ProfilePage:
    """A profile page as one viewer sees it."""

    profile: Profile
    relationship: Relationship
    viewer: Viewer
    content_hidden: bool
    """The account is private and the viewer neither owns nor follows it."""


@dataclass(frozen=True)
class Summary:
    """What a list shows of a profile."""

    account_id: str
    username: str
    display_name: str
    avatar_image_id: str
    private: bool


@dataclass(frozen=True)
class Listed:
    """A list entry and the position that continues after it."""

    summary: Summary
    position: int


@dataclass(frozen=True)
class Found:
    """A search result and its place in the ranking: its rank group and its key there (the
    username, or the lower-case display name; ties go by account id)."""

    summary: Summary
    rank: int
    key: str


@dataclass(frozen=True)
class SearchCursor:
    """Where a page of search results ended: the last result's rank, key and account id."""

    rank: int
    key: str
    account_id: str


@dataclass(frozen=True)
class Page:
    """One page of summaries and the token of the next (empty on the last)."""

    profiles: Sequence[Summary]
    next_page_token: str


class GraphStore(Protocol):
    """Where follows, requests and blocks live (data_access's SocialGraphService)."""

    async def relationship(self, viewer_id: str, account_id: str) -> Relationship:
        """Return how viewer_id relates to account_id."""
        ...

    async def follow(self, follower_id: str, account_id: str) -> Relationship:
        """Follow or ask to follow; NotFound when blocked by it, FailedPrecondition when
        blocking it."""
        ...

    async def unfollow(self, follower_id: str, account_id: str) -> Relationship:
        """End a follow or a request."""
        ...

    async def decide_request(
        self, account_id: str, requester_id: str, *, approve: bool
    ) -> Relationship:
        """Approve or deny a pending request; NotFound (FOLLOW_REQUEST_NOT_FOUND) when none."""
        ...

    async def remove_follower(self, account_id: str, follower_id: str) -> Relationship:
        """Make follower_id stop following account_id."""
        ...

    async def block(self, blocker_id: str, account_id: str) -> Relationship:
        """Block an account, ending follows both ways."""
        ...

    async def unblock(self, blocker_id: str, account_id: str) -> Relationship:
        """Lift a block."""
        ...

    async def list_follows(
        self, account_id: str, kind: FollowList, *, viewer_id: str, size: int, before: int
    ) -> tuple[list[Listed], bool]:
        """Return a page of a follow list, newest first, and whether more remain."""
        ...

    async def list_blocks(
        self, account_id: str, *, size: int, before: int
    ) -> tuple[list[Listed], bool]:
        """Return a page of an account's blocks, newest first, and whether more remain."""
        ...

    async def search(
        self, prefix: str, *, viewer_id: str, size: int, after: SearchCursor | None
    ) -> tuple[list[Found], bool]:
        """Return ranked profiles starting with prefix after the cursor, and whether more
        follow."""
        ...


class SocialService:
    """The profile page, follows, requests, blocks and search, independent of gRPC."""

    def __init__(self, profiles: ProfileStore, graph: GraphStore) -> None:
        self._profiles = profiles
        self._graph = graph

    async def profile_page(self, username: str, viewer_id: str | None) -> ProfilePage:
        """Return the profile page of username as viewer_id (None: signed out) sees it."""
        profile = await self._profiles.get_by_username(normalise_username(username))
        if viewer_id == profile.account_id:
            return ProfilePage(profile, Relationship(), Viewer.OWNER, content_hidden=False)
        relation = Relationship()
        viewer = Viewer.SIGNED_OUT
        if viewer_id is not None:
            relation = await self._visible_relationship(viewer_id, profile.account_id)
            viewer = Viewer.FOLLOWER if relation.following else Viewer.SIGNED_IN
        return ProfilePage(
            profile.without_private_fields(),
            relation,
            viewer,
            content_hidden=profile.private and viewer is not Viewer.FOLLOWER,
        )

    async def follow(self, viewer_id: str, username: str) -> Relationship:
        """Follow an account (ask to, when private)."""
        account = await self._other(viewer_id, username)
        return _shown(await self._graph.follow(viewer_id, account.account_id))

    async def unfollow(self, viewer_id: str, username: str) -> Relationship:
        """Stop following an account, or withdraw the request."""
        account = await self._other(viewer_id, username)
        return _shown(await self._graph.unfollow(viewer_id, account.account_id))

    async def decide_request(self, viewer_id: str, username: str, *, approve: bool) -> Relationship:
        """Approve or deny a pending request of username to follow the viewer."""
        requester = await self._other(viewer_id, username)
        return _shown(
            await self._graph.decide_request(viewer_id, requester.account_id, approve=approve)
        )

    async def remove_follower(self, viewer_id: str, username: str) -> Relationship:
        """Make username stop following the viewer."""
        follower = await self._other(viewer_id, username)
        return _shown(await self._graph.remove_follower(viewer_id, follower.account_id))

    async def block(self, viewer_id: str, username: str) -> Relationship:
        """Block an account."""
        account = await self._other(viewer_id, username)
        return _shown(await self._graph.block(viewer_id, account.account_id))

    async def unblock(self, viewer_id: str, username: str) -> Relationship:
        """Lift a block."""
        account = await self._other(viewer_id, username)
        return _shown(await self._graph.unblock(viewer_id, account.account_id))

    async def follow_list(
        self, viewer_id: str, username: str, kind: FollowList, *, size: int, token: str
    ) -> Page:
        """Return a page of username's followers or followed accounts as the viewer may see
        them; PermissionDenied (PROFILE_PRIVATE) for a private account it does not follow."""
        account_id = viewer_id
        if username.strip().lower() != ME:
            profile = await self._profiles.get_by_username(normalise_username(username))
            account_id = profile.account_id
            if account_id != viewer_id:
                relation = await self._visible_relationship(viewer_id, account_id)
                if profile.private and not relation.following:
                    raise PermissionDenied(
                        message="this account is private: follow it to see its lists",
                        reason=Reason.PROFILE_PRIVATE,
                    )
        return await self._list(viewer_id, account_id, kind, size=size, token=token)

    async def follow_requests(self, viewer_id: str, *, size: int, token: str) -> Page:
        """Return a page of the accounts asking to follow the viewer."""
        return await self._list(viewer_id, viewer_id, FollowList.REQUESTS, size=size, token=token)

    async def blocked(self, viewer_id: str, *, size: int, token: str) -> Page:
        """Return a page of the accounts the viewer blocks."""
        scope = f"blocks:{viewer_id}"
        before = _position(token, scope)
        entries, more = await self._graph.list_blocks(
            viewer_id, size=_size(size, LIST_PAGE_SIZE), before=before
        )
        return _page(entries, more, scope)

    async def search(self, viewer_id: str, query: str, *, size: int, token: str) -> Page:
        """Return a page of profiles whose username or display name starts with query."""
        prefix = _search_prefix(query)
        scope = scope_of("search", prefix)
        after = None
        if token:
            after = _search_cursor(decode_page_token(token, scope))
        found, more = await self._graph.search(
            prefix, viewer_id=viewer_id, size=_size(size, SEARCH_PAGE_SIZE), after=after
        )
        following = ""
        if more and found:
            last = found[-1]
            # Ranks start at 0; stored plus one so that the token holds positive numbers only.
            following = encode_page_token(scope, last.rank + 1, last.key, last.summary.account_id)
        return Page([entry.summary for entry in found], following)

    async def _list(
        self, viewer_id: str, account_id: str, kind: FollowList, *, size: int, token: str
    ) -> Page:
        """Return one page of a follow list of account_id, filtered for viewer_id."""
        scope = f"{kind.value}:{account_id}"
        before = _position(token, scope)
        entries, more = await self._graph.list_follows(
            account_id,
            kind,
            viewer_id=viewer_id,
            size=_size(size, LIST_PAGE_SIZE),
            before=before,
        )
        return _page(entries, more, scope)

    async def _other(self, viewer_id: str, username: str) -> Profile:
        """The profile a mutation names; InvalidArgument for the caller's own."""
        profile = await self._profiles.get_by_username(normalise_username(username))
        if profile.account_id == viewer_id:
            raise invalid([FieldViolation("username", "must name another account than yours")])
        return profile

    async def _visible_relationship(self, viewer_id: str, account_id: str) -> Relationship:
        """The relationship of viewer to account; NotFound when the account blocks the viewer."""
        relation = await self._graph.relationship(viewer_id, account_id)
        if relation.blocked_by:
            raise NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND)
        return relation


def _shown(relation: Relationship) -> Relationship:
    """A relationship as the caller may see it: whether the other account blocks it is never
    told (that account simply stops being visible)."""
    return replace(relation, blocked_by=False)


def _size(requested: int, default: int) -> int:
    """The page size of a request (0: default; above MAX_PAGE_SIZE: the maximum)."""
    return page_size(requested, default=default, maximum=MAX_PAGE_SIZE)


def _position(token: str, scope: str) -> int:
    """The list position a token continues below (0: from the newest)."""
    if not token:
        return 0
    return position_part(decode_page_token(token, scope), 0)


def _page(entries: list[Listed], more: bool, scope: str) -> Page:
    """A page of list entries with the token of the next one."""
    following = encode_page_token(scope, entries[-1].position) if more and entries else ""
    return Page([entry.summary for entry in entries], following)


def _search_cursor(parts: list[Part]) -> SearchCursor:
    """The result a search token continues after; InvalidArgument (page_token) when the values
    cannot be a rank, a key and an account id (an altered token)."""
    rank = position_part(parts, 0) - 1
    key = text_part(parts, 1)
    account_id = text_part(parts, 2)
    try:
        uuid.UUID(account_id)
        well_formed = rank <= _LAST_RANK and len(key) <= _KEY_MAX_CHARS and key.isprintable()
        key.encode()  # a lone surrogate cannot travel
    except (ValueError, UnicodeEncodeError):
        well_formed = False
    if not well_formed:
        raise invalid([FieldViolation("page_token", "is not a token from a previous page")])
    return SearchCursor(rank, key, account_id)


def _search_prefix(query: str) -> str:
    """The lower-case prefix a search query asks for; InvalidArgument (field query) when empty
    or too long."""
    prefix = query.strip().removeprefix("@").strip().lower()
    if not prefix:
        raise invalid([FieldViolation("query", "is required")])
    if len(prefix) > SEARCH_QUERY_MAX_CHARS:
        raise invalid(
            [FieldViolation("query", f"must be at most {SEARCH_QUERY_MAX_CHARS} characters")]
        )
    if any(not ch.isprintable() for ch in prefix):
        raise invalid([FieldViolation("query", "must not contain control characters")])
    return prefix
