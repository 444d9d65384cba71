"""Clients of the session's data_access (tests/conftest.py), one stub per service.

Fixtures (session):
- `data_access_channel`: one channel to `data_access_address`.
- `account_store`, `profile_store`, `media_store`: stubs of the three services on that channel.
- `as_auth`, `as_user`, `as_storage`: call metadata identifying auth_svc, user_svc, storage_svc.
- `new_account`: async factory creating a unique account (as auth_svc) and returning its record.
- `profile_of`: async reader of an account's stored profile (as user_svc), by account id.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import AccountFactory, Metadata, ProfileReader, caller_metadata


@pytest.fixture(scope="session")
async def data_access_channel(data_access_address: str) -> AsyncIterator[grpc.aio.Channel]:
    """One channel to the session's data_access."""
    async with grpc.aio.insecure_channel(data_access_address) as opened:
        yield opened


@pytest.fixture(scope="session")
def account_store(data_access_channel: grpc.aio.Channel) -> pb_grpc.AccountStoreServiceAsyncStub:
    """AccountStoreService stub."""
    return pb_grpc.AccountStoreServiceStub(data_access_channel)


@pytest.fixture(scope="session")
def profile_store(data_access_channel: grpc.aio.Channel) -> pb_grpc.ProfileStoreServiceAsyncStub:
    """ProfileStoreService stub."""
    return pb_grpc.ProfileStoreServiceStub(data_access_channel)


@pytest.fixture(scope="session")
def media_store(data_access_channel: grpc.aio.Channel) -> pb_grpc.MediaStoreServiceAsyncStub:
    """MediaStoreService stub."""
    return pb_grpc.MediaStoreServiceStub(data_access_channel)


@pytest.fixture(scope="session")
def as_auth(mesh_secret: str) -> Metadata:
    """Credentials of auth_svc."""
    return caller_metadata(mesh_secret, "auth_svc")


@pytest.fixture(scope="session")
def as_user(mesh_secret: str) -> Metadata:
    """Credentials of user_svc."""
    return caller_metadata(mesh_secret, "user_svc")


@pytest.fixture(scope="session")
def as_storage(mesh_secret: str) -> Metadata:
    """Credentials of storage_svc."""
    return caller_metadata(mesh_secret, "storage_svc")


@pytest.fixture(scope="session")
def new_account(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> AccountFactory:
    """Factory of unique accounts."""

    async def create() -> pb.AccountRecord:
        unique = uuid.uuid4().hex[:16]
        response = await account_store.CreateAccount(
            pb.CreateAccountRequest(
                email=f"{unique}@example.com",
                username=f"user_{unique}",
                password_hash=f"$2b$04${unique}",
            ),
            metadata=as_auth,
        )
        return response.account

    return create


@pytest.fixture(scope="session")
def profile_of(
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub, as_user: Metadata
) -> ProfileReader:
    """Reader of stored profiles by account id."""

    async def read(account_id: str) -> pb.ProfileRecord:
        response = await profile_store.GetProfile(
            pb.GetProfileRequest(account_id=account_id), metadata=as_user
        )
        return response.profile

    return read
