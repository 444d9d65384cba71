"""Clients of the session's data_access (tests/conftest.py), one stub per service, and a
data_access of these tests' own for the mail outbox.

Fixtures (session):
- `data_access_channel`: one channel to `data_access_address`.
- `account_store`, `profile_store`, `media_store`: stubs of the three services on that channel.
- `as_auth`, `as_user`, `as_storage`: call metadata identifying auth_svc, user_svc, storage_svc.
- `new_account`: async factory creating a unique account (as auth_svc) and returning its record.
- `profile_of`: async reader of an account's stored profile (as user_svc), by account id.
- `private_database`: a `Database` pool on a migrated database of these tests' own (on the
  session's server), where no mail sender of another test claims the queued mails.

Fixtures (module; a fresh data_access per module, so that no test module finds its pool broken
by another that ends every data_access connection):
- `private_channel`: a channel to a data_access in-process on `private_database`.
- `private_accounts`, `private_outbox`: AccountStoreService and MailOutboxService stubs on it.
- `new_private_account`: like `new_account`, on `private_channel`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from pydantic import SecretStr

from data_access.database import Database, open_database
from data_access.server import build_definition
from data_access.settings import DataAccessSettings
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import (
    AccountFactory,
    Metadata,
    ProfileReader,
    caller_metadata,
    migrated_database,
    serving,
)


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


def account_factory(
    store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> AccountFactory:
    """Factory of unique accounts in the data_access of store."""

    async def create() -> pb.AccountRecord:
        unique = uuid.uuid4().hex[:16]
        response = await store.CreateAccount(
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
def new_account(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> AccountFactory:
    """Factory of unique accounts."""
    return account_factory(account_store, as_auth)


@pytest.fixture(scope="session")
async def private_database_url(database_url: str) -> AsyncIterator[str]:
    """URL of a migrated database of these tests' own, dropped at the end."""
    async with migrated_database(database_url, "meshgram_private") as url:
        yield url


@pytest.fixture(scope="session")
async def private_database(private_database_url: str) -> AsyncIterator[Database]:
    """A pool on the private database, for what no RPC reads or writes."""
    # Named apart from data_access's own connections, which some tests end on purpose.
    opened = open_database(private_database_url, pool_size=2, application_name="tests")
    yield opened
    await opened.dispose()


@pytest.fixture(scope="module")
async def private_channel(
    private_database_url: str, mesh_secret: str
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to data_access in-process on the private database."""
    settings = DataAccessSettings(host="127.0.0.1", port=0, mesh_secret=SecretStr(mesh_secret))
    definition = build_definition(settings, private_database_url)
    async with (
        serving(definition, grace=1.0) as address,
        grpc.aio.insecure_channel(address) as opened,
    ):
        yield opened


@pytest.fixture(scope="module")
def private_accounts(private_channel: grpc.aio.Channel) -> pb_grpc.AccountStoreServiceAsyncStub:
    """AccountStoreService stub of the private data_access."""
    return pb_grpc.AccountStoreServiceStub(private_channel)


@pytest.fixture(scope="module")
def private_outbox(private_channel: grpc.aio.Channel) -> pb_grpc.MailOutboxServiceAsyncStub:
    """MailOutboxService stub of the private data_access."""
    return pb_grpc.MailOutboxServiceStub(private_channel)


@pytest.fixture(scope="module")
def new_private_account(
    private_accounts: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> AccountFactory:
    """Factory of unique accounts in the private data_access."""
    return account_factory(private_accounts, as_auth)


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
