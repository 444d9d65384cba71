"""Outbound calls of user_svc: profiles in data_access."""

from __future__ import annotations

import grpc

from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc
from meshkit.clients import PeerCaller
from meshkit.timestamps import to_datetime
from user_svc.profiles import Profile, ProfileChanges


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
            account_id=account_id, display_name=changes.display_name, bio=changes.bio
        )
        response = await self._peer.unary(self._stub.UpdateProfile, request)
        return profile_from_record(response.profile)


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
    )
