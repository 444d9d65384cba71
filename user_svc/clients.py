"""Outbound calls of user_svc: profiles and the social graph in data_access."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.clients import PeerCaller
from meshkit.timestamps import to_datetime, to_timestamp
from user_svc.graph import FollowList, Found, Listed, Relationship, SearchCursor, Summary
from user_svc.moderation import AccountStatus, AuditEntry
from user_svc.profiles import Profile, ProfileChanges

_FOLLOW_LISTS = {
    FollowList.FOLLOWERS: dataaccess_pb2.FOLLOW_LIST_KIND_FOLLOWERS,
    FollowList.FOLLOWING: dataaccess_pb2.FOLLOW_LIST_KIND_FOLLOWING,
    FollowList.REQUESTS: dataaccess_pb2.FOLLOW_LIST_KIND_REQUESTS,
}


class DataAccessProfiles:
    """ProfileStore backed by data_access's ProfileStoreService."""

    def __init__(self, channel: grpc.aio.Channel, peer: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.ProfileStoreServiceStub(channel)
        self._peer = peer

    async def get_by_account_id(self, account_id: str) -> Profile:
        """Return the profile of an account or raise NotFound."""
        request = dataaccess_pb2.GetProfileRequest(account_id=account_id)
        response = await self._peer.unary(self._stub.GetProfile, request)
        return profile_from_record(response.profile)

    async def get_by_username(self, username: str) -> Profile:
        """Return the profile with a normalised username or raise NotFound."""
        request = dataaccess_pb2.GetProfileRequest(username=username)
        response = await self._peer.unary(self._stub.GetProfile, request)
        return profile_from_record(response.profile)

    async def update(self, account_id: str, changes: ProfileChanges) -> Profile:
        """Apply changes to an account's profile and return the result, or raise NotFound."""
        request = dataaccess_pb2.UpdateProfileRequest(
            account_id=account_id,
            display_name=changes.display_name,
            bio=changes.bio,
            website=changes.website,
            pronouns=changes.pronouns,
            private=changes.private,
        )
        response = await self._peer.unary(self._stub.UpdateProfile, request)
        return profile_from_record(response.profile)

    async def change_username(
        self, account_id: str, username: str, *, cooldown_seconds: float
    ) -> Profile:
        """Rename an account and return its profile."""
        request = dataaccess_pb2.ChangeUsernameRequest(
            account_id=account_id, username=username, cooldown=_duration(cooldown_seconds)
        )
        response = await self._peer.unary(self._stub.ChangeUsername, request)
        return profile_from_record(response.profile)


class DataAccessGraph:
    """GraphStore backed by data_access's SocialGraphService."""

    def __init__(self, channel: grpc.aio.Channel, peer: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.SocialGraphServiceStub(channel)
        self._peer = peer

    async def relationship(self, viewer_id: str, account_id: str) -> Relationship:
        """Return how viewer_id relates to account_id."""
        request = dataaccess_pb2.GetRelationshipRequest(viewer_id=viewer_id, account_id=account_id)
        response = await self._peer.unary(self._stub.GetRelationship, request)
        return _relationship(response.relationship)

    async def follow(self, follower_id: str, account_id: str) -> Relationship:
        """Follow or ask to follow."""
        request = dataaccess_pb2.FollowRequest(follower_id=follower_id, account_id=account_id)
        response = await self._peer.unary(self._stub.Follow, request)
        return _relationship(response.relationship)

    async def unfollow(self, follower_id: str, account_id: str) -> Relationship:
        """End a follow or a request."""
        request = dataaccess_pb2.UnfollowRequest(follower_id=follower_id, account_id=account_id)
        response = await self._peer.unary(self._stub.Unfollow, request)
        return _relationship(response.relationship)

    async def decide_request(
        self, account_id: str, requester_id: str, *, approve: bool
    ) -> Relationship:
        """Approve or deny a pending request."""
        request = dataaccess_pb2.DecideFollowRequestRequest(
            account_id=account_id, requester_id=requester_id, approve=approve
        )
        response = await self._peer.unary(self._stub.DecideFollowRequest, request)
        return _relationship(response.relationship)

    async def remove_follower(self, account_id: str, follower_id: str) -> Relationship:
        """Make follower_id stop following account_id."""
        request = dataaccess_pb2.RemoveFollowerRequest(
            account_id=account_id, follower_id=follower_id
        )
        response = await self._peer.unary(self._stub.RemoveFollower, request)
        return _relationship(response.relationship)

    async def block(self, blocker_id: str, account_id: str) -> Relationship:
        """Block an account."""
        request = dataaccess_pb2.BlockRequest(blocker_id=blocker_id, account_id=account_id)
        response = await self._peer.unary(self._stub.Block, request)
        return _relationship(response.relationship)

    async def unblock(self, blocker_id: str, account_id: str) -> Relationship:
        """Lift a block."""
        request = dataaccess_pb2.UnblockRequest(blocker_id=blocker_id, account_id=account_id)
        response = await self._peer.unary(self._stub.Unblock, request)
        return _relationship(response.relationship)

    async def list_follows(
        self, account_id: str, kind: FollowList, *, viewer_id: str, size: int, before: int
    ) -> tuple[list[Listed], bool]:
        """Return a page of a follow list and whether more remain."""
        request = dataaccess_pb2.ListFollowsRequest(
            account_id=account_id,
            kind=_FOLLOW_LISTS[kind],
            viewer_id=viewer_id,
            page_size=size,
            before_position=before,
        )
        response = await self._peer.unary(self._stub.ListFollows, request)
        return _listed(response.entries), response.more

    async def list_blocks(
        self, account_id: str, *, size: int, before: int
    ) -> tuple[list[Listed], bool]:
        """Return a page of an account's blocks and whether more remain."""
        request = dataaccess_pb2.ListBlocksRequest(
            account_id=account_id, page_size=size, before_position=before
        )
        response = await self._peer.unary(self._stub.ListBlocks, request)
        return _listed(response.entries), response.more

    async def search(
        self, prefix: str, *, viewer_id: str, size: int, after: SearchCursor | None
    ) -> tuple[list[Found], bool]:
        """Return ranked matches of prefix after the cursor and whether more follow."""
        request = dataaccess_pb2.SearchProfilesRequest(
            prefix=prefix, viewer_id=viewer_id, page_size=size
        )
        if after is not None:
            request.after.CopyFrom(
                dataaccess_pb2.SearchPosition(
                    rank=after.rank, key=after.key, account_id=after.account_id
                )
            )
        response = await self._peer.unary(self._stub.SearchProfiles, request)
        found = [
            Found(
                summary=_summary(result.profile),
                rank=result.position.rank,
                key=result.position.key,
            )
            for result in response.results
        ]
        return found, response.more


class DataAccessLifecycle:
    """LifecycleStore backed by data_access's AccountLifecycleService."""

    def __init__(self, channel: grpc.aio.Channel, peer: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.AccountLifecycleServiceStub(channel)
        self._peer = peer

    async def deactivate(self, account_id: str, *, grace_seconds: float) -> datetime:
        """Deactivate an account; return when it will be deleted for good."""
        request = dataaccess_pb2.DeactivateAccountRequest(
            account_id=account_id, grace=_duration(grace_seconds)
        )
        response = await self._peer.unary(self._stub.DeactivateAccount, request)
        return to_datetime(response.delete_time)


class DataAccessModeration:
    """ModerationStore backed by data_access's ModerationService."""

    def __init__(self, channel: grpc.aio.Channel, peer: PeerCaller) -> None:
        self._stub = dataaccess_pb2_grpc.ModerationServiceStub(channel)
        self._peer = peer

    async def status(self, actor_id: str, username: str) -> AccountStatus:
        """Return an account's status."""
        request = dataaccess_pb2.GetAccountStatusRequest(actor_id=actor_id, username=username)
        response = await self._peer.unary(self._stub.GetAccountStatus, request)
        return _account_status(response.status)

    async def block(
        self, actor_id: str, username: str, *, until: datetime, reason: str
    ) -> AccountStatus:
        """Block an account until a time."""
        request = dataaccess_pb2.BlockAccountRequest(
            actor_id=actor_id, username=username, until=to_timestamp(until), reason=reason
        )
        response = await self._peer.unary(self._stub.BlockAccount, request)
        return _account_status(response.status)

    async def unblock(self, actor_id: str, username: str, *, reason: str) -> AccountStatus:
        """Lift an account's block."""
        request = dataaccess_pb2.UnblockAccountRequest(
            actor_id=actor_id, username=username, reason=reason
        )
        response = await self._peer.unary(self._stub.UnblockAccount, request)
        return _account_status(response.status)

    async def audit_log(
        self, actor_id: str, *, username: str, size: int, before_id: int
    ) -> tuple[list[AuditEntry], bool]:
        """Return a page of the audit log and whether more remain."""
        request = dataaccess_pb2.ListAuditEventsRequest(
            actor_id=actor_id, username=username, page_size=size, before_id=before_id
        )
        response = await self._peer.unary(self._stub.ListAuditEvents, request)
        entries = [
            AuditEntry(
                id=event.id,
                create_time=to_datetime(event.create_time),
                actor_username=event.actor_username,
                action=event.action,
                account_username=event.account_username,
                reason=event.reason,
                blocked_till=_optional_time(event, "blocked_till"),
            )
            for event in response.events
        ]
        return entries, response.more


def profile_from_record(record: dataaccess_pb2.ProfileRecord) -> Profile:
    """Turn a stored profile record into the domain profile."""
    return Profile(
        account_id=record.account_id,
        username=record.username,
        display_name=record.display_name,
        bio=record.bio,
        avatar_image_id=record.avatar_image_id,
        create_time=to_datetime(record.create_time),
        update_time=to_datetime(record.update_time),
        website=record.website,
        pronouns=record.pronouns,
        private=record.private,
        follower_count=record.follower_count,
        following_count=record.following_count,
        post_count=record.post_count,
        email=record.email,
    )


def _duration(seconds: float) -> Duration:
    """A Duration message of seconds."""
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def _optional_time(message: Message, field: str) -> datetime | None:
    """A Timestamp field as a datetime, or None when unset."""
    if not message.HasField(field):
        return None
    return to_datetime(getattr(message, field))


def _account_status(message: dataaccess_pb2.AccountStatus) -> AccountStatus:
    """Turn a stored account status into the domain one."""
    return AccountStatus(
        account_id=message.account_id,
        username=message.username,
        email=message.email,
        role=message.role,
        create_time=to_datetime(message.create_time),
        email_verified=message.email_verified,
        blocked_till=_optional_time(message, "blocked_till"),
        blocked_reason=message.blocked_reason,
    )


def _relationship(message: dataaccess_pb2.Relationship) -> Relationship:
    """Turn a stored relationship into the domain one."""
    return Relationship(
        following=message.following,
        followed_by=message.followed_by,
        requested=message.requested,
        requested_by=message.requested_by,
        blocking=message.blocking,
        blocked_by=message.blocked_by,
    )


def _summary(message: dataaccess_pb2.ProfileSummary) -> Summary:
    """Turn a stored summary into the domain one."""
    return Summary(
        account_id=message.account_id,
        username=message.username,
        display_name=message.display_name,
        avatar_image_id=message.avatar_image_id,
        private=message.private,
    )


def _listed(entries: Iterable[dataaccess_pb2.ListedProfile]) -> list[Listed]:
    """Turn stored list entries into domain ones."""
    return [Listed(summary=_summary(entry.profile), position=entry.position) for entry in entries]
