"""The data-access services: protobuf in, repository call, protobuf out; nothing else."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from data_access.accounts import AccountStore
from data_access.changes import Change, ChangeFeed, FeedEvent, Heartbeat
from data_access.images import ImageStore
from data_access.profiles import ProfileStore
from data_access.records import AccountRecord, ImageRecord, NewImage, ProfileRecord
from data_access.refresh_tokens import RefreshTokenStore
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from meshkit.errors import FieldViolation, invalid
from meshkit.timestamps import to_datetime, to_timestamp

Context = grpc.aio.ServicerContext[Any, Any]


class AccountStoreServicer(pb_grpc.AccountStoreServiceServicer):
    """AccountStoreService over the account and refresh-token repositories."""

    def __init__(self, accounts: AccountStore, refresh_tokens: RefreshTokenStore) -> None:
        self._accounts = accounts
        self._refresh_tokens = refresh_tokens

    async def CreateAccount(  # noqa: N802 (name fixed by the proto)
        self, request: pb.CreateAccountRequest, context: Context
    ) -> pb.CreateAccountResponse:
        """Create an account and its empty profile."""
        account = await self._accounts.create(
            request.email, request.username, request.password_hash
        )
        return pb.CreateAccountResponse(account=_account(account))

    async def GetCredentials(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetCredentialsRequest, context: Context
    ) -> pb.GetCredentialsResponse:
        """Return an account and its password hash by email."""
        credentials = await self._accounts.credentials(request.email)
        return pb.GetCredentialsResponse(
            account=_account(credentials.account), password_hash=credentials.password_hash
        )

    async def CreateRefreshToken(  # noqa: N802 (name fixed by the proto)
        self, request: pb.CreateRefreshTokenRequest, context: Context
    ) -> pb.CreateRefreshTokenResponse:
        """Store the first token of a new family."""
        family_id = await self._refresh_tokens.create(
            request.account_id, request.token_hash, _required_time(request, "expire_time")
        )
        return pb.CreateRefreshTokenResponse(family_id=str(family_id))

    async def RotateRefreshToken(  # noqa: N802 (name fixed by the proto)
        self, request: pb.RotateRefreshTokenRequest, context: Context
    ) -> pb.RotateRefreshTokenResponse:
        """Consume a token and store its successor."""
        rotation = await self._refresh_tokens.rotate(
            request.token_hash,
            request.new_token_hash,
            _required_time(request, "new_expire_time"),
            reuse_window=request.reuse_window.ToTimedelta(),
            session_lifetime=(
                request.session_lifetime.ToTimedelta()
                if request.HasField("session_lifetime")
                else None
            ),
        )
        return pb.RotateRefreshTokenResponse(
            account=_account(rotation.account),
            family_id=str(rotation.family_id),
            repeated=rotation.repeated,
            new_expire_time=to_timestamp(rotation.expires_at),
        )

    async def RevokeRefreshToken(  # noqa: N802 (name fixed by the proto)
        self, request: pb.RevokeRefreshTokenRequest, context: Context
    ) -> pb.RevokeRefreshTokenResponse:
        """Revoke the family of a token."""
        await self._refresh_tokens.revoke_family(request.token_hash)
        return pb.RevokeRefreshTokenResponse()

    async def ReplacePasswordHash(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ReplacePasswordHashRequest, context: Context
    ) -> pb.ReplacePasswordHashResponse:
        """Replace a password hash that is still the expected one."""
        replaced = await self._accounts.replace_password_hash(
            request.account_id, request.old_password_hash, request.new_password_hash
        )
        return pb.ReplacePasswordHashResponse(replaced=replaced)


class ProfileStoreServicer(pb_grpc.ProfileStoreServiceServicer):
    """ProfileStoreService over the profile repository."""

    def __init__(self, profiles: ProfileStore) -> None:
        self._profiles = profiles

    async def GetProfile(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetProfileRequest, context: Context
    ) -> pb.GetProfileResponse:
        """Return a profile by account id or username."""
        key = request.WhichOneof("key")
        if key == "account_id":
            profile = await self._profiles.by_account_id(request.account_id)
        elif key == "username":
            profile = await self._profiles.by_username(request.username)
        else:
            raise invalid([FieldViolation("key", "set account_id or username")])
        return pb.GetProfileResponse(profile=_profile(profile))

    async def UpdateProfile(  # noqa: N802 (name fixed by the proto)
        self, request: pb.UpdateProfileRequest, context: Context
    ) -> pb.UpdateProfileResponse:
        """Change the fields that are set and return the profile."""
        profile = await self._profiles.update(
            request.account_id,
            display_name=request.display_name if request.HasField("display_name") else None,
            bio=request.bio if request.HasField("bio") else None,
        )
        return pb.UpdateProfileResponse(profile=_profile(profile))


class MediaStoreServicer(pb_grpc.MediaStoreServiceServicer):
    """MediaStoreService over the image repository."""

    def __init__(self, images: ImageStore) -> None:
        self._images = images

    async def CreateImage(  # noqa: N802 (name fixed by the proto)
        self, request: pb.CreateImageRequest, context: Context
    ) -> pb.CreateImageResponse:
        """Record an image's metadata."""
        image = request.image
        stored = await self._images.create(
            NewImage(
                owner_id=image.owner_id,
                content_type=image.content_type,
                size_bytes=image.size_bytes,
                width=image.width,
                height=image.height,
                sha256=image.sha256,
            )
        )
        return pb.CreateImageResponse(image=_image(stored))

    async def GetImage(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetImageRequest, context: Context
    ) -> pb.GetImageResponse:
        """Return an image's metadata."""
        return pb.GetImageResponse(image=_image(await self._images.get(request.image_id)))

    async def SetAvatar(  # noqa: N802 (name fixed by the proto)
        self, request: pb.SetAvatarRequest, context: Context
    ) -> pb.SetAvatarResponse:
        """Make one of the owner's images their avatar."""
        image = await self._images.set_avatar(request.account_id, request.image_id)
        return pb.SetAvatarResponse(image=_image(image))


class ChangeFeedServicer(pb_grpc.ChangeFeedServiceServicer):
    """ChangeFeedService over the change feed."""

    def __init__(self, feed: ChangeFeed) -> None:
        self._feed = feed

    async def SubscribeChanges(  # noqa: N802 (name fixed by the proto)
        self, request: pb.SubscribeChangesRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeChangesResponse]:
        """Stream the replay, then live changes and heartbeats."""
        async for event in self._feed.subscribe(request.topics, request.after_position):
            yield _feed_event(event)


def _feed_event(event: FeedEvent) -> pb.SubscribeChangesResponse:
    """Convert a feed event to protobuf."""
    if isinstance(event, Change):
        return pb.SubscribeChangesResponse(
            change=pb.Change(
                position=event.position,
                topic=event.topic,
                key=event.key,
                record_time=to_timestamp(event.recorded_at),
            )
        )
    if isinstance(event, Heartbeat):
        return pb.SubscribeChangesResponse(
            heartbeat=pb.Heartbeat(position=event.position, time=to_timestamp(event.at))
        )
    return pb.SubscribeChangesResponse(reset=pb.Reset(reason=event.reason, position=event.position))


def _required_time(request: Message, field: str) -> datetime:
    """Return a request's Timestamp field as an aware UTC datetime; InvalidArgument when unset
    or outside the representable range."""
    if not request.HasField(field):
        raise invalid([FieldViolation(field, "is required")])
    stamp: Timestamp = getattr(request, field)
    try:
        return to_datetime(stamp)
    except (ValueError, OverflowError):
        raise invalid([FieldViolation(field, "is not a valid timestamp")]) from None


def _id(value: uuid.UUID | None) -> str:
    """Render an id for the wire; no id is the empty string."""
    return "" if value is None else str(value)


def _account(account: AccountRecord) -> pb.AccountRecord:
    """Convert an account record to protobuf."""
    return pb.AccountRecord(
        id=_id(account.id),
        email=account.email,
        username=account.username,
        create_time=to_timestamp(account.created_at),
    )


def _profile(profile: ProfileRecord) -> pb.ProfileRecord:
    """Convert a profile record to protobuf."""
    return pb.ProfileRecord(
        account_id=_id(profile.account_id),
        username=profile.username,
        display_name=profile.display_name,
        bio=profile.bio,
        avatar_image_id=_id(profile.avatar_image_id),
        create_time=to_timestamp(profile.account_created_at),
        update_time=to_timestamp(profile.updated_at),
    )


def _image(image: ImageRecord) -> pb.ImageRecord:
    """Convert an image record to protobuf."""
    return pb.ImageRecord(
        id=_id(image.id),
        owner_id=_id(image.owner_id),
        content_type=image.content_type,
        size_bytes=image.size_bytes,
        width=image.width,
        height=image.height,
        sha256=image.sha256,
        create_time=to_timestamp(image.created_at),
    )
