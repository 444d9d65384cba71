"""AccountStoreService's refresh-token families: create, rotate, reuse detection, revoke."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import AccountFactory, Metadata, error_info, field_violations

pytestmark = pytest.mark.integration


def _token_hash() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def _in(delta: timedelta) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + delta)
    return stamp


DAY = timedelta(days=1)


async def _login(
    store: pb_grpc.AccountStoreServiceAsyncStub,
    metadata: Metadata,
    account_id: str,
    ttl: timedelta = DAY,
) -> tuple[str, str]:
    """Start a family; return (token hash, family id)."""
    token = _token_hash()
    created = await store.CreateRefreshToken(
        pb.CreateRefreshTokenRequest(account_id=account_id, token_hash=token, expire_time=_in(ttl)),
        metadata=metadata,
    )
    return token, created.family_id


async def _rotate(
    store: pb_grpc.AccountStoreServiceAsyncStub, metadata: Metadata, token: str
) -> tuple[str, pb.RotateRefreshTokenResponse]:
    """Rotate token; return (successor hash, response)."""
    successor = _token_hash()
    response = await store.RotateRefreshToken(
        pb.RotateRefreshTokenRequest(
            token_hash=token, new_token_hash=successor, new_expire_time=_in(DAY)
        ),
        metadata=metadata,
    )
    return successor, response


async def _rejection(
    store: pb_grpc.AccountStoreServiceAsyncStub, metadata: Metadata, token: str
) -> tuple[grpc.StatusCode, str]:
    """Rotate a token expected to be refused; return (code, reason)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _rotate(store, metadata, token)
    return caught.value.code(), error_info(caught.value).reason


INVALID = (grpc.StatusCode.NOT_FOUND, "REFRESH_TOKEN_INVALID")
REUSED = (grpc.StatusCode.FAILED_PRECONDITION, "REFRESH_TOKEN_REUSED")


async def test_rotation_chain_keeps_account_and_family(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    token, family_id = await _login(account_store, as_auth, account.id)
    assert uuid.UUID(family_id)

    second, first_rotation = await _rotate(account_store, as_auth, token)
    _, second_rotation = await _rotate(account_store, as_auth, second)

    for rotation in (first_rotation, second_rotation):
        assert rotation.account == account
        assert rotation.family_id == family_id


async def test_reusing_a_consumed_token_revokes_the_whole_family(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    stolen, _ = await _login(account_store, as_auth, account.id)
    successor, _ = await _rotate(account_store, as_auth, stolen)

    assert await _rejection(account_store, as_auth, stolen) == REUSED
    # The revocation was committed: the legitimate successor is dead too.
    assert await _rejection(account_store, as_auth, successor) == INVALID


async def test_reuse_revokes_only_that_family(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    laptop, _ = await _login(account_store, as_auth, account.id)
    phone, _ = await _login(account_store, as_auth, account.id)
    await _rotate(account_store, as_auth, laptop)

    assert await _rejection(account_store, as_auth, laptop) == REUSED
    _, rotation = await _rotate(account_store, as_auth, phone)
    assert rotation.account.id == account.id


async def test_concurrent_refreshes_of_one_token_let_one_through_and_revoke_the_family(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    token, _ = await _login(account_store, as_auth, account.id)

    results = await asyncio.gather(
        *(_rotate(account_store, as_auth, token) for _ in range(4)), return_exceptions=True
    )

    successes = [r for r in results if isinstance(r, tuple)]
    failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(successes) == 1
    outcomes = {(e.code(), error_info(e).reason) for e in failures}
    # The first loser detects the reuse; later ones may already find the family revoked.
    assert REUSED in outcomes
    assert outcomes <= {REUSED, INVALID}
    assert await _rejection(account_store, as_auth, successes[0][0]) == INVALID


async def test_expired_token_is_invalid(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    token, _ = await _login(account_store, as_auth, account.id, ttl=-timedelta(seconds=1))

    assert await _rejection(account_store, as_auth, token) == INVALID


async def test_unknown_token_is_invalid(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> None:
    assert await _rejection(account_store, as_auth, _token_hash()) == INVALID


async def test_logout_revokes_the_family_and_is_idempotent(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    first, _ = await _login(account_store, as_auth, account.id)
    current, _ = await _rotate(account_store, as_auth, first)
    other_login, _ = await _login(account_store, as_auth, account.id)

    for _ in range(2):
        await account_store.RevokeRefreshToken(
            pb.RevokeRefreshTokenRequest(token_hash=first), metadata=as_auth
        )

    assert await _rejection(account_store, as_auth, current) == INVALID
    _, rotation = await _rotate(account_store, as_auth, other_login)
    assert rotation.account.id == account.id


async def test_logout_with_unknown_token_is_accepted(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> None:
    response = await account_store.RevokeRefreshToken(
        pb.RevokeRefreshTokenRequest(token_hash=_token_hash()), metadata=as_auth
    )

    assert response == pb.RevokeRefreshTokenResponse()


@pytest.mark.parametrize("account_id", [str(uuid.uuid4()), "not-a-uuid", ""])
async def test_token_for_missing_or_malformed_account_is_not_found(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata, account_id: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _login(account_store, as_auth, account_id)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(caught.value).reason == "ACCOUNT_NOT_FOUND"


async def test_token_without_expiry_is_invalid_argument(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await account_store.CreateRefreshToken(
            pb.CreateRefreshTokenRequest(account_id=account.id, token_hash=_token_hash()),
            metadata=as_auth,
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expire_time" in field_violations(caught.value)


@pytest.mark.parametrize("token_hash", ["", "abc", "z" * 64, "\x00" * 64])
async def test_malformed_token_hash_is_invalid_argument(
    account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata, token_hash: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await account_store.RevokeRefreshToken(
            pb.RevokeRefreshTokenRequest(token_hash=token_hash), metadata=as_auth
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "token_hash" in field_violations(caught.value)


async def test_successor_hash_already_stored_is_refused_and_the_token_stays_usable(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    token, _ = await _login(account_store, as_auth, account.id)
    existing, _ = await _login(account_store, as_auth, account.id)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await account_store.RotateRefreshToken(
            pb.RotateRefreshTokenRequest(
                token_hash=token, new_token_hash=existing, new_expire_time=_in(DAY)
            ),
            metadata=as_auth,
        )

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(caught.value).reason == "REFRESH_TOKEN_EXISTS"
    assert dict(error_info(caught.value).metadata) == {"field": "new_token_hash"}
    # The failed rotation rolled back: the token was not consumed.
    _, rotation = await _rotate(account_store, as_auth, token)
    assert rotation.account.id == account.id


async def test_starting_a_family_with_a_stored_hash_is_already_exists(
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    token, _ = await _login(account_store, as_auth, account.id)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await account_store.CreateRefreshToken(
            pb.CreateRefreshTokenRequest(
                account_id=account.id, token_hash=token, expire_time=_in(DAY)
            ),
            metadata=as_auth,
        )

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert dict(error_info(caught.value).metadata) == {"field": "token_hash"}
