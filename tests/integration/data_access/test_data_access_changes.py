"""ChangeFeedService against the real database: live changes, heartbeats, replay, resets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy import text

from data_access.changes import Change, ChangeFeed, Reset
from data_access.database import Database, open_database
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import AccountFactory, Metadata, failure_of

pytestmark = pytest.mark.integration

Stream = grpc.aio.UnaryStreamCall[pb.SubscribeChangesRequest, pb.SubscribeChangesResponse]


@pytest.fixture(scope="session")
def change_feed(data_access_channel: grpc.aio.Channel) -> pb_grpc.ChangeFeedServiceAsyncStub:
    """ChangeFeedService stub."""
    return pb_grpc.ChangeFeedServiceStub(data_access_channel)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A pool of this test's own on the session's database, for writes no RPC makes."""
    opened = open_database(database_url, pool_size=2)
    yield opened
    await opened.dispose()


def subscribe(
    feed: pb_grpc.ChangeFeedServiceAsyncStub, as_user: Metadata, after: int = 0
) -> Stream:
    """Subscribe to profile changes as user_svc."""
    return feed.SubscribeChanges(
        pb.SubscribeChangesRequest(topics=["profile"], after_position=after), metadata=as_user
    )


async def next_event(stream: Stream, *, kind: str | None = None) -> pb.SubscribeChangesResponse:
    """The stream's next event (of `kind`, skipping others), within 5 s."""
    async with asyncio.timeout(5):
        while True:
            event = await stream.read()
            assert isinstance(event, pb.SubscribeChangesResponse), "the stream ended"
            if kind is None or event.WhichOneof("event") == kind:
                return event


async def change_of(stream: Stream, key: str) -> pb.Change:
    """Read until the change of `key` arrives (other accounts' changes may come first)."""
    while True:
        event = await next_event(stream, kind="change")
        if event.change.key == key:
            return event.change


async def rename(database: Database, account_id: str) -> None:
    """Change an account's username the way a future rename RPC would."""
    async with database.transaction() as session:
        await session.execute(
            text("UPDATE accounts SET username = :name WHERE id = :id"),
            {"name": f"renamed_{uuid.uuid4().hex[:12]}", "id": uuid.UUID(account_id)},
        )


async def abandoned_update(database: Database, account_id: str) -> None:
    """Change a profile in a transaction that then rolls back."""
    async with database.sessions() as session:
        await session.execute(
            text("UPDATE profiles SET bio = 'never' WHERE account_id = :id"),
            {"id": uuid.UUID(account_id)},
        )
        await session.rollback()


async def read_until_error(stream: Stream) -> grpc.StatusCode:
    """Read a stream until it fails (within 5 s) and return its status code."""
    try:
        async with asyncio.timeout(5):
            while True:
                event = await stream.read()
                assert event is not grpc.aio.EOF, "the stream ended without an error"
    except grpc.aio.AioRpcError as error:
        return error.code()


async def resubscribed_change(
    feed: pb_grpc.ChangeFeedServiceAsyncStub, as_user: Metadata, after: int, key: str
) -> pb.Change:
    """Resubscribe after `after` until the feed is back (10 s at most); the first change of
    key past `after` (the replay's safety margin repeats some before it)."""
    async with asyncio.timeout(10):
        while True:
            stream = subscribe(feed, as_user, after=after)
            try:
                while (change := await change_of(stream, key)).position <= after:
                    pass
                return change
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.2)
            finally:
                stream.cancel()


async def test_a_subscription_starts_with_a_heartbeat_then_delivers_each_committed_change(
    change_feed: pb_grpc.ChangeFeedServiceAsyncStub,
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
    new_account: AccountFactory,
) -> None:
    stream = subscribe(change_feed, as_user)
    first = await next_event(stream)
    assert first.WhichOneof("event") == "heartbeat"
    account = await new_account()
    created = await change_of(stream, account.id)
    await profile_store.UpdateProfile(
        pb.UpdateProfileRequest(account_id=account.id, bio="changed"), metadata=as_user
    )
    updated = await change_of(stream, account.id)
    assert (created.topic, updated.topic) == ("profile", "profile")
    assert updated.position > created.position
    # The next heartbeat reports at least the newest position sent.
    beat = await next_event(stream, kind="heartbeat")
    assert beat.heartbeat.position >= updated.position
    stream.cancel()


async def test_a_rename_is_a_change_too_and_a_rolled_back_write_is_not(
    change_feed: pb_grpc.ChangeFeedServiceAsyncStub,
    as_user: Metadata,
    new_account: AccountFactory,
    database: Database,
) -> None:
    account = await new_account()
    stream = subscribe(change_feed, as_user)
    await next_event(stream)
    await abandoned_update(database, account.id)
    await rename(database, account.id)
    first = await change_of(stream, account.id)
    # A notification of the rolled-back update would have come first, naming a position that
    # the log does not hold; the first change to arrive must be the committed rename.
    async with database.transaction() as session:
        rows = await session.execute(
            text("SELECT count(*) FROM change_log WHERE key = :key AND position = :position"),
            {"key": account.id, "position": first.position},
        )
        assert rows.scalar_one() == 1
    stream.cancel()


async def test_a_resubscription_replays_the_changes_made_while_away(
    change_feed: pb_grpc.ChangeFeedServiceAsyncStub,
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
    new_account: AccountFactory,
) -> None:
    account = await new_account()
    stream = subscribe(change_feed, as_user)
    await next_event(stream)
    await profile_store.UpdateProfile(
        pb.UpdateProfileRequest(account_id=account.id, bio="one"), metadata=as_user
    )
    last_seen = (await change_of(stream, account.id)).position
    stream.cancel()
    # Away: two more changes happen.
    for bio in ("two", "three"):
        await profile_store.UpdateProfile(
            pb.UpdateProfileRequest(account_id=account.id, bio=bio), metadata=as_user
        )
    resumed = subscribe(change_feed, as_user, after=last_seen)
    replayed: list[int] = []
    while len(replayed) < 2:
        change = await change_of(resumed, account.id)
        if change.position > last_seen:
            replayed.append(change.position)
    assert replayed == sorted(replayed)
    resumed.cancel()


async def test_resubscribing_from_a_position_no_longer_kept_says_reset(
    change_feed: pb_grpc.ChangeFeedServiceAsyncStub,
    as_user: Metadata,
    new_account: AccountFactory,
    database: Database,
) -> None:
    await new_account()
    async with database.transaction() as session:
        newest = (await session.execute(text("SELECT max(position) FROM change_log"))).scalar_one()
        # What the retention sweeper does to old entries.
        await session.execute(text("DELETE FROM change_log WHERE position < :p"), {"p": newest})
    stream = subscribe(change_feed, as_user, after=newest - 5)
    event = await next_event(stream)
    assert event.WhichOneof("event") == "reset"
    assert "retained" in event.reset.reason
    # The stream goes on live after the reset.
    assert (await next_event(stream)).WhichOneof("event") in ("heartbeat", "change")
    stream.cancel()


async def test_bad_subscriptions_are_refused_with_field_violations(
    change_feed: pb_grpc.ChangeFeedServiceAsyncStub, as_user: Metadata
) -> None:
    unknown = await failure_of(
        change_feed.SubscribeChanges(
            pb.SubscribeChangesRequest(topics=["passwords"]), metadata=as_user
        ).read()
    )
    assert unknown.code == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.fields == ["topics"]
    none = await failure_of(
        change_feed.SubscribeChanges(
            pb.SubscribeChangesRequest(after_position=-1), metadata=as_user
        ).read()
    )
    assert none.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(none.fields) == ["after_position", "topics"]


async def test_only_callers_that_cache_profiles_may_subscribe(
    change_feed: pb_grpc.ChangeFeedServiceAsyncStub, as_storage: Metadata, as_auth: Metadata
) -> None:
    for caller in (as_storage, as_auth):
        refused = await failure_of(
            change_feed.SubscribeChanges(
                pb.SubscribeChangesRequest(topics=["profile"]), metadata=caller
            ).read()
        )
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    anonymous = await failure_of(
        change_feed.SubscribeChanges(pb.SubscribeChangesRequest(topics=["profile"])).read()
    )
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_subscriber_that_falls_behind_gets_one_reset_instead_of_a_backlog(
    database: Database, new_account: AccountFactory
) -> None:
    feed = ChangeFeed(database, heartbeat_seconds=0.05, queue_limit=3)
    feed.start()
    try:
        assert await feed.wait_live(5)
        events = feed.subscribe(["profile"], 0)
        await anext(events)  # the opening heartbeat
        accounts = [await new_account() for _ in range(5)]
        await asyncio.sleep(0.5)  # more changes and heartbeats than the queue holds
        first = await anext(events)
        assert isinstance(first, Reset)
        assert first.reason == "subscriber fell behind"
        # After the reset the subscriber is live again.
        later = await new_account()
        async with asyncio.timeout(5):
            while not (isinstance(event := await anext(events), Change) and event.key == later.id):
                assert not (isinstance(event, Change) and event.key in {a.id for a in accounts})
        await events.aclose()  # type: ignore[attr-defined]  # an async generator, typed as its iterator
    finally:
        await feed.stop()


async def test_the_stream_ends_unavailable_when_the_feed_loses_postgres_and_resumes_after(
    change_feed: pb_grpc.ChangeFeedServiceAsyncStub,
    profile_store: pb_grpc.ProfileStoreServiceAsyncStub,
    as_user: Metadata,
    new_account: AccountFactory,
    database: Database,
) -> None:
    account = await new_account()
    stream = subscribe(change_feed, as_user)
    beat = await next_event(stream, kind="heartbeat")
    async with database.transaction() as session:
        # The feed's connection is the one listening; end it as a database restart would.
        await session.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'data_access' AND pid <> pg_backend_pid() "
                "AND query = 'SELECT 1'"
            )
        )
    assert await read_until_error(stream) == grpc.StatusCode.UNAVAILABLE
    # Changed while nobody listened; found again by resubscribing from the last position.
    await profile_store.UpdateProfile(
        pb.UpdateProfileRequest(account_id=account.id, bio="while away"), metadata=as_user
    )
    await resubscribed_change(change_feed, as_user, beat.heartbeat.position, account.id)
