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
from meshkit.timestamps import to_timestamp
from tests.helpers import AccountFactory, Metadata, error_info, failure_of, field_violations

pytestmark = pytest.mark.integration


def _token_hash() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def _in(delta: timedelta) -> Timestamp:
    return to_timestamp(datetime.now(UTC) + delta)


DAY = timedelta(days=1)
SESSION = timedelta(days=30)


class Families:
    """Refresh-token families in data_access, reached as auth_svc."""

    def __init__(self, store: pb_grpc.AccountStoreServiceAsyncStub, metadata: Metadata) -> None:
        self.store = store
        self.metadata = metadata

    async def login(
        self, account_id: str, ttl: timedelta = DAY, *, session: timedelta = SESSION
    ) -> tuple[str, str]:
        """Start a family (a session ending `session` from now); return (token hash, family
        id)."""
        token = _token_hash()
        created = await self.store.CreateRefreshToken(
            pb.CreateRefreshTokenRequest(
                account_id=account_id,
                token_hash=token,
                expire_time=_in(ttl),
                session_end_time=_in(session),
            ),
            metadata=self.metadata,
        )
        return token, created.family_id

    async def rotate(
        self,
        token: str,
        successor: str | None = None,
        *,
        window: timedelta | None = None,
        device: pb.SessionDevice | None = None,
    ) -> tuple[str, pb.RotateRefreshTokenResponse]:
        """Rotate token (to `successor`, else a fresh hash) with an optional reuse window and
        device; return (successor hash, response)."""
        successor = successor or _token_hash()
        request = pb.RotateRefreshTokenRequest(
            token_hash=token, new_token_hash=successor, new_expire_time=_in(DAY), device=device
        )
        if window is not None:
            request.reuse_window.FromTimedelta(window)
        response = await self.store.RotateRefreshToken(request, metadata=self.metadata)
        return successor, response

    async def rejection(self, token: str) -> tuple[grpc.StatusCode, str]:
        """Rotate a token expected to be refused; return (code, reason)."""
        failure = await failure_of(self.rotate(token))
        return failure.code, failure.reason

    async def revoke(self, token: str) -> pb.RevokeRefreshTokenResponse:
        """Log out: revoke the family of token."""
        return await self.store.RevokeRefreshToken(
            pb.RevokeRefreshTokenRequest(token_hash=token), metadata=self.metadata
        )


@pytest.fixture
def families(account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata) -> Families:
    """The refresh-token families of the session's data_access, as auth_svc sees them."""
    return Families(account_store, as_auth)


INVALID = (grpc.StatusCode.NOT_FOUND, "REFRESH_TOKEN_INVALID")
REUSED = (grpc.StatusCode.FAILED_PRECONDITION, "REFRESH_TOKEN_REUSED")


async def test_rotation_chain_keeps_account_and_family(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    token, family_id = await families.login(account.id)
    assert uuid.UUID(family_id)

    second, first_rotation = await families.rotate(token)
    _, second_rotation = await families.rotate(second)

    for rotation in (first_rotation, second_rotation):
        assert rotation.account == account
        assert rotation.family_id == family_id


async def test_reusing_a_consumed_token_revokes_the_whole_family(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    stolen, _ = await families.login(account.id)
    successor, _ = await families.rotate(stolen)

    assert await families.rejection(stolen) == REUSED
    # The revocation was committed: the legitimate successor is dead too.
    assert await families.rejection(successor) == INVALID


async def test_reuse_revokes_only_that_family(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    laptop, _ = await families.login(account.id)
    phone, _ = await families.login(account.id)
    await families.rotate(laptop)

    assert await families.rejection(laptop) == REUSED
    _, rotation = await families.rotate(phone)
    assert rotation.account.id == account.id


async def test_concurrent_refreshes_of_one_token_let_one_through_and_revoke_the_family(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    token, _ = await families.login(account.id)

    results = await asyncio.gather(
        *(families.rotate(token) for _ in range(4)), return_exceptions=True
    )

    successes = [r for r in results if isinstance(r, tuple)]
    failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(successes) == 1
    outcomes = {(e.code(), error_info(e).reason) for e in failures}
    # The first loser detects the reuse; later ones may already find the family revoked.
    assert REUSED in outcomes
    assert outcomes <= {REUSED, INVALID}
    assert await families.rejection(successes[0][0]) == INVALID


async def test_expired_token_is_invalid(families: Families, new_account: AccountFactory) -> None:
    account = await new_account()
    token, _ = await families.login(account.id, ttl=-timedelta(seconds=1))

    assert await families.rejection(token) == INVALID


async def test_unknown_token_is_invalid(families: Families) -> None:
    assert await families.rejection(_token_hash()) == INVALID


async def test_logout_revokes_the_family_and_is_idempotent(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    first, _ = await families.login(account.id)
    current, _ = await families.rotate(first)
    other_login, _ = await families.login(account.id)

    for _ in range(2):
        await families.revoke(first)

    assert await families.rejection(current) == INVALID
    _, rotation = await families.rotate(other_login)
    assert rotation.account.id == account.id


async def test_logout_with_unknown_token_is_accepted(families: Families) -> None:
    response = await families.revoke(_token_hash())

    assert response == pb.RevokeRefreshTokenResponse()


@pytest.mark.parametrize("account_id", [str(uuid.uuid4()), "not-a-uuid", ""])
async def test_token_for_missing_or_malformed_account_is_not_found(
    families: Families, account_id: str
) -> None:
    failure = await failure_of(families.login(account_id))

    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "ACCOUNT_NOT_FOUND"


async def test_token_without_expiry_is_invalid_argument(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await families.store.CreateRefreshToken(
            pb.CreateRefreshTokenRequest(account_id=account.id, token_hash=_token_hash()),
            metadata=families.metadata,
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expire_time" in field_violations(caught.value)


@pytest.mark.parametrize("token_hash", ["", "abc", "z" * 64, "\x00" * 64])
async def test_malformed_token_hash_is_invalid_argument(
    families: Families, token_hash: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await families.revoke(token_hash)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "token_hash" in field_violations(caught.value)


async def test_successor_hash_already_stored_is_refused_and_the_token_stays_usable(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    token, _ = await families.login(account.id)
    existing, _ = await families.login(account.id)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await families.store.RotateRefreshToken(
            pb.RotateRefreshTokenRequest(
                token_hash=token, new_token_hash=existing, new_expire_time=_in(DAY)
            ),
            metadata=families.metadata,
        )

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(caught.value).reason == "REFRESH_TOKEN_EXISTS"
    assert dict(error_info(caught.value).metadata) == {"field": "new_token_hash"}
    # The failed rotation rolled back: the token was not consumed.
    _, rotation = await families.rotate(token)
    assert rotation.account.id == account.id


async def test_starting_a_family_with_a_stored_hash_is_already_exists(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    token, _ = await families.login(account.id)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await families.store.CreateRefreshToken(
            pb.CreateRefreshTokenRequest(
                account_id=account.id,
                token_hash=token,
                expire_time=_in(DAY),
                session_end_time=_in(SESSION),
            ),
            metadata=families.metadata,
        )

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert dict(error_info(caught.value).metadata) == {"field": "token_hash"}


RACES = 30


async def test_logout_racing_a_refresh_leaves_no_usable_successor(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    for _ in range(RACES):
        token, _ = await families.login(account.id)

        rotated, revoked = await asyncio.gather(
            families.rotate(token), families.revoke(token), return_exceptions=True
        )

        assert isinstance(revoked, pb.RevokeRefreshTokenResponse)
        if isinstance(rotated, grpc.aio.AioRpcError):
            # The logout won: the token was already revoked when the refresh read it.
            assert (rotated.code(), error_info(rotated).reason) == INVALID
            continue
        assert isinstance(rotated, tuple)
        # The refresh won, but the logout that returned after it must have revoked its successor.
        assert await families.rejection(rotated[0]) == INVALID


async def test_reuse_racing_a_legitimate_refresh_leaves_no_usable_successor(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    for _ in range(RACES):
        stolen, _ = await families.login(account.id)
        current, _ = await families.rotate(stolen)

        legitimate, reused = await asyncio.gather(
            families.rotate(current), families.rotate(stolen), return_exceptions=True
        )

        assert isinstance(reused, grpc.aio.AioRpcError)
        assert (reused.code(), error_info(reused).reason) == REUSED
        assert await families.rejection(current) == INVALID
        if isinstance(legitimate, tuple):
            # Issued concurrently with the reuse detection, yet revoked with the family.
            assert await families.rejection(legitimate[0]) == INVALID
        else:
            assert isinstance(legitimate, grpc.aio.AioRpcError)
            assert (legitimate.code(), error_info(legitimate).reason) == INVALID


async def test_twenty_repeats_of_one_rotation_within_the_window_all_get_its_successor(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    token, family_id = await families.login(account.id)
    successor = _token_hash()  # auth_svc derives it from the token: every repeat names it
    window = timedelta(seconds=5)
    outcomes = await asyncio.gather(
        *(families.rotate(token, successor, window=window) for _ in range(20))
    )
    assert {hash_ for hash_, _ in outcomes} == {successor}
    assert sum(not response.repeated for _, response in outcomes) == 1
    assert {response.family_id for _, response in outcomes} == {family_id}
    assert len({response.new_expire_time.ToNanoseconds() for _, response in outcomes}) == 1
    # Nothing was revoked: the successor carries the session on.
    _, onwards = await families.rotate(successor, window=window)
    assert not onwards.repeated


async def test_a_repeat_with_another_successor_or_after_the_window_is_a_reuse(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    window = timedelta(milliseconds=300)
    token, _ = await families.login(account.id)
    successor, _ = await families.rotate(token, window=window)
    # Another successor than the one stored: not the same rotation repeated.
    other = await failure_of(families.rotate(token, _token_hash(), window=window))
    assert (other.code, other.reason) == REUSED
    assert await families.rejection(successor) == INVALID

    token, _ = await families.login(account.id)
    successor, _ = await families.rotate(token, window=window)
    await asyncio.sleep(0.5)
    late = await failure_of(families.rotate(token, successor, window=window))
    assert (late.code, late.reason) == REUSED
    assert await families.rejection(successor) == INVALID


async def test_a_session_ends_at_its_end_however_often_it_is_refreshed(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    token, _ = await families.login(account.id, session=timedelta(seconds=2))
    successor, rotated = await families.rotate(token)
    # The successor was asked to live a day, but the session ends first.
    expires = rotated.new_expire_time.ToDatetime(tzinfo=UTC)
    assert expires <= datetime.now(UTC) + timedelta(seconds=2)
    await asyncio.sleep(2.2)
    assert await families.rejection(successor) == INVALID
    # A session with a later end would still rotate: only its end stopped this one.
    fresh, _ = await families.login(account.id)
    await families.rotate(fresh)


async def test_the_first_token_expires_at_the_session_end_at_the_latest(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    token, _ = await families.login(account.id, session=timedelta(seconds=1))
    await asyncio.sleep(1.2)

    assert await families.rejection(token) == INVALID


async def test_rotations_report_the_session_start_of_the_login(
    families: Families, new_account: AccountFactory
) -> None:
    account = await new_account()
    token = _token_hash()
    created = await families.store.CreateRefreshToken(
        pb.CreateRefreshTokenRequest(
            account_id=account.id,
            token_hash=token,
            expire_time=_in(DAY),
            session_end_time=_in(SESSION),
        ),
        metadata=families.metadata,
    )
    started = created.session_start_time.ToDatetime(tzinfo=UTC)
    assert abs(started - datetime.now(UTC)) < timedelta(seconds=5)

    second, first = await families.rotate(token)
    _, later = await families.rotate(second)

    assert first.session_start_time == later.session_start_time == created.session_start_time


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"session_end_time": None}, "session_end_time"),
        ({"device": pb.SessionDevice(user_agent="x" * 513)}, "device.user_agent"),
        ({"device": pb.SessionDevice(client_ip="256.1.1.1")}, "device.client_ip"),
        ({"device": pb.SessionDevice(client_ip="localhost")}, "device.client_ip"),
    ],
    ids=["no-session-end", "long-user-agent", "bad-ip", "host-name"],
)
async def test_a_login_without_an_end_or_with_a_bad_device_is_invalid_argument(
    families: Families, new_account: AccountFactory, fields: dict[str, object], bad_field: str
) -> None:
    account = await new_account()
    request = pb.CreateRefreshTokenRequest(
        account_id=account.id,
        token_hash=_token_hash(),
        expire_time=_in(DAY),
        session_end_time=_in(SESSION),
    )
    for name, value in fields.items():
        if value is None:
            request.ClearField(name)  # type: ignore[arg-type]
        else:
            getattr(request, name).CopyFrom(value)

    failure = await failure_of(
        families.store.CreateRefreshToken(request, metadata=families.metadata)
    )

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == [bad_field]
