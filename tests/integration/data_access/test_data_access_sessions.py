"""AccountStoreService's sessions: listing the live ones, ending one or all but one, and a
password change that ends the others, against the real database."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text

from data_access.database import Database
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from meshkit.timestamps import to_timestamp
from tests.helpers import AccountFactory, Metadata, error_info, failure_of

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
SESSION = timedelta(days=30)
INVALID = (grpc.StatusCode.NOT_FOUND, "REFRESH_TOKEN_INVALID")
NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")


def _hash() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def _in(delta: timedelta) -> Timestamp:
    return to_timestamp(datetime.now(UTC) + delta)


def _near(stamp: Timestamp, expected: datetime) -> bool:
    return abs(stamp.ToDatetime(tzinfo=UTC) - expected) < timedelta(seconds=10)


@dataclass(frozen=True)
class Login:
    """A started session: its current refresh token and its id."""

    token: str
    session_id: str


@dataclass
class Sessions:
    """The sessions of a data_access, reached as auth_svc."""

    store: pb_grpc.AccountStoreServiceAsyncStub
    metadata: Metadata

    async def login(
        self,
        account_id: str,
        *,
        ttl: timedelta = DAY,
        ends_in: timedelta = SESSION,
        device: pb.SessionDevice | None = None,
        remembered: bool = False,
    ) -> Login:
        """Start a session."""
        token = _hash()
        created = await self.store.CreateRefreshToken(
            pb.CreateRefreshTokenRequest(
                account_id=account_id,
                token_hash=token,
                expire_time=_in(ttl),
                session_end_time=_in(ends_in),
                remembered=remembered,
                device=device,
            ),
            metadata=self.metadata,
        )
        return Login(token, created.family_id)

    async def rotate(
        self,
        token: str,
        successor: str | None = None,
        *,
        device: pb.SessionDevice | None = None,
        window: timedelta | None = None,
    ) -> str:
        """Refresh with token; return the successor's hash."""
        successor = successor or _hash()
        request = pb.RotateRefreshTokenRequest(
            token_hash=token, new_token_hash=successor, new_expire_time=_in(DAY), device=device
        )
        if window is not None:
            request.reuse_window.FromTimedelta(window)
        await self.store.RotateRefreshToken(request, metadata=self.metadata)
        return successor

    async def refused(self, token: str) -> bool:
        """Whether refreshing with token is refused as invalid."""
        failure = await failure_of(self.rotate(token))
        return (failure.code, failure.reason) == INVALID

    async def live(self, account_id: str) -> list[pb.SessionRecord]:
        """The listed sessions of an account."""
        listed = await self.store.ListSessions(
            pb.ListSessionsRequest(account_id=account_id), metadata=self.metadata
        )
        return list(listed.sessions)

    async def live_ids(self, account_id: str) -> list[str]:
        """The ids of the listed sessions of an account, in listed order."""
        return [session.id for session in await self.live(account_id)]

    async def end(self, account_id: str, session_id: str) -> int:
        """End one session; return the count of ended sessions."""
        ended = await self.store.RevokeSessions(
            pb.RevokeSessionsRequest(account_id=account_id, session_id=session_id),
            metadata=self.metadata,
        )
        return ended.revoked_count

    async def end_all_except(self, account_id: str, keep: str = "") -> int:
        """End every session but keep; return the count of ended sessions."""
        ended = await self.store.RevokeSessions(
            pb.RevokeSessionsRequest(account_id=account_id, all_except_session_id=keep),
            metadata=self.metadata,
        )
        return ended.revoked_count


@pytest.fixture
def sessions(account_store: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata) -> Sessions:
    """The sessions of the session's data_access."""
    return Sessions(account_store, as_auth)


async def test_live_sessions_are_listed_most_recently_used_first_with_their_device(
    sessions: Sessions, new_account: AccountFactory
) -> None:
    account = await new_account()
    laptop = pb.SessionDevice(user_agent="Firefox on Linux", client_ip="192.0.2.7")
    phone = pb.SessionDevice(user_agent="Safari on iOS", client_ip="2001:DB8::1")
    first = await sessions.login(account.id, device=laptop, remembered=True)
    second = await sessions.login(account.id, device=phone)
    assert await sessions.live_ids(account.id) == [second.session_id, first.session_id]

    moved = pb.SessionDevice(user_agent="Firefox on Linux", client_ip="198.51.100.9")
    await sessions.rotate(first.token, device=moved)
    listed = await sessions.live(account.id)

    assert [session.id for session in listed] == [first.session_id, second.session_id]
    refreshed, untouched = listed
    assert refreshed.device == moved
    assert refreshed.remembered
    assert refreshed.last_use_time.ToDatetime() > refreshed.create_time.ToDatetime()
    # The address is stored in its canonical form.
    assert untouched.device == pb.SessionDevice(user_agent="Safari on iOS", client_ip="2001:db8::1")
    assert not untouched.remembered
    assert untouched.last_use_time == untouched.create_time


async def test_expire_time_is_the_live_tokens_expiry_or_the_session_end_if_sooner(
    sessions: Sessions, new_account: AccountFactory
) -> None:
    account = await new_account()
    short_token = await sessions.login(account.id, ttl=timedelta(hours=1))
    short_session = await sessions.login(account.id, ttl=DAY, ends_in=timedelta(hours=2))
    await sessions.rotate(short_session.token)  # asks for a day: capped at the end too

    expiries = {session.id: session.expire_time for session in await sessions.live(account.id)}

    now = datetime.now(UTC)
    assert _near(expiries[short_token.session_id], now + timedelta(hours=1))
    assert _near(expiries[short_session.session_id], now + timedelta(hours=2))


async def test_ended_sessions_are_not_listed(
    sessions: Sessions, new_account: AccountFactory
) -> None:
    account = await new_account()
    live = await sessions.login(account.id)
    logged_out = await sessions.login(account.id)
    await sessions.store.RevokeRefreshToken(
        pb.RevokeRefreshTokenRequest(token_hash=logged_out.token), metadata=sessions.metadata
    )
    reused = await sessions.login(account.id)
    await sessions.rotate(reused.token)
    await failure_of(sessions.rotate(reused.token))  # the reuse revokes the family
    await sessions.login(account.id, ttl=-timedelta(seconds=1))  # token expired
    await sessions.login(account.id, ends_in=-timedelta(seconds=1))  # session over

    assert await sessions.live_ids(account.id) == [live.session_id]


async def test_a_repeated_rotation_is_a_use_too(
    sessions: Sessions, new_account: AccountFactory
) -> None:
    account = await new_account()
    login = await sessions.login(account.id)
    window = timedelta(seconds=5)
    successor = await sessions.rotate(
        login.token, device=pb.SessionDevice(user_agent="tab 1"), window=window
    )
    [before] = await sessions.live(account.id)

    await sessions.rotate(
        login.token, successor, device=pb.SessionDevice(user_agent="tab 2"), window=window
    )

    [after] = await sessions.live(account.id)
    assert after.device.user_agent == "tab 2"
    assert after.last_use_time.ToNanoseconds() > before.last_use_time.ToNanoseconds()


async def test_ending_one_session_leaves_the_others(
    sessions: Sessions, new_account: AccountFactory
) -> None:
    account = await new_account()
    ending = await sessions.login(account.id)
    staying = await sessions.login(account.id)

    assert await sessions.end(account.id, ending.session_id) == 1

    assert await sessions.refused(ending.token)
    assert await sessions.live_ids(account.id) == [staying.session_id]
    await sessions.rotate(staying.token)


async def test_a_session_that_is_not_a_live_one_of_the_account_is_not_found(
    sessions: Sessions, new_account: AccountFactory
) -> None:
    account, someone_else = await new_account(), await new_account()
    theirs = await sessions.login(someone_else.id)
    ended = await sessions.login(account.id)
    await sessions.end(account.id, ended.session_id)

    for session_id in (theirs.session_id, ended.session_id, str(uuid.uuid4()), "nope", ""):
        failure = await failure_of(sessions.end(account.id, session_id))
        assert (failure.code, failure.reason) == NOT_FOUND, session_id

    # The other account's session was left alone.
    assert await sessions.live_ids(someone_else.id) == [theirs.session_id]


async def test_ending_all_sessions_but_one_keeps_it_and_others_accounts(
    sessions: Sessions, new_account: AccountFactory
) -> None:
    account, someone_else = await new_account(), await new_account()
    logins = [await sessions.login(account.id) for _ in range(3)]
    theirs = await sessions.login(someone_else.id)
    kept = logins[1]

    assert await sessions.end_all_except(account.id, kept.session_id) == 2

    assert await sessions.live_ids(account.id) == [kept.session_id]
    assert await sessions.refused(logins[0].token)
    assert await sessions.refused(logins[2].token)
    assert await sessions.end_all_except(account.id) == 1
    assert await sessions.live_ids(account.id) == []
    assert await sessions.end_all_except(account.id) == 0
    assert await sessions.live_ids(someone_else.id) == [theirs.session_id]


@pytest.mark.parametrize(
    ("request_", "bad_field"),
    [
        (pb.RevokeSessionsRequest(account_id=str(uuid.uuid4())), "which"),
        (
            pb.RevokeSessionsRequest(account_id=str(uuid.uuid4()), all_except_session_id="x"),
            "all_except_session_id",
        ),
    ],
    ids=["no-choice", "malformed-keep"],
)
async def test_an_unclear_revocation_is_invalid_argument(
    sessions: Sessions, request_: pb.RevokeSessionsRequest, bad_field: str
) -> None:
    failure = await failure_of(sessions.store.RevokeSessions(request_, metadata=sessions.metadata))

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [bad_field])


async def test_sessions_of_an_unknown_account_are_none_and_a_malformed_id_is_not_found(
    sessions: Sessions,
) -> None:
    assert await sessions.live(str(uuid.uuid4())) == []
    failure = await failure_of(sessions.live("not-an-id"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")


RACES = 30


@pytest.mark.parametrize("which", ["one", "all"])
async def test_a_refresh_racing_the_end_of_its_session_leaves_no_live_successor(
    sessions: Sessions, new_account: AccountFactory, which: str
) -> None:
    account = await new_account()
    for _ in range(RACES):
        login = await sessions.login(account.id)
        ending = (
            sessions.end(account.id, login.session_id)
            if which == "one"
            else sessions.end_all_except(account.id)
        )

        rotated, ended = await asyncio.gather(
            sessions.rotate(login.token), ending, return_exceptions=True
        )

        # The session was live until one of them ran: the end always finds it.
        assert ended == 1
        if isinstance(rotated, grpc.aio.AioRpcError):
            assert (rotated.code(), error_info(rotated).reason) == INVALID
        else:
            assert isinstance(rotated, str)
            assert await sessions.refused(rotated)
        assert await sessions.live_ids(account.id) == []


@pytest.fixture
def private_sessions(
    private_accounts: pb_grpc.AccountStoreServiceAsyncStub, as_auth: Metadata
) -> Sessions:
    """The sessions of the private data_access (whose outbox no sender empties)."""
    return Sessions(private_accounts, as_auth)


async def _queued(database: Database, kind: str) -> int:
    """How many mails of a kind are queued."""
    async with database.transaction() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM outbox WHERE kind = :kind"), {"kind": kind}
        )
    return int(count or 0)


async def _password_changed_at(database: Database, account_id: str) -> datetime | None:
    async with database.transaction() as session:
        changed: datetime | None = await session.scalar(
            text("SELECT password_changed_at FROM accounts WHERE id = :id"),
            {"id": uuid.UUID(account_id)},
        )
    return changed


async def _stored_hash(sessions: Sessions, email: str) -> str:
    credentials = await sessions.store.GetCredentials(
        pb.GetCredentialsRequest(email=email), metadata=sessions.metadata
    )
    return credentials.password_hash


async def _replace(
    sessions: Sessions,
    account_id: str,
    old: str,
    new: str,
    *,
    changed: bool,
    keep: str = "",
    kind: str = "",
) -> bool:
    reply = await sessions.store.ReplacePasswordHash(
        pb.ReplacePasswordHashRequest(
            account_id=account_id,
            old_password_hash=old,
            new_password_hash=new,
            password_changed=changed,
            keep_session_id=keep,
            mail=pb.SealedMail(kind=kind, sealed=b"sealed") if kind else None,
        ),
        metadata=sessions.metadata,
    )
    return reply.replaced


async def test_a_password_change_ends_every_other_session_and_queues_its_mail(
    private_sessions: Sessions, new_private_account: AccountFactory, private_database: Database
) -> None:
    account = await new_private_account()
    logins = [await private_sessions.login(account.id) for _ in range(3)]
    current = logins[0]
    kind = f"k_{uuid.uuid4().hex}"
    stored = await _stored_hash(private_sessions, account.email)

    replaced = await _replace(
        private_sessions,
        account.id,
        stored,
        "$2b$04$changed",
        changed=True,
        keep=current.session_id,
        kind=kind,
    )

    assert replaced
    assert await private_sessions.live_ids(account.id) == [current.session_id]
    assert await private_sessions.refused(logins[1].token)
    assert await _queued(private_database, kind) == 1
    assert await _password_changed_at(private_database, account.id) is not None
    # Without a session to keep, a change ends every one.
    assert await _replace(
        private_sessions, account.id, "$2b$04$changed", "$2b$04$again", changed=True
    )
    assert await private_sessions.live_ids(account.id) == []


async def test_a_rehash_or_a_stale_change_ends_nothing_and_queues_nothing(
    private_sessions: Sessions, new_private_account: AccountFactory, private_database: Database
) -> None:
    account = await new_private_account()
    login = await private_sessions.login(account.id)
    stored = await _stored_hash(private_sessions, account.email)
    stale, rehash = f"k_{uuid.uuid4().hex}", f"k_{uuid.uuid4().hex}"

    assert not await _replace(
        private_sessions, account.id, "$2b$04$stale", "$2b$04$x", changed=True, kind=stale
    )
    assert await _replace(
        private_sessions,
        account.id,
        stored,
        "$2b$12$x",
        changed=False,
        kind=rehash,
    )

    assert await private_sessions.live_ids(account.id) == [login.session_id]
    assert await _password_changed_at(private_database, account.id) is None
    assert await _queued(private_database, stale) == 0
    assert await _queued(private_database, rehash) == 1


async def test_a_malformed_session_to_keep_is_invalid_argument(
    private_sessions: Sessions, new_private_account: AccountFactory
) -> None:
    account = await new_private_account()

    failure = await failure_of(
        _replace(private_sessions, account.id, "a", "b", changed=True, keep="nope")
    )

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["keep_session_id"])
