"""ProfileStoreService through real stubs against the real database."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import grpc
import pytest

from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import AccountFactory, Metadata, ProfileReader, failure_of, field_violations

pytestmark = pytest.mark.integration

ProfileUpdater = Callable[..., Awaitable[pb.ProfileRecord]]


@pytest.fixture
def update_profile(
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub, as_user: Metadata
) -> ProfileUpdater:
    """`await update_profile(account_id, **fields)`: UpdateProfile as user_svc; the fields passed
    are the ones set in the request. Returns the updated profile."""

    async def update(account_id: str, **fields: str) -> pb.ProfileRecord:
        response = await profile_store.UpdateProfile(
            pb.UpdateProfileRequest(account_id=account_id, **fields), metadata=as_user
        )
        return response.profile

    return update


async def test_profile_is_found_by_account_id_and_by_username_in_any_case(
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()

    by_id = await profile_store.GetProfile(
        pb.GetProfileRequest(account_id=account.id), metadata=as_user
    )
    by_name = await profile_store.GetProfile(
        pb.GetProfileRequest(username=account.username.upper()), metadata=as_user
    )

    assert by_id.profile == by_name.profile
    assert by_id.profile.username == account.username


async def test_update_changes_only_the_fields_that_are_set(
    update_profile: ProfileUpdater, new_account: AccountFactory, profile_of: ProfileReader
) -> None:
    account = await new_account()
    before = await profile_of(account.id)

    named = await update_profile(account.id, display_name="Ann Example")
    described = await update_profile(account.id, bio="Line one\nline two ✨")
    cleared = await update_profile(account.id, display_name="")

    assert (named.display_name, named.bio) == ("Ann Example", "")
    assert (described.display_name, described.bio) == ("Ann Example", "Line one\nline two ✨")
    assert (cleared.display_name, cleared.bio) == ("", "Line one\nline two ✨")
    assert named.update_time.ToDatetime() > before.update_time.ToDatetime()
    assert cleared.create_time == before.create_time
    assert await profile_of(account.id) == cleared


async def test_update_without_fields_changes_nothing(
    update_profile: ProfileUpdater, new_account: AccountFactory, profile_of: ProfileReader
) -> None:
    account = await new_account()
    before = await profile_of(account.id)

    after = await update_profile(account.id)

    assert after == before


@pytest.mark.parametrize(
    "request_",
    [
        pb.GetProfileRequest(account_id=str(uuid.uuid4())),
        pb.GetProfileRequest(account_id="not-a-uuid"),
        pb.GetProfileRequest(account_id="'; DROP TABLE profiles; --"),
        pb.GetProfileRequest(username="nobody_by_this_name"),
        pb.GetProfileRequest(username="nul\x00"),
        pb.GetProfileRequest(username="x" * 10_000),
    ],
    ids=["unknown-id", "malformed-id", "injection", "unknown-name", "nul", "huge"],
)
async def test_missing_or_malformed_profile_key_is_not_found(
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
    request_: pb.GetProfileRequest,
) -> None:
    failure = await failure_of(profile_store.GetProfile(request_, metadata=as_user))

    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "PROFILE_NOT_FOUND"


async def test_get_profile_without_key_is_invalid_argument(
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub, as_user: Metadata
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await profile_store.GetProfile(pb.GetProfileRequest(), metadata=as_user)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "key" in field_violations(caught.value)


@pytest.mark.parametrize("account_id", [str(uuid.uuid4()), "bad"])
async def test_update_of_missing_account_is_not_found(
    update_profile: ProfileUpdater, account_id: str
) -> None:
    failure = await failure_of(update_profile(account_id, bio="hello"))

    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "PROFILE_NOT_FOUND"


async def test_unstorable_profile_text_is_invalid_argument_and_changes_nothing(
    update_profile: ProfileUpdater, new_account: AccountFactory, profile_of: ProfileReader
) -> None:
    account = await new_account()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update_profile(account.id, display_name="ok", bio="nul\x00")

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(caught.value)) == ["bio"]
    assert (await profile_of(account.id)).display_name == ""


async def test_reads_survive_the_database_dropping_every_connection(
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
    new_account: AccountFactory,
    database_url: str,
) -> None:
    account = await new_account()
    request = pb.GetProfileRequest(account_id=account.id)
    for _ in range(5):  # fill the pool with connections that have served reads
        await profile_store.GetProfile(request, metadata=as_user)
    killer = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        # What a database restart or failover does to every open connection.
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'data_access' AND query <> 'SELECT 1'"
        )
    finally:
        await killer.close()
    codes = []
    for _ in range(15):
        try:
            reply = await profile_store.GetProfile(request, metadata=as_user)
            codes.append(grpc.StatusCode.OK)
            assert reply.profile.account_id == account.id
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    # Each broken connection fails at most one call, as retryable UNAVAILABLE; then all is well.
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert codes[-5:] == [grpc.StatusCode.OK] * 5, codes
