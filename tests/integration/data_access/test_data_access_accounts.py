"""AccountStoreService through real stubs against the real database: accounts and credentials."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import Metadata, ProfileReader, error_info, failure_of, field_violations

pytestmark = pytest.mark.integration


def _unique() -> str:
    return uuid.uuid4().hex[:16]


async def test_created_account_is_lower_cased_and_its_credentials_are_found_by_any_case(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> None:
    unique = _unique()
    created = await account_store.CreateAccount(
        pb.CreateAccountRequest(
            email=f"Ann.{unique}@Example.COM", username=f"Ann_{unique}", password_hash="hash-1"
        ),
        metadata=as_auth,
    )
    account = created.account
    assert uuid.UUID(account.id)
    assert account.email == f"ann.{unique}@example.com"
    assert account.username == f"ann_{unique}"
    assert account.create_time.seconds > 0

    found = await account_store.GetCredentials(
        pb.GetCredentialsRequest(email=f"ANN.{unique}@example.com"), metadata=as_auth
    )
    assert found.account == account
    assert found.password_hash == "hash-1"


@pytest.mark.parametrize(
    ("field", "reason"), [("email", "EMAIL_TAKEN"), ("username", "USERNAME_TAKEN")]
)
async def test_taken_email_or_username_in_another_case_is_already_exists(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata, field: str, reason: str
) -> None:
    first: dict[str, Any] = {"email": f"{_unique()}@example.com", "username": f"u_{_unique()}"}
    await account_store.CreateAccount(
        pb.CreateAccountRequest(**first, password_hash="h"), metadata=as_auth
    )
    second: dict[str, Any] = {"email": f"{_unique()}@example.com", "username": f"u_{_unique()}"}
    second[field] = first[field].upper()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await account_store.CreateAccount(
            pb.CreateAccountRequest(**second, password_hash="h"), metadata=as_auth
        )

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(caught.value)
    assert info.reason == reason
    assert info.domain == "meshgram.dev"
    assert dict(info.metadata) == {"field": field}


async def test_username_collision_leaves_no_half_written_account(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> None:
    taken = f"u_{_unique()}"
    await account_store.CreateAccount(
        pb.CreateAccountRequest(
            email=f"{_unique()}@example.com", username=taken, password_hash="h"
        ),
        metadata=as_auth,
    )
    email = f"{_unique()}@example.com"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await account_store.CreateAccount(
            pb.CreateAccountRequest(email=email, username=taken, password_hash="h"),
            metadata=as_auth,
        )
    assert error_info(caught.value).reason == "USERNAME_TAKEN"

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await account_store.GetCredentials(pb.GetCredentialsRequest(email=email), metadata=as_auth)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # The email is still free: the failed attempt left nothing behind.
    retried = await account_store.CreateAccount(
        pb.CreateAccountRequest(email=email, username=f"u_{_unique()}", password_hash="h"),
        metadata=as_auth,
    )
    assert retried.account.email == email


async def test_concurrent_registrations_of_one_username_let_exactly_one_win(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> None:
    username = f"u_{_unique()}"
    attempts = [
        account_store.CreateAccount(
            pb.CreateAccountRequest(
                email=f"{_unique()}@example.com", username=username, password_hash="h"
            ),
            metadata=as_auth,
        )
        for _ in range(6)
    ]

    results = await asyncio.gather(*attempts, return_exceptions=True)

    winners = [r for r in results if isinstance(r, pb.CreateAccountResponse)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert len(losers) == 5
    assert {(e.code(), error_info(e).reason) for e in losers} == {
        (grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN")
    }


async def test_new_account_comes_with_an_empty_profile(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    profile_of: ProfileReader,
) -> None:
    unique = _unique()
    created = await account_store.CreateAccount(
        pb.CreateAccountRequest(
            email=f"{unique}@example.com", username=f"u_{unique}", password_hash="h"
        ),
        metadata=as_auth,
    )

    profile = await profile_of(created.account.id)

    assert profile.account_id == created.account.id
    assert profile.username == f"u_{unique}"
    assert (profile.display_name, profile.bio, profile.avatar_image_id) == ("", "", "")
    assert profile.create_time == created.account.create_time


async def test_unknown_email_has_no_credentials(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> None:
    failure = await failure_of(
        account_store.GetCredentials(
            pb.GetCredentialsRequest(email=f"{_unique()}@example.com"), metadata=as_auth
        )
    )

    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "ACCOUNT_NOT_FOUND"


@pytest.mark.parametrize("email", ["", "nul\x00@example.com", "x" * 400 + "@example.com"])
async def test_unusable_email_lookup_is_not_found_not_internal(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata, email: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await account_store.GetCredentials(pb.GetCredentialsRequest(email=email), metadata=as_auth)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_fields", "bad_field"),
    [
        ({"email": "", "username": "someone", "password_hash": "h"}, "email"),
        ({"email": "a@example.com", "username": "", "password_hash": "h"}, "username"),
        ({"email": "a@example.com", "username": "someone", "password_hash": ""}, "password_hash"),
        ({"email": "a@example.com", "username": "nul\x00name", "password_hash": "h"}, "username"),
        ({"email": "a" * 400 + "@example.com", "username": "x", "password_hash": "h"}, "email"),
    ],
)
async def test_unstorable_account_is_invalid_argument_naming_the_field(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    request_fields: dict[str, Any],
    bad_field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await account_store.CreateAccount(
            pb.CreateAccountRequest(**request_fields), metadata=as_auth
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(caught.value)) == [bad_field]


async def test_a_password_hash_is_replaced_only_while_it_is_the_expected_one(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> None:
    unique = uuid.uuid4().hex[:12]
    created = await account_store.CreateAccount(
        pb.CreateAccountRequest(
            email=f"{unique}@example.com", username=f"u_{unique}", password_hash="$2b$04$old"
        ),
        metadata=as_auth,
    )
    account_id = created.account.id

    async def replace(old: str, new: str) -> bool:
        reply = await account_store.ReplacePasswordHash(
            pb.ReplacePasswordHashRequest(
                account_id=account_id, old_password_hash=old, new_password_hash=new
            ),
            metadata=as_auth,
        )
        return reply.replaced

    async def stored() -> str:
        reply = await account_store.GetCredentials(
            pb.GetCredentialsRequest(email=f"{unique}@example.com"), metadata=as_auth
        )
        return reply.password_hash

    assert await replace("$2b$04$old", "$2b$12$new")
    assert await stored() == "$2b$12$new"
    # A re-hash computed from the old hash must not undo a change made meanwhile.
    assert not await replace("$2b$04$old", "$2b$12$stale")
    assert await stored() == "$2b$12$new"
    unknown = await failure_of(
        account_store.ReplacePasswordHash(
            pb.ReplacePasswordHashRequest(
                account_id=str(uuid.uuid4()), old_password_hash="x", new_password_hash="y"
            ),
            metadata=as_auth,
        )
    )
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")
    huge = await failure_of(replace("$2b$12$new", "x" * 5000))
    assert (huge.code, huge.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["new_password_hash"])
