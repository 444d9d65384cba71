"""ProfileStoreService through real stubs against the real database."""

from __future__ import annotations

import uuid

import grpc
import pytest

from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import AccountFactory, Metadata, error_info, field_violations

pytestmark = pytest.mark.integration


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
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    before = await profile_store.GetProfile(
        pb.GetProfileRequest(account_id=account.id), metadata=as_user
    )

    named = await profile_store.UpdateProfile(
        pb.UpdateProfileRequest(account_id=account.id, display_name="Ann Example"),
        metadata=as_user,
    )
    described = await profile_store.UpdateProfile(
        pb.UpdateProfileRequest(account_id=account.id, bio="Line one\nline two ✨"),
        metadata=as_user,
    )
    cleared = await profile_store.UpdateProfile(
        pb.UpdateProfileRequest(account_id=account.id, display_name=""), metadata=as_user
    )

    assert (named.profile.display_name, named.profile.bio) == ("Ann Example", "")
    assert (described.profile.display_name, described.profile.bio) == (
        "Ann Example",
        "Line one\nline two ✨",
    )
    assert (cleared.profile.display_name, cleared.profile.bio) == ("", "Line one\nline two ✨")
    assert named.profile.update_time.ToDatetime() > before.profile.update_time.ToDatetime()
    assert cleared.profile.create_time == before.profile.create_time
    stored = await profile_store.GetProfile(
        pb.GetProfileRequest(account_id=account.id), metadata=as_user
    )
    assert stored.profile == cleared.profile


async def test_update_without_fields_changes_nothing(
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    before = await profile_store.GetProfile(
        pb.GetProfileRequest(account_id=account.id), metadata=as_user
    )

    after = await profile_store.UpdateProfile(
        pb.UpdateProfileRequest(account_id=account.id), metadata=as_user
    )

    assert after.profile == before.profile


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
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await profile_store.GetProfile(request_, metadata=as_user)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(caught.value).reason == "PROFILE_NOT_FOUND"


async def test_get_profile_without_key_is_invalid_argument(
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub, as_user: Metadata
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await profile_store.GetProfile(pb.GetProfileRequest(), metadata=as_user)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "key" in field_violations(caught.value)


@pytest.mark.parametrize("account_id", [str(uuid.uuid4()), "bad"])
async def test_update_of_missing_account_is_not_found(
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub, as_user: Metadata, account_id: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await profile_store.UpdateProfile(
            pb.UpdateProfileRequest(account_id=account_id, bio="hello"), metadata=as_user
        )

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(caught.value).reason == "PROFILE_NOT_FOUND"


async def test_unstorable_profile_text_is_invalid_argument_and_changes_nothing(
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await profile_store.UpdateProfile(
            pb.UpdateProfileRequest(account_id=account.id, display_name="ok", bio="nul\x00"),
            metadata=as_user,
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(caught.value)) == ["bio"]
    stored = await profile_store.GetProfile(
        pb.GetProfileRequest(account_id=account.id), metadata=as_user
    )
    assert stored.profile.display_name == ""
