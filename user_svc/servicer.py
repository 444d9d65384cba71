"""UserService over gRPC: authenticate, translate protobuf to domain calls and back."""

from __future__ import annotations

from typing import Any

import grpc

from meshgram.user.v1 import user_pb2, user_pb2_grpc
from meshkit.access_tokens import AccessTokenVerifier, Principal, require_may_change
from meshkit.errors import FieldViolation, invalid
from meshkit.timestamps import optional_datetime, optional_timestamp, to_timestamp
from user_svc.graph import FollowList, Page, Relationship, SocialService, Summary, Viewer
from user_svc.lifecycle import AccountDeletion
from user_svc.moderation import AccountStatus, ModerationService
from user_svc.profiles import Profile, ProfileInput, ProfileService

Context = grpc.aio.ServicerContext[Any, Any]

_VIEWERS = {
    Viewer.OWNER: user_pb2.VIEWER_OWNER,
    Viewer.FOLLOWER: user_pb2.VIEWER_FOLLOWER,
    Viewer.SIGNED_IN: user_pb2.VIEWER_SIGNED_IN,
    Viewer.SIGNED_OUT: user_pb2.VIEWER_SIGNED_OUT,
}


class UserServicer(user_pb2_grpc.UserServiceServicer):
    """Implements meshgram.user.v1.UserService (method names are the proto's, hence N802)."""

    def __init__(
        self,
        profiles: ProfileService,
        social: SocialService,
        moderation: ModerationService,
        deletion: AccountDeletion,
        verifier: AccessTokenVerifier,
        *,
        unverified_email_may: str = "edit_profile",
    ) -> None:
        self._profiles = profiles
        self._social = social
        self._moderation = moderation
        self._deletion = deletion
        self._verifier = verifier
        self._unverified_may = unverified_email_may

    async def GetMyProfile(  # noqa: N802
        self, request: user_pb2.GetMyProfileRequest, context: Context
    ) -> user_pb2.GetMyProfileResponse:
        """Return the caller's profile."""
        principal = await self._caller(context)
        profile = await self._profiles.my_profile(principal.account_id)
        return user_pb2.GetMyProfileResponse(profile=profile_message(profile))

    async def GetProfile(  # noqa: N802
        self, request: user_pb2.GetProfileRequest, context: Context
    ) -> user_pb2.GetProfileResponse:
        """Return a profile page as the caller (or a signed-out visitor) sees it."""
        principal = await self._verifier.authenticate_if_present(context.invocation_metadata())
        viewer_id = None if principal is None else principal.account_id
        page = await self._social.profile_page(request.username, viewer_id)
        return user_pb2.GetProfileResponse(
            profile=profile_message(page.profile),
            relationship=_relationship(page.relationship),
            viewer=_VIEWERS[page.viewer],
            content_hidden=page.content_hidden,
        )

    async def UpdateMyProfile(  # noqa: N802
        self, request: user_pb2.UpdateMyProfileRequest, context: Context
    ) -> user_pb2.UpdateMyProfileResponse:
        """Change the caller's profile fields: the masked ones, else the set ones."""
        principal = await self._changer(context)
        if not request.HasField("profile"):
            # The proto marks it REQUIRED: a request without it is a client bug, not a no-op.
            raise invalid([FieldViolation("profile", "is required")])
        sent = request.profile
        profile = await self._profiles.update_my_profile(
            principal.account_id,
            request.update_mask.paths,
            ProfileInput(
                display_name=sent.display_name,
                bio=sent.bio,
                website=sent.website,
                pronouns=sent.pronouns,
                private=sent.private,
            ),
        )
        return user_pb2.UpdateMyProfileResponse(profile=profile_message(profile))

    async def ChangeUsername(  # noqa: N802
        self, request: user_pb2.ChangeUsernameRequest, context: Context
    ) -> user_pb2.ChangeUsernameResponse:
        """Rename the caller."""
        principal = await self._changer(context)
        profile = await self._profiles.change_username(principal.account_id, request.username)
        return user_pb2.ChangeUsernameResponse(profile=profile_message(profile))

    async def FollowProfile(  # noqa: N802
        self, request: user_pb2.FollowProfileRequest, context: Context
    ) -> user_pb2.FollowProfileResponse:
        """Follow, or ask to follow, an account."""
        principal = await self._changer(context)
        relation = await self._social.follow(principal.account_id, request.username)
        return user_pb2.FollowProfileResponse(relationship=_relationship(relation))

    async def UnfollowProfile(  # noqa: N802
        self, request: user_pb2.UnfollowProfileRequest, context: Context
    ) -> user_pb2.UnfollowProfileResponse:
        """Stop following an account, or withdraw the request."""
        principal = await self._caller(context)
        relation = await self._social.unfollow(principal.account_id, request.username)
        return user_pb2.UnfollowProfileResponse(relationship=_relationship(relation))

    async def ListFollowers(  # noqa: N802
        self, request: user_pb2.ListFollowersRequest, context: Context
    ) -> user_pb2.ListFollowersResponse:
        """Return a page of a profile's followers."""
        principal = await self._caller(context)
        page = await self._social.follow_list(
            principal.account_id,
            request.username,
            FollowList.FOLLOWERS,
            size=request.page_size,
            token=request.page_token,
        )
        return user_pb2.ListFollowersResponse(**_page(page))

    async def ListFollowing(  # noqa: N802
        self, request: user_pb2.ListFollowingRequest, context: Context
    ) -> user_pb2.ListFollowingResponse:
        """Return a page of the accounts a profile follows."""
        principal = await self._caller(context)
        page = await self._social.follow_list(
            principal.account_id,
            request.username,
            FollowList.FOLLOWING,
            size=request.page_size,
            token=request.page_token,
        )
        return user_pb2.ListFollowingResponse(**_page(page))

    async def ListFollowRequests(  # noqa: N802
        self, request: user_pb2.ListFollowRequestsRequest, context: Context
    ) -> user_pb2.ListFollowRequestsResponse:
        """Return a page of the accounts asking to follow the caller."""
        principal = await self._caller(context)
        page = await self._social.follow_requests(
            principal.account_id, size=request.page_size, token=request.page_token
        )
        return user_pb2.ListFollowRequestsResponse(**_page(page))

    async def ApproveFollowRequest(  # noqa: N802
        self, request: user_pb2.ApproveFollowRequestRequest, context: Context
    ) -> user_pb2.ApproveFollowRequestResponse:
        """Approve a pending follow request."""
        principal = await self._caller(context)
        relation = await self._social.decide_request(
            principal.account_id, request.username, approve=True
        )
        return user_pb2.ApproveFollowRequestResponse(relationship=_relationship(relation))

    async def DenyFollowRequest(  # noqa: N802
        self, request: user_pb2.DenyFollowRequestRequest, context: Context
    ) -> user_pb2.DenyFollowRequestResponse:
        """Deny a pending follow request."""
        principal = await self._caller(context)
        relation = await self._social.decide_request(
            principal.account_id, request.username, approve=False
        )
        return user_pb2.DenyFollowRequestResponse(relationship=_relationship(relation))

    async def RemoveFollower(  # noqa: N802
        self, request: user_pb2.RemoveFollowerRequest, context: Context
    ) -> user_pb2.RemoveFollowerResponse:
        """Make an account stop following the caller."""
        principal = await self._caller(context)
        relation = await self._social.remove_follower(principal.account_id, request.username)
        return user_pb2.RemoveFollowerResponse(relationship=_relationship(relation))

    async def BlockProfile(  # noqa: N802
        self, request: user_pb2.BlockProfileRequest, context: Context
    ) -> user_pb2.BlockProfileResponse:
        """Block an account."""
        principal = await self._caller(context)
        relation = await self._social.block(principal.account_id, request.username)
        return user_pb2.BlockProfileResponse(relationship=_relationship(relation))

    async def UnblockProfile(  # noqa: N802
        self, request: user_pb2.UnblockProfileRequest, context: Context
    ) -> user_pb2.UnblockProfileResponse:
        """Lift a block."""
        principal = await self._caller(context)
        relation = await self._social.unblock(principal.account_id, request.username)
        return user_pb2.UnblockProfileResponse(relationship=_relationship(relation))

    async def ListBlockedProfiles(  # noqa: N802
        self, request: user_pb2.ListBlockedProfilesRequest, context: Context
    ) -> user_pb2.ListBlockedProfilesResponse:
        """Return a page of the accounts the caller blocks."""
        principal = await self._caller(context)
        page = await self._social.blocked(
            principal.account_id, size=request.page_size, token=request.page_token
        )
        return user_pb2.ListBlockedProfilesResponse(**_page(page))

    async def SearchProfiles(  # noqa: N802
        self, request: user_pb2.SearchProfilesRequest, context: Context
    ) -> user_pb2.SearchProfilesResponse:
        """Return a page of profiles whose username or display name starts with the query."""
        principal = await self._caller(context)
        page = await self._social.search(
            principal.account_id, request.query, size=request.page_size, token=request.page_token
        )
        return user_pb2.SearchProfilesResponse(**_page(page))

    async def DeleteMyAccount(  # noqa: N802
        self, request: user_pb2.DeleteMyAccountRequest, context: Context
    ) -> user_pb2.DeleteMyAccountResponse:
        """Deactivate the caller's account; say when it will be deleted for good."""
        principal = await self._caller(context)
        delete_time = await self._deletion.delete_my_account(principal)
        return user_pb2.DeleteMyAccountResponse(delete_time=to_timestamp(delete_time))

    async def GetAccountStatus(  # noqa: N802
        self, request: user_pb2.GetAccountStatusRequest, context: Context
    ) -> user_pb2.GetAccountStatusResponse:
        """Return an account's status to an admin."""
        principal = await self._caller(context)
        status = await self._moderation.status(principal.account_id, request.username)
        return user_pb2.GetAccountStatusResponse(status=_account_status(status))

    async def BlockAccount(  # noqa: N802
        self, request: user_pb2.BlockAccountRequest, context: Context
    ) -> user_pb2.BlockAccountResponse:
        """Block an account until a time, for an admin."""
        principal = await self._caller(context)
        until = optional_datetime(request, "until")
        status = await self._moderation.block(
            principal.account_id, request.username, until=until, reason=request.reason
        )
        return user_pb2.BlockAccountResponse(status=_account_status(status))

    async def UnblockAccount(  # noqa: N802
        self, request: user_pb2.UnblockAccountRequest, context: Context
    ) -> user_pb2.UnblockAccountResponse:
        """Lift an account's block, for an admin."""
        principal = await self._caller(context)
        status = await self._moderation.unblock(
            principal.account_id, request.username, reason=request.reason
        )
        return user_pb2.UnblockAccountResponse(status=_account_status(status))

    async def ListAuditEvents(  # noqa: N802
        self, request: user_pb2.ListAuditEventsRequest, context: Context
    ) -> user_pb2.ListAuditEventsResponse:
        """Return a page of the audit log to an admin."""
        principal = await self._caller(context)
        page = await self._moderation.audit_log(
            principal.account_id,
            username=request.username,
            size=request.page_size,
            token=request.page_token,
        )
        events = [
            user_pb2.AuditEvent(
                create_time=to_timestamp(entry.create_time),
                actor_username=entry.actor_username,
                action=entry.action,
                account_username=entry.account_username,
                reason=entry.reason,
                blocked_till=optional_timestamp(entry.blocked_till),
            )
            for entry in page.entries
        ]
        return user_pb2.ListAuditEventsResponse(events=events, next_page_token=page.next_page_token)

    async def _caller(self, context: Context) -> Principal:
        """The signed-in caller; Unauthenticated without a valid access token."""
        return await self._verifier.authenticate(context.invocation_metadata())

    async def _changer(self, context: Context) -> Principal:
        """The signed-in caller, when the deployment lets it change what others see (an
        unverified email may be limited to reading)."""
        principal = await self._caller(context)
        require_may_change(principal, self._unverified_may)
        return principal


def profile_message(profile: Profile) -> user_pb2.Profile:
    """Build the public Profile message from a domain profile (its email as given: callers pass
    profile.without_private_fields() to anyone but the owner)."""
    return user_pb2.Profile(
        account_id=profile.account_id,
        username=profile.username,
        display_name=profile.display_name,
        bio=profile.bio,
        avatar_image_id=profile.avatar_image_id,
        create_time=to_timestamp(profile.create_time),
        update_time=to_timestamp(profile.update_time),
        website=profile.website,
        pronouns=profile.pronouns,
        private=profile.private,
        follower_count=profile.follower_count,
        following_count=profile.following_count,
        post_count=profile.post_count,
        email=profile.email,
    )


def _account_status(status: AccountStatus) -> user_pb2.AccountStatus:
    """Build the AccountStatus message."""
    return user_pb2.AccountStatus(
        account_id=status.account_id,
        username=status.username,
        email=status.email,
        role=status.role,
        create_time=to_timestamp(status.create_time),
        email_verified=status.email_verified,
        blocked_till=optional_timestamp(status.blocked_till),
        blocked_reason=status.blocked_reason,
    )


def _relationship(relation: Relationship) -> user_pb2.Relationship:
    """Build the Relationship message (never telling whether the other account blocks)."""
    return user_pb2.Relationship(
        following=relation.following,
        followed_by=relation.followed_by,
        requested=relation.requested,
        requested_by=relation.requested_by,
        blocking=relation.blocking,
    )


def _summary(summary: Summary) -> user_pb2.ProfileSummary:
    """Build the ProfileSummary message."""
    return user_pb2.ProfileSummary(
        account_id=summary.account_id,
        username=summary.username,
        display_name=summary.display_name,
        avatar_image_id=summary.avatar_image_id,
        private=summary.private,
    )


def _page(page: Page) -> dict[str, Any]:
    """The fields every list response shares."""
    return {
        "profiles": [_summary(summary) for summary in page.profiles],
        "next_page_token": page.next_page_token,
    }
