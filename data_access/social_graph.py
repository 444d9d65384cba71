"""The social graph: follows, follow requests and blocks, with exact counts, and profile search.

Every change locks the profile rows of the accounts it touches, in account-id order, before it
reads or writes a follow: two changes of one pair run one after the other (so counts stay exact
and a repeated request changes nothing), and changes of crossing pairs (A follows B while B
follows A) cannot deadlock. Counts change in the same transaction as the follow rows.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnClause,
    Exists,
    ScalarSelect,
    TextClause,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from data_access.changes import ChangeFeed, recorded_position
from data_access.database import Database, FastQuery
from data_access.models import Block, Follow
from data_access.records import (
    FollowList,
    Found,
    Listed,
    ListedPage,
    ProfileSummary,
    Relationship,
    SearchPage,
    SearchPosition,
)
from data_access.validation import Violations, parse_id
from meshkit.errors import FailedPrecondition, FieldViolation, NotFound, invalid
from meshkit.reasons import Reason

PAGE_SIZE_MAX = 1000
SEARCH_PREFIX_MAX = 64
SEARCH_KEY_MAX = 1_000
# Search ranks: the exact username, another username starting with the prefix, a display name
# starting with it.
RANK_EXACT, RANK_USERNAME, RANK_DISPLAY_NAME = 0, 1, 2
_NEWEST = 2**63 - 1

# (follower, followed) pairs whose active follow was added (+1) or removed (-1).
CountChanges = Mapping[tuple[uuid.UUID, uuid.UUID], int]


class SocialGraph:
    """Follows, requests and blocks between accounts, and profile search."""

    def __init__(self, database: Database, feed: ChangeFeed) -> None:
        self._database = database
        self._feed = feed

    async def relationship(self, viewer_id: str, account_id: str) -> Relationship:
        """Return how viewer_id relates to account_id; all false for unknown ids."""
        viewer, account = _ids(viewer_id, account_id, "viewer_id")
        # Every signed-in profile page asks this: the prebuilt statement on the driver directly.
        row = await self._database.fetch_one(_FAST_RELATIONSHIP, _pair(viewer, account))
        if row is None:  # one row always comes back; kept for the type checker
            return Relationship()
        return _relationship(row)

    async def follow(self, follower_id: str, account_id: str) -> Relationship:
        """Follow account_id (ask to when it is private); NotFound when it is gone or blocks the
        follower, FailedPrecondition (PROFILE_BLOCKED) when the follower blocks it."""
        follower, account = _ids(follower_id, account_id, "follower_id")
        async with self._database.transaction() as session:
            locked = await lock_profiles(session, follower, account)
            relation = await _relationship_in(session, follower, account)
            # A deactivated account neither is followed nor follows (its access token may
            # outlive its sessions by a few minutes).
            if relation.blocked_by or not (locked[account].active and locked[follower].active):
                raise _profile_not_found()
            if relation.blocking:
                raise FailedPrecondition(
                    message="you block this account: unblock it first",
                    reason=Reason.PROFILE_BLOCKED,
                )
            status = "pending" if locked[account].private else "active"
            inserted = await session.scalar(
                _INSERT_FOLLOW, {"follower": follower, "followed": account, "status": status}
            )
            position = None
            if inserted == "active":
                position = await adjust_counts(session, {(follower, account): 1})
            relation = await _relationship_in(session, follower, account)
        await self._feed.delivered(position)
        return relation

    async def unfollow(self, follower_id: str, account_id: str) -> Relationship:
        """End following account_id, or the request to; repeating it changes nothing."""
        follower, account = _ids(follower_id, account_id, "follower_id")
        return await self._drop_follow(follower, account, viewer=follower)

    async def remove_follower(self, account_id: str, follower_id: str) -> Relationship:
        """Make follower_id stop following account_id; the relationship is account_id's view."""
        account, follower = _ids(account_id, follower_id, "account_id", other="follower_id")
        return await self._drop_follow(follower, account, viewer=account)

    async def decide_request(
        self, account_id: str, requester_id: str, *, approve: bool
    ) -> Relationship:
        """Approve or deny requester_id's pending request to follow account_id; NotFound
        (FOLLOW_REQUEST_NOT_FOUND) when there is none."""
        account, requester = _ids(account_id, requester_id, "account_id", other="requester_id")
        async with self._database.transaction() as session:
            await lock_profiles(session, account, requester)
            statement = _APPROVE_REQUEST if approve else _DENY_REQUEST
            decided = await session.scalar(statement, {"follower": requester, "followed": account})
            if decided is None:
                raise NotFound(
                    message="no pending follow request from this account",
                    reason=Reason.FOLLOW_REQUEST_NOT_FOUND,
                )
            position = None
            if approve:
                position = await adjust_counts(session, {(requester, account): 1})
            relation = await _relationship_in(session, account, requester)
        await self._feed.delivered(position)
        return relation

    async def block(self, blocker_id: str, account_id: str) -> Relationship:
        """Block account_id, ending follows and requests both ways; NotFound when it is gone."""
        blocker, account = _ids(blocker_id, account_id, "blocker_id")
        async with self._database.transaction() as session:
            await lock_profiles(session, blocker, account)
            pair = _pair(blocker, account)
            ended = (await session.execute(_DELETE_FOLLOWS_BOTH_WAYS, pair)).all()
            position = await adjust_counts(
                session,
                {(row.follower_id, row.followed_id): -1 for row in ended if row.status == "active"},
            )
            await session.execute(_INSERT_BLOCK, {"blocker": blocker, "blocked": account})
            relation = await _relationship_in(session, blocker, account)
        await self._feed.delivered(position)
        return relation

    async def unblock(self, blocker_id: str, account_id: str) -> Relationship:
        """Lift blocker_id's block of account_id; repeating it changes nothing."""
        blocker, account = _ids(blocker_id, account_id, "blocker_id")
        async with self._database.transaction() as session:
            await session.execute(_DELETE_BLOCK, {"blocker": blocker, "blocked": account})
            return await _relationship_in(session, blocker, account)

    async def list_follows(
        self,
        account_id: str,
        kind: FollowList,
        *,
        viewer_id: str = "",
        page_size: int,
        before_position: int = 0,
    ) -> ListedPage:
        """Return a page of account_id's followers, followed accounts or requesters, newest
        first, without accounts that block viewer_id or that viewer_id blocks."""
        _check_page(page_size, before_position)
        account = parse_id(account_id, reason=Reason.PROFILE_NOT_FOUND, what="profile")
        viewer = _optional_id(viewer_id, "viewer_id")
        statement = _LIST_FOLLOWING if kind is FollowList.FOLLOWING else _LIST_FOLLOWERS
        params = {
            "account": account,
            "status": "pending" if kind is FollowList.REQUESTS else "active",
            "viewer": viewer,
            "before": before_position or _NEWEST,
            "limit": page_size + 1,
        }
        return await self._page(statement, params, page_size)

    async def list_blocks(
        self, account_id: str, *, page_size: int, before_position: int = 0
    ) -> ListedPage:
        """Return a page of the accounts account_id blocks, newest block first."""
        _check_page(page_size, before_position)
        account = parse_id(account_id, reason=Reason.PROFILE_NOT_FOUND, what="profile")
        params = {"account": account, "before": before_position or _NEWEST, "limit": page_size + 1}
        return await self._page(_LIST_BLOCKS, params, page_size)

    async def search(
        self,
        prefix: str,
        *,
        viewer_id: str = "",
        page_size: int,
        after: SearchPosition | None = None,
    ) -> SearchPage:
        """Return a page of profiles whose username or display name starts with prefix, ranked
        (the exact username, the other usernames in order, then display names in order),
        without accounts that block viewer_id or that viewer_id blocks."""
        check = Violations()
        check.text("prefix", prefix, max_chars=SEARCH_PREFIX_MAX)
        if after is not None:
            check.text("after.key", after.key, max_chars=SEARCH_KEY_MAX, required=False)
        check.raise_if_any()
        _check_page(page_size, 0)
        viewer = _optional_id(viewer_id, "viewer_id")
        query = prefix.lower()
        params: dict[str, Any] = {
            "query": query,
            "pattern": _like_prefix(query),
            "viewer": viewer,
            "limit": page_size + 1,
        }
        statement = _SEARCH_FIRST
        if after is not None and after.rank == RANK_DISPLAY_NAME:
            statement = _SEARCH_IN_NAMES
            params |= {"after_name": after.key, "after_id": after.account_id}
        elif after is not None:
            statement = _SEARCH_IN_USERNAMES
            params["after_username"] = after.key
        rows = await self._database.fetch_all(statement, params)
        results = [
            Found(
                profile=_summary(row),
                position=SearchPosition(
                    rank=row["rank"], key=row["key"], account_id=row["account_id"]
                ),
            )
            for row in rows[:page_size]
        ]
        return SearchPage(results=results, more=len(rows) > page_size)

    async def _drop_follow(
        self, follower: uuid.UUID, account: uuid.UUID, *, viewer: uuid.UUID
    ) -> Relationship:
        """Delete the follow (or request) of follower to account and answer viewer's view."""
        async with self._database.transaction() as session:
            await lock_profiles(session, follower, account)
            status = await session.scalar(
                _DELETE_FOLLOW, {"follower": follower, "followed": account}
            )
            position = None
            if status == "active":
                position = await adjust_counts(session, {(follower, account): -1})
            other = account if viewer == follower else follower
            relation = await _relationship_in(session, viewer, other)
        await self._feed.delivered(position)
        return relation

    async def _page(self, statement: Any, params: dict[str, Any], page_size: int) -> ListedPage:
        """Run a list query fetching one row more than the page, to tell whether more remain."""
        async with self._database.read() as connection:
            rows = (await connection.execute(statement, params)).all()
        entries = [
            Listed(profile=_summary(row._mapping), position=row.position)
            for row in rows[:page_size]
        ]
        return ListedPage(entries=entries, more=len(rows) > page_size)


async def adjust_counts(session: AsyncSession, changes: CountChanges) -> int | None:
    """Apply follow count changes to the profiles they concern, in the caller's transaction, and
    return the change feed position of the last one (None when nothing changed)."""
    followers: Counter[uuid.UUID] = Counter()
    following: Counter[uuid.UUID] = Counter()
    for (follower, followed), delta in changes.items():
        following[follower] += delta
        followers[followed] += delta
    ids = sorted(set(followers) | set(following))
    if not ids:
        return None
    await session.execute(
        _ADJUST_COUNTS,
        {
            "ids": ids,
            "followers": [followers[i] for i in ids],
            "following": [following[i] for i in ids],
        },
    )
    return await recorded_position(session)


async def lock_with_requesters(session: AsyncSession, account: uuid.UUID) -> None:
    """Lock account's profile together with those of the accounts asking to follow it, in id
    order like every follow change (so that approving them all cannot deadlock with a request
    being withdrawn); NotFound (PROFILE_NOT_FOUND) when the account does not exist."""
    requesters = (await session.scalars(_PENDING_REQUESTERS, {"account": account})).all()
    await lock_profiles(session, account, *requesters)


async def approve_all_requests(session: AsyncSession, account: uuid.UUID) -> None:
    """Turn every pending request to follow account into a follow (it went public), counts
    included, inside the caller's transaction, which holds the locks of lock_with_requesters.
    A request made since then waits for account's lock and finds the account public."""
    approved = (await session.scalars(_APPROVE_ALL, {"account": account})).all()
    await adjust_counts(session, {(requester, account): 1 for requester in approved})


@dataclass(frozen=True)
class Locked:
    """A profile locked for a follow change: whether it is private, and whether its account is
    active (not deactivated by its owner)."""

    private: bool
    active: bool


async def lock_profiles(session: AsyncSession, *accounts: uuid.UUID) -> dict[uuid.UUID, Locked]:
    """Lock the profiles of accounts in id order and say what a follow change needs to know of
    each; NotFound (PROFILE_NOT_FOUND) when one of them does not exist."""
    wanted = sorted(set(accounts))
    rows = (await session.execute(_LOCK_PROFILES, {"ids": wanted})).all()
    locked = {row.account_id: Locked(private=row.private, active=row.active) for row in rows}
    if len(locked) != len(wanted):
        raise _profile_not_found()
    return locked


async def _relationship_in(
    session: AsyncSession, viewer: uuid.UUID, account: uuid.UUID
) -> Relationship:
    """Read how viewer relates to account inside the session's transaction."""
    row = (await session.execute(_RELATIONSHIP, _pair(viewer, account))).one()
    return _relationship(row._mapping)


def _relationship(row: Mapping[Any, Any]) -> Relationship:
    """Build a relationship from the row of _RELATIONSHIP."""
    return Relationship(
        following=row["outgoing"] == "active",
        requested=row["outgoing"] == "pending",
        followed_by=row["incoming"] == "active",
        requested_by=row["incoming"] == "pending",
        blocking=row["blocking"],
        blocked_by=row["blocked_by"],
    )


def _summary(row: Mapping[Any, Any]) -> ProfileSummary:
    """Build a profile summary from a list or search row."""
    return ProfileSummary(
        account_id=row["account_id"],
        username=row["username"],
        display_name=row["display_name"],
        avatar_image_id=row["avatar_image_id"],
        private=row["private"],
    )


def _ids(
    first: str, second: str, first_field: str, *, other: str = "account_id"
) -> tuple[uuid.UUID, uuid.UUID]:
    """Parse the two account ids of a pair; the same account twice is InvalidArgument."""
    one = parse_id(first, reason=Reason.PROFILE_NOT_FOUND, what="profile")
    two = parse_id(second, reason=Reason.PROFILE_NOT_FOUND, what="profile")
    if one == two:
        raise invalid([FieldViolation(other, f"must differ from {first_field}")])
    return one, two


def _optional_id(value: str, field: str) -> uuid.UUID | None:
    """Parse an optional account id; empty is None, a malformed one InvalidArgument."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise invalid([FieldViolation(field, "must be an account id")]) from None


def _check_page(page_size: int, before_position: int) -> None:
    """InvalidArgument unless 1 <= page_size <= PAGE_SIZE_MAX and before_position >= 0."""
    check = Violations()
    check.page(page_size, before_position, maximum=PAGE_SIZE_MAX, before_field="before_position")
    check.raise_if_any()


def _pair(viewer: uuid.UUID, account: uuid.UUID) -> dict[str, uuid.UUID]:
    """Parameters of the statements about two accounts."""
    return {"viewer": viewer, "account": account}


def _like_prefix(value: str) -> str:
    """A LIKE pattern matching strings that start with value taken literally."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def _profile_not_found() -> NotFound:
    """The answer for an account that does not exist (or must look so)."""
    return NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND)


def _status_of(follower: str, followed: str) -> ScalarSelect[str]:
    """The status of the follow between two bound accounts, as a scalar subquery."""
    return (
        select(Follow.status)
        .where(Follow.follower_id == bindparam(follower), Follow.followed_id == bindparam(followed))
        .scalar_subquery()
    )


def _blocks(blocker: str, blocked: str) -> Exists:
    """Whether one bound account blocks the other."""
    return exists().where(
        Block.blocker_id == bindparam(blocker), Block.blocked_id == bindparam(blocked)
    )


# How a viewer and an account relate: the statuses of the follows both ways ('' for none) and
# the blocks both ways. Run inside a change's transaction, and prebuilt for Database.fetch_one
# (which binds only named parameters, hence the literal '').
_NONE: ColumnClause[str] = literal_column("''")
_RELATIONSHIP = select(
    func.coalesce(_status_of("viewer", "account"), _NONE).label("outgoing"),
    func.coalesce(_status_of("account", "viewer"), _NONE).label("incoming"),
    _blocks("viewer", "account").label("blocking"),
    _blocks("account", "viewer").label("blocked_by"),
)
_FAST_RELATIONSHIP = FastQuery.of(_RELATIONSHIP)
_LOCK_PROFILES = text(
    "SELECT p.account_id, p.private, a.deactivated_at IS NULL AS active "
    "FROM profiles p JOIN accounts a ON a.id = p.account_id "
    "WHERE p.account_id = ANY(:ids) ORDER BY p.account_id FOR UPDATE OF p"
)
_INSERT_FOLLOW = text(
    "INSERT INTO follows (follower_id, followed_id, status) VALUES (:follower, :followed, :status) "
    "ON CONFLICT DO NOTHING RETURNING status"
)
_DELETE_FOLLOW = text(
    "DELETE FROM follows WHERE follower_id = :follower AND followed_id = :followed RETURNING status"
)
# Approval renews the position: the new follower is the newest entry of both lists.
_APPROVE_REQUEST = text(
    "UPDATE follows SET status = 'active', "
    "position = nextval(pg_get_serial_sequence('follows', 'position')) "
    "WHERE follower_id = :follower AND followed_id = :followed AND status = 'pending' "
    "RETURNING follower_id"
)
_DENY_REQUEST = text(
    "DELETE FROM follows "
    "WHERE follower_id = :follower AND followed_id = :followed AND status = 'pending' "
    "RETURNING follower_id"
)
_PENDING_REQUESTERS = text(
    "SELECT follower_id FROM follows WHERE followed_id = :account AND status = 'pending'"
)
_APPROVE_ALL = text(
    "UPDATE follows SET status = 'active', "
    "position = nextval(pg_get_serial_sequence('follows', 'position')) "
    "WHERE followed_id = :account AND status = 'pending' RETURNING follower_id"
)
_DELETE_FOLLOWS_BOTH_WAYS = text(
    "DELETE FROM follows "
    "WHERE (follower_id = :viewer AND followed_id = :account) "
    "   OR (follower_id = :account AND followed_id = :viewer) "
    "RETURNING follower_id, followed_id, status"
)
_INSERT_BLOCK = text(
    "INSERT INTO blocks (blocker_id, blocked_id) VALUES (:blocker, :blocked) ON CONFLICT DO NOTHING"
)
_DELETE_BLOCK = text("DELETE FROM blocks WHERE blocker_id = :blocker AND blocked_id = :blocked")
_ADJUST_COUNTS = text(
    """
    UPDATE profiles AS p
    SET follower_count = p.follower_count + d.followers,
        following_count = p.following_count + d.following,
        updated_at = clock_timestamp()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:followers AS bigint[]), CAST(:following AS bigint[]))
         AS d(id, followers, following)
    WHERE p.account_id = d.id
    """
)
# Neither side of a listed pair may block the other: a block hides each from the other.
_NOT_BLOCKED = """
    AND NOT EXISTS (
        SELECT 1 FROM blocks b
        WHERE (b.blocker_id = CAST(:viewer AS uuid) AND b.blocked_id = {other})
           OR (b.blocker_id = {other} AND b.blocked_id = CAST(:viewer AS uuid))
    )
"""
_SUMMARY_COLUMNS = "p.account_id, a.username, p.display_name, p.avatar_image_id, p.private"


def _follow_list(own: str, other: str) -> Any:
    """The page query of one direction of follows: rows where `own` is the account."""
    return text(
        f"""
        SELECT f.position, {_SUMMARY_COLUMNS}
        FROM follows f
        JOIN profiles p ON p.account_id = f.{other}
        JOIN accounts a ON a.id = f.{other}
        WHERE f.{own} = :account AND f.status = :status AND f.position < :before
          AND a.deactivated_at IS NULL
        {_NOT_BLOCKED.format(other=f"f.{other}")}
        ORDER BY f.position DESC
        LIMIT :limit
        """  # noqa: S608 (only the fixed column names above are formatted in)
    )


_LIST_FOLLOWERS = _follow_list("followed_id", "follower_id")
_LIST_FOLLOWING = _follow_list("follower_id", "followed_id")
_LIST_BLOCKS = text(
    f"""
    SELECT k.position, {_SUMMARY_COLUMNS}
    FROM blocks k
    JOIN profiles p ON p.account_id = k.blocked_id
    JOIN accounts a ON a.id = k.blocked_id
    WHERE k.blocker_id = :account AND k.position < :before AND a.deactivated_at IS NULL
    ORDER BY k.position DESC
    LIMIT :limit
    """  # noqa: S608 (only the fixed column list is formatted in)
)


def _search(*, usernames: bool, after_username: bool, after_name: bool) -> TextClause:
    """The search statement for one kind of page: a first page (no keyset), a page continuing
    in the username group, or one continuing in the display-name group (the username group is
    then done and left out).

    Each group reads at most a page from a byte-order index whose order is the group's own order
    (usernames: the exact one sorts first; display names: then by account id), starting where
    the prefix's range starts, or after the keyset. The three kinds are three statements rather
    than one with optional conditions: an always-true keyset (after '', the nil id) would make
    PostgreSQL start the display-name scan at the beginning of the index.
    """
    username_keyset = (
        'AND a.username COLLATE "C" > CAST(:after_username AS text) COLLATE "C"'
        if after_username
        else ""
    )
    name_keyset = (
        'AND (lower(p.display_name) COLLATE "C", p.account_id) '
        '> (CAST(:after_name AS text) COLLATE "C", CAST(:after_id AS uuid))'
        if after_name
        else ""
    )
    by_username = f"""
    , by_username AS (
        SELECT CASE WHEN a.username = :query THEN {RANK_EXACT} ELSE {RANK_USERNAME} END AS rank,
               a.username COLLATE "C" AS key, a.id AS account_id
        FROM accounts a
        WHERE a.username COLLATE "C" LIKE :pattern {username_keyset}
          AND a.deactivated_at IS NULL
          AND a.id NOT IN (SELECT id FROM blocked)
        ORDER BY a.username COLLATE "C"
        LIMIT :limit
    )"""  # noqa: S608 (only fixed fragments are formatted in)
    groups = (
        "SELECT * FROM by_username UNION ALL SELECT * FROM by_name"
        if usernames
        else ("SELECT * FROM by_name")
    )
    return text(
        f"""
        WITH blocked AS (
            SELECT blocked_id AS id FROM blocks WHERE blocker_id = CAST(:viewer AS uuid)
            UNION ALL
            SELECT blocker_id FROM blocks WHERE blocked_id = CAST(:viewer AS uuid)
        ){by_username if usernames else ""}
        , by_name AS (
            SELECT {RANK_DISPLAY_NAME} AS rank, lower(p.display_name) COLLATE "C" AS key,
                   p.account_id
            FROM profiles p JOIN accounts a ON a.id = p.account_id
            WHERE lower(p.display_name) COLLATE "C" LIKE :pattern {name_keyset}
              AND NOT (a.username COLLATE "C" LIKE :pattern)
              AND a.deactivated_at IS NULL
              AND p.account_id NOT IN (SELECT id FROM blocked)
            ORDER BY lower(p.display_name) COLLATE "C", p.account_id
            LIMIT :limit
        )
        SELECT r.rank, r.key, {_SUMMARY_COLUMNS}
        FROM ({groups}) r
        JOIN accounts a ON a.id = r.account_id
        JOIN profiles p ON p.account_id = r.account_id
        ORDER BY r.rank, r.key, r.account_id
        LIMIT :limit
        """  # noqa: S608 (only fixed fragments are formatted in)
    )


# Prebuilt and run on the driver directly (Database.fetch_all): a search is a hot read.
_SEARCH_FIRST = FastQuery.of(_search(usernames=True, after_username=False, after_name=False))
_SEARCH_IN_USERNAMES = FastQuery.of(_search(usernames=True, after_username=True, after_name=False))
_SEARCH_IN_NAMES = FastQuery.of(_search(usernames=False, after_username=False, after_name=True))
