"""UserService over gRPC: authenticate, translate protobuf to domain calls and back."""

from __future__ import annotations

from typing import Any

import grpc

from meshgram.user.v1 import user_pb2, user_pb2_grpc
from meshkit.access_tokens import AccessTokenVerifier, require_may_change
from meshkit.errors import FieldViolation, invalid
from meshkit.timestamps import to_timestamp
from user_svc.profiles import Profile, ProfileService

Context = grpc.aio.ServicerContext[Any, Any]


class UserServicer(user_pb2_grpc.UserServiceServicer):
    """Implements meshgram.user.v1.UserService (method names are the proto's, hence N802)."""

    def __init__(
        self,
        profiles: ProfileService,
        verifier: AccessTokenVerifier,
        *,
        unverified_email_may: str = "edit_profile",
    ) -> None:
        self._profiles = profiles
        self._verifier = verifier
        self._unverified_may = unverified_email_may

    async def GetMyProfile(  # noqa: N802
        self, request: user_pb2.GetMyProfileRequest, context: Context
    ) -> user_pb2.GetMyProfileResponse:
        """Return the caller's profile."""
        principal = await self._verifier.authenticate(context.invocation_metadata())
        profile = await self._profiles.my_profile(principal.account_id)
        return user_pb2.GetMyProfileResponse(profile=profile_message(profile))

    async def GetProfile(  # noqa: N802
        self, request: user_pb2.GetProfileRequest, context: Context
    ) -> user_pb2.GetProfileResponse:
        """Return a profile by username."""
        await self._verifier.authenticate(context.invocation_metadata())
        profile = await self._profiles.profile_by_username(request.username)
        return user_pb2.GetProfileResponse(profile=profile_message(profile))

    async def UpdateMyProfile(  # noqa: N802
        self, request: user_pb2.UpdateMyProfileRequest, context: Context
    ) -> user_pb2.UpdateMyProfileResponse:
        """Change the caller's display name and/or bio: the masked fields, else the set ones."""
        principal = await self._verifier.authenticate(context.invocation_metadata())
        require_may_change(principal, self._unverified_may)
        if not request.HasField("profile"):
            # The proto marks it REQUIRED: a request without it is a client bug, not a no-op.
            raise invalid([FieldViolation("profile", "is required")])
        profile = await self._profiles.update_my_profile(
            principal.account_id,
            request.update_mask.paths,
            display_name=request.profile.display_name,
            bio=request.profile.bio,
        )
        return user_pb2.UpdateMyProfileResponse(profile=profile_message(profile))


def profile_message(profile: Profile) -> user_pb2.Profile:
    """Build the public Profile message from a domain profile."""
    return user_pb2.Profile(
        account_id=profile.account_id,
        username=profile.username,
        display_name=profile.display_name,
        bio=profile.bio,
        avatar_image_id=profile.avatar_image_id,
        create_time=to_timestamp(profile.create_time),
        update_time=to_timestamp(profile.update_time),
    )
