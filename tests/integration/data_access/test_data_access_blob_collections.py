"""The blob-collection queue through MediaStoreService (as storage_svc's collector calls it) and
its filling by the purge of accounts deleted for good, against the real database.

The queue is one table for the whole database: these tests run a data_access of their own on a
database of their own, and empty the queue before each test, so claims see only their rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from pydantic import SecretStr
from sqlalchemy import text

from data_access.accounts import AccountStore
from data_access.database import Database, open_database
from data_access.server import build_definition
from data_access.settings import DataAccessSettings
from data_access.sweeper import PURGE, Sweeper
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import Metadata, failure_of, migrated_database, serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def queue_database_url(database_url: str) -> AsyncIterator[str]:
    """A migrated database of this module's own."""
    async with migrated_database(database_url, "meshgram_blob_queue") as url:
        yield url


@pytest.fixture(scope="module")
async def queue_database(queue_database_url: str) -> AsyncIterator[Database]:
    """A pool on that database, for setting up and reading rows as no RPC does."""
    opened = open_database(queue_database_url, pool_size=2, application_name="tests")
    yield opened
    await opened.dispose()


@pytest.fixture(scope="module")
async def media(
    queue_database_url: str, mesh_secret: str
) -> AsyncIterator[pb_grpc.MediaStoreServiceAsyncStub]:
    """MediaStoreService of a data_access in-process on that database."""
    settings = DataAccessSettings(host="127.0.0.1", port=0, mesh_secret=SecretStr(mesh_secret))
    async with (
        serving(build_definition(settings, queue_database_url), grace=1.0) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield pb_grpc.MediaStoreServiceStub(channel)


@pytest.fixture(autouse=True)
async def empty_queue(queue_database: Database) -> None:
    """Start every test with nothing queued."""
    await execute(queue_database, "DELETE FROM blob_collections")


async def execute(database: Database, statement: str, **params: object) -> None:
    """Run one statement in its own transaction."""
    async with database.transaction() as session:
        await session.execute(text(statement), params)


def new_key() -> str:
    """A fresh hex SHA-256 blob key."""
    return hashlib.sha256(uuid.uuid4().bytes).hexdigest()


async def enqueue(database: Database, key: str, *, age_seconds: float = 0) -> None:
    """Queue key as if its images had been deleted age_seconds ago."""
    await execute(
        database,
        "INSERT INTO blob_collections (sha256, queued_at) "
        "VALUES (:key, now() - make_interval(secs => :age))",
        key=key,
        age=age_seconds,
    )


async def queued(database: Database) -> set[str]:
    """The keys on the queue, claimed or not."""
    async with database.transaction() as session:
        return set(await session.scalars(text("SELECT sha256 FROM blob_collections")))


async def new_owner(database: Database) -> str:
    """A new account's id."""
    unique = uuid.uuid4().hex[:16]
    account = await AccountStore(database).create(f"{unique}@example.com", f"u_{unique}", "h")
    return str(account.id)


async def record_image(
    media: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    owner_id: str,
    key: str,
    *,
    as_rendition: bool = False,
) -> None:
    """Record an image of owner_id that names the blob key: as its kept original, or (with
    as_rendition) as one of its renditions while its original is not kept."""
    renditions = []
    if as_rendition:
        renditions.append(
            pb.RenditionRecord(
                variant="w320",
                format="webp",
                content_type="image/webp",
                sha256=key,
                size_bytes=512,
                width=32,
                height=32,
            )
        )
    image = pb.ImageRecord(
        owner_id=owner_id,
        content_type="image/png",
        size_bytes=1024,
        width=32,
        height=32,
        sha256=new_key() if as_rendition else key,
        original_kept=not as_rendition,
        renditions=renditions,
    )
    await media.CreateImage(pb.CreateImageRequest(image=image), metadata=as_storage)


def lease_of(seconds: float) -> Duration:
    """A Duration of the given seconds."""
    lease = Duration()
    lease.FromNanoseconds(int(seconds * 1e9))
    return lease


async def claim(
    media: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    *,
    limit: int = 100,
    lease_seconds: float = 300,
) -> list[str]:
    """Claim queued keys as the collector does."""
    request = pb.ClaimBlobCollectionsRequest(limit=limit, lease=lease_of(lease_seconds))
    response = await media.ClaimBlobCollections(request, metadata=as_storage)
    return list(response.sha256)


async def complete(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, key: str
) -> bool:
    """Complete a key as the collector does; whether an image names it."""
    request = pb.CompleteBlobCollectionRequest(sha256=key)
    response = await media.CompleteBlobCollection(request, metadata=as_storage)
    return response.referenced


async def purge_due_accounts(database: Database) -> None:
    """Delete for good every account whose grace period is over, as the sweeper does."""
    sweeper = Sweeper(database, PURGE, interval_seconds=3600, batch_size=1)
    for _ in range(100):
        # None: data_access's own purge sweeper holds the lock; it deletes them just as well.
        if await sweeper.sweep_once() is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the purge lock stayed taken")


async def deletion_due(database: Database, account_id: str, *, due: bool = True) -> None:
    """Deactivate an account with its grace period over (or not yet, when due is False)."""
    await execute(
        database,
        "UPDATE accounts SET deactivated_at = now() - interval '31 days', "
        "delete_after = now() + make_interval(secs => :offset) WHERE id = :id",
        id=uuid.UUID(account_id),
        offset=-1 if due else 3600,
    )


async def account_exists(database: Database, account_id: str) -> bool:
    """Whether the account row is still there."""
    async with database.transaction() as session:
        found = await session.scalar(
            text("SELECT count(*) FROM accounts WHERE id = :id"), {"id": uuid.UUID(account_id)}
        )
        return bool(found)


# --- claims -----------------------------------------------------------------------------------


async def test_claims_take_the_oldest_first_up_to_the_limit(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    newest, oldest, middle = new_key(), new_key(), new_key()
    await enqueue(queue_database, newest, age_seconds=10)
    await enqueue(queue_database, oldest, age_seconds=30)
    await enqueue(queue_database, middle, age_seconds=20)

    first = await claim(media, as_storage, limit=2)
    second = await claim(media, as_storage, limit=2)
    third = await claim(media, as_storage, limit=2)

    # The oldest two are the ones claimed (the order of the list is not checked).
    assert sorted(first) == sorted([oldest, middle])
    assert second == [newest]
    assert third == []
    # Claiming takes nothing off the queue: only completing does.
    assert await queued(queue_database) == {newest, oldest, middle}


async def test_claimed_blobs_are_claimed_again_only_once_the_lease_ran_out(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    held, other = new_key(), new_key()
    await enqueue(queue_database, held, age_seconds=5)

    assert await claim(media, as_storage, lease_seconds=1) == [held]
    await enqueue(queue_database, other)
    assert await claim(media, as_storage, lease_seconds=1) == [other]
    assert await claim(media, as_storage, lease_seconds=1) == []
    await asyncio.sleep(1.3)

    assert sorted(await claim(media, as_storage, lease_seconds=60)) == sorted([held, other])


async def test_a_longer_lease_holds_past_a_shorter_one(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    key = new_key()
    await enqueue(queue_database, key)

    assert await claim(media, as_storage, lease_seconds=3) == [key]
    await asyncio.sleep(1.3)

    assert await claim(media, as_storage, lease_seconds=1) == []


@pytest.mark.parametrize(("limit", "lease_seconds"), [(1, 1), (1000, 3600)])
async def test_the_bounds_of_limit_and_lease_are_accepted(
    media: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    queue_database: Database,
    limit: int,
    lease_seconds: float,
) -> None:
    key = new_key()
    await enqueue(queue_database, key)

    assert await claim(media, as_storage, limit=limit, lease_seconds=lease_seconds) == [key]


@pytest.mark.parametrize(
    ("limit", "lease", "field"),
    [
        pytest.param(0, lease_of(60), "limit", id="limit-0"),
        pytest.param(-1, lease_of(60), "limit", id="limit-negative"),
        pytest.param(1001, lease_of(60), "limit", id="limit-1001"),
        pytest.param(10, lease_of(0), "lease", id="lease-0"),
        pytest.param(10, lease_of(0.5), "lease", id="lease-half-second"),
        pytest.param(10, lease_of(-5), "lease", id="lease-negative"),
        pytest.param(10, lease_of(3601), "lease", id="lease-over-an-hour"),
        pytest.param(10, None, "lease", id="lease-unset"),
    ],
)
async def test_claims_out_of_bounds_are_invalid_and_claim_nothing(
    media: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    queue_database: Database,
    limit: int,
    lease: Duration | None,
    field: str,
) -> None:
    key = new_key()
    await enqueue(queue_database, key)
    request = pb.ClaimBlobCollectionsRequest(limit=limit, lease=lease)

    failure = await failure_of(media.ClaimBlobCollections(request, metadata=as_storage))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == [field]
    assert await claim(media, as_storage) == [key]


# --- completion ---------------------------------------------------------------------------------


async def test_complete_takes_the_blob_off_and_says_whether_an_image_names_it(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    named, orphan = new_key(), new_key()
    await record_image(media, as_storage, await new_owner(queue_database), named)
    await enqueue(queue_database, named)
    await enqueue(queue_database, orphan)
    assert sorted(await claim(media, as_storage)) == sorted([named, orphan])

    assert await complete(media, as_storage, named) is True
    assert await complete(media, as_storage, orphan) is False

    assert await queued(queue_database) == set()


async def test_a_rendition_keeps_its_blob_and_an_original_not_kept_does_not(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    owner = await new_owner(queue_database)
    rendition = new_key()
    await record_image(media, as_storage, owner, rendition, as_rendition=True)
    # An image whose original was not kept names its original's digest without using the blob.
    unkept = pb.ImageRecord(
        owner_id=owner,
        content_type="image/png",
        size_bytes=64,
        width=8,
        height=8,
        sha256=new_key(),
        original_kept=False,
    )
    await media.CreateImage(pb.CreateImageRequest(image=unkept), metadata=as_storage)
    await enqueue(queue_database, rendition)
    await enqueue(queue_database, unkept.sha256)
    assert sorted(await claim(media, as_storage)) == sorted([rendition, unkept.sha256])
    assert await complete(media, as_storage, rendition) is True
    assert await complete(media, as_storage, unkept.sha256) is False


async def test_a_completed_blob_is_not_claimed_again(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    done, pending = new_key(), new_key()
    await enqueue(queue_database, done)
    await enqueue(queue_database, pending)
    await claim(media, as_storage, lease_seconds=1)

    await complete(media, as_storage, done)
    await asyncio.sleep(1.3)

    assert await claim(media, as_storage) == [pending]


async def test_completing_a_blob_nobody_queued_is_harmless(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    waiting = new_key()
    await enqueue(queue_database, waiting)

    assert await complete(media, as_storage, new_key()) is False
    assert await complete(media, as_storage, new_key()) is False

    assert await queued(queue_database) == {waiting}


async def test_complete_reads_upper_case_keys_as_the_same_blob(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    key = new_key()
    await record_image(media, as_storage, await new_owner(queue_database), key)
    await enqueue(queue_database, key)

    assert await complete(media, as_storage, key.upper()) is True

    assert await queued(queue_database) == set()


@pytest.mark.parametrize("key", ["", "not-hex", "ab" * 31, "ab" * 33, "zz" * 32])
async def test_complete_of_a_malformed_key_is_invalid(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, key: str
) -> None:
    request = pb.CompleteBlobCollectionRequest(sha256=key)

    failure = await failure_of(media.CompleteBlobCollection(request, metadata=as_storage))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["sha256"]


# --- callers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["user_svc", "auth_svc"])
async def test_only_storage_svc_may_claim_or_complete(
    media: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    as_user: Metadata,
    as_auth: Metadata,
    queue_database: Database,
    caller: str,
) -> None:
    metadata = as_user if caller == "user_svc" else as_auth
    key = new_key()
    await enqueue(queue_database, key)
    claiming = pb.ClaimBlobCollectionsRequest(limit=10, lease=lease_of(60))
    completing = pb.CompleteBlobCollectionRequest(sha256=key)

    claimed = await failure_of(media.ClaimBlobCollections(claiming, metadata=metadata))
    completed = await failure_of(media.CompleteBlobCollection(completing, metadata=metadata))

    assert (claimed.code, claimed.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_ALLOWED",
    )
    assert (completed.code, completed.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_ALLOWED",
    )
    # Neither call touched the queue: the key is still there and unclaimed.
    assert await claim(media, as_storage) == [key]


# --- filling by the purge ---------------------------------------------------------------------


async def test_the_purge_queues_the_distinct_blobs_of_the_deleted_account(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    own, shared, twice, others_only = new_key(), new_key(), new_key(), new_key()
    leaving, staying = await new_owner(queue_database), await new_owner(queue_database)
    for key in (own, shared, twice, twice):
        await record_image(media, as_storage, leaving, key)
    for key in (shared, others_only):
        await record_image(media, as_storage, staying, key)
    await deletion_due(queue_database, leaving)

    await purge_due_accounts(queue_database)

    assert not await account_exists(queue_database, leaving)
    assert await queued(queue_database) == {own, shared, twice}
    assert sorted(await claim(media, as_storage)) == sorted([own, shared, twice])
    # Only the bytes another account's image shares must stay.
    assert await complete(media, as_storage, own) is False
    assert await complete(media, as_storage, twice) is False
    assert await complete(media, as_storage, shared) is True


async def test_accounts_not_yet_due_or_without_images_queue_nothing(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    waiting, empty = await new_owner(queue_database), await new_owner(queue_database)
    await record_image(media, as_storage, waiting, new_key())
    await deletion_due(queue_database, waiting, due=False)
    await deletion_due(queue_database, empty)

    await purge_due_accounts(queue_database)

    assert not await account_exists(queue_database, empty)
    assert await account_exists(queue_database, waiting)
    assert await queued(queue_database) == set()


async def test_a_blob_queued_again_while_claimed_can_be_claimed_at_once(
    media: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, queue_database: Database
) -> None:
    key = new_key()
    await enqueue(queue_database, key)
    assert await claim(media, as_storage, lease_seconds=3600) == [key]
    owner = await new_owner(queue_database)
    await record_image(media, as_storage, owner, key)
    await deletion_due(queue_database, owner)

    await purge_due_accounts(queue_database)

    assert await claim(media, as_storage) == [key]
    assert await complete(media, as_storage, key) is False
