"""HitRateWindows against the real database: the fixed-window counters behind the edge's shared
rate limits (docs/rate-limits.md)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from data_access.database import open_database
from data_access.sweeper import RATE_WINDOWS
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import Metadata, failure_of

pytestmark = pytest.mark.integration

RACERS = 20


@pytest.fixture(scope="module")
def security(data_access_channel: grpc.aio.Channel) -> pb_grpc.AccountSecurityServiceAsyncStub:
    """AccountSecurityService stub of the session's data_access."""
    return pb_grpc.AccountSecurityServiceStub(data_access_channel)


def _request(*keys: str, seconds: int = 3600, count: int = 1) -> pb.HitRateWindowsRequest:
    """Hits on keys, each in windows of seconds."""
    return pb.HitRateWindowsRequest(
        hits=[pb.RateWindowHit(key=key, window=Duration(seconds=seconds)) for key in keys],
        count=count,
    )


async def _wait_until(moment: datetime) -> None:
    """Sleep until just after moment."""
    await asyncio.sleep(max((moment - datetime.now(tz=UTC)).total_seconds(), 0) + 0.05)


def _key() -> str:
    """A key no other test counts on."""
    return f"edge:login:{uuid.uuid4().hex}"


async def test_concurrent_hits_on_one_key_are_each_counted_once(
    security: pb_grpc.AccountSecurityServiceAsyncStub, as_auth: Metadata
) -> None:
    key = _key()
    answers = await asyncio.gather(
        *(security.HitRateWindows(_request(key), metadata=as_auth) for _ in range(RACERS))
    )
    # Every hit saw a different count: none was lost, none counted twice.
    assert sorted(answer.counts[0].hits for answer in answers) == list(range(1, RACERS + 1))
    again = await security.HitRateWindows(_request(key), metadata=as_auth)
    assert again.counts[0].hits == RACERS + 1


async def test_keys_are_counted_apart_and_answered_in_request_order(
    security: pb_grpc.AccountSecurityServiceAsyncStub, as_auth: Metadata
) -> None:
    first, second = _key(), _key()
    await security.HitRateWindows(_request(first, count=3), metadata=as_auth)
    # Asked in the other order than code-point order on purpose.
    later, earlier = sorted([first, second], reverse=True)
    answer = await security.HitRateWindows(_request(later, earlier), metadata=as_auth)
    counts = {count.key: count.hits for count in answer.counts}
    assert [count.key for count in answer.counts] == [later, earlier]
    assert counts == {first: 4, second: 1}


async def test_a_window_ends_on_a_whole_multiple_of_its_length(
    security: pb_grpc.AccountSecurityServiceAsyncStub, as_auth: Metadata
) -> None:
    answer = await security.HitRateWindows(_request(_key(), seconds=60), metadata=as_auth)
    ends_at = answer.counts[0].end_time.ToDatetime(tzinfo=UTC)
    assert ends_at.timestamp() % 60 == 0
    assert 0 < (ends_at - datetime.now(tz=UTC)).total_seconds() <= 61


async def test_a_new_window_counts_from_zero(
    security: pb_grpc.AccountSecurityServiceAsyncStub, as_auth: Metadata
) -> None:
    key = _key()
    first = await security.HitRateWindows(_request(key, seconds=1, count=5), metadata=as_auth)
    ends_at = first.counts[0].end_time.ToDatetime(tzinfo=UTC)
    # Wait out the one-second window as the database tells it (a count, not a duration, is
    # what the test checks).
    await _wait_until(ends_at)
    later = await security.HitRateWindows(_request(key, seconds=1), metadata=as_auth)
    assert later.counts[0].hits == 1


async def test_ended_windows_are_swept(
    security: pb_grpc.AccountSecurityServiceAsyncStub, as_auth: Metadata, database_url: str
) -> None:
    key = _key()
    first = await security.HitRateWindows(_request(key, seconds=1), metadata=as_auth)
    ends_at = first.counts[0].end_time.ToDatetime(tzinfo=UTC)
    await _wait_until(ends_at)
    database = open_database(database_url, pool_size=1, max_overflow=0)
    try:
        async with database.transaction() as session:
            await RATE_WINDOWS.run_batch(session, 10_000)
    finally:
        await database.dispose()
    # The row went, so the key's next window starts from this hit alone.
    later = await security.HitRateWindows(_request(key, seconds=3600), metadata=as_auth)
    assert later.counts[0].hits == 1


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_request("k", seconds=0), "hits[0].window"),
        (_request("k", seconds=86_401), "hits[0].window"),
        (_request("k", count=0), "count"),
        (_request("k", "k"), "hits[1].key"),
        (_request(""), "hits[0].key"),
        (_request(*(f"k{n}" for n in range(9))), "hits"),
    ],
)
async def test_bad_hits_are_invalid_argument(
    security: pb_grpc.AccountSecurityServiceAsyncStub,
    as_auth: Metadata,
    request_: pb.HitRateWindowsRequest,
    field: str,
) -> None:
    failure = await failure_of(security.HitRateWindows(request_, metadata=as_auth))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in failure.fields


async def test_only_auth_svc_may_count(
    security: pb_grpc.AccountSecurityServiceAsyncStub, as_user: Metadata
) -> None:
    failure = await failure_of(security.HitRateWindows(_request(_key()), metadata=as_user))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
