"""MediaStoreService through real stubs against the real database: images and their
renditions, who may see them, their owners' usage against a quota, their deletion (and the blobs
it queues), avatars, and the migration that brought renditions to images already stored.

The first tests use the session's data_access. The later ones run a data_access of their own on
a database of their own, which they also read directly: the blob-collection queue is one table
for the whole database, and no collector of another test may take keys off it under them.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
import pytest
from pydantic import SecretStr
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from data_access import admin
from data_access.database import Database, open_database
from data_access.embedded import to_asyncpg_url
from data_access.migrate import upgrade_async
from data_access.server import build_definition
from data_access.settings import DataAccessSettings
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import (
    AccountFactory,
    Metadata,
    ProfileReader,
    error_info,
    failure_of,
    field_violations,
    migrated_database,
    serving,
)

pytestmark = pytest.mark.integration


def _image(owner_id: str, **overrides: object) -> pb.ImageRecord:
    fields: dict[str, object] = {
        "owner_id": owner_id,
        "content_type": "image/png",
        "size_bytes": 2048,
        "width": 64,
        "height": 48,
        "sha256": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
    }
    fields.update(overrides)
    return pb.ImageRecord(**fields)  # type: ignore[arg-type]


async def _create(
    store: pb_grpc.MediaStoreServiceAsyncStub, metadata: Metadata, image: pb.ImageRecord
) -> pb.ImageRecord:
    response = await store.CreateImage(pb.CreateImageRequest(image=image), metadata=metadata)
    return response.image


async def test_created_image_gets_an_id_and_reads_back_unchanged(
    media_store: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    new_account: AccountFactory,
) -> None:
    owner = await new_account()
    sent = _image(owner.id, id="client-chosen", sha256="AB" * 32)

    stored = await _create(media_store, as_storage, sent)
    read = await media_store.GetImage(pb.GetImageRequest(image_id=stored.id), metadata=as_storage)

    assert uuid.UUID(stored.id)
    assert stored.id != "client-chosen"
    assert stored.create_time.seconds > 0
    assert stored.sha256 == "ab" * 32
    assert (stored.owner_id, stored.content_type, stored.size_bytes) == (
        owner.id,
        "image/png",
        2048,
    )
    assert (stored.width, stored.height) == (64, 48)
    assert read.image == stored


async def test_the_same_bytes_may_be_recorded_twice(
    media_store: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    new_account: AccountFactory,
) -> None:
    first_owner, second_owner = await new_account(), await new_account()
    digest = hashlib.sha256(b"same picture").hexdigest()

    first = await _create(media_store, as_storage, _image(first_owner.id, sha256=digest))
    second = await _create(media_store, as_storage, _image(second_owner.id, sha256=digest))

    assert first.id != second.id


@pytest.mark.parametrize("owner_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_image_of_missing_owner_is_not_found(
    media_store: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, owner_id: str
) -> None:
    failure = await failure_of(_create(media_store, as_storage, _image(owner_id)))

    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "ACCOUNT_NOT_FOUND"


@pytest.mark.parametrize(
    ("overrides", "bad_field"),
    [
        ({"content_type": ""}, "image.content_type"),
        ({"size_bytes": 0}, "image.size_bytes"),
        ({"width": -1}, "image.width"),
        ({"height": 0}, "image.height"),
        ({"sha256": "not-hex"}, "image.sha256"),
    ],
)
async def test_unstorable_image_metadata_is_invalid_argument(
    media_store: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    new_account: AccountFactory,
    overrides: dict[str, object],
    bad_field: str,
) -> None:
    owner = await new_account()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _create(media_store, as_storage, _image(owner.id, **overrides))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(caught.value)) == [bad_field]


@pytest.mark.parametrize("image_id", [str(uuid.uuid4()), "nope", ""])
async def test_missing_or_malformed_image_is_not_found(
    media_store: pb_grpc.MediaStoreServiceAsyncStub, as_storage: Metadata, image_id: str
) -> None:
    failure = await failure_of(
        media_store.GetImage(pb.GetImageRequest(image_id=image_id), metadata=as_storage)
    )

    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "IMAGE_NOT_FOUND"


async def test_own_image_becomes_the_avatar_on_the_profile(
    media_store: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    new_account: AccountFactory,
    profile_of: ProfileReader,
) -> None:
    owner = await new_account()
    image = await _create(media_store, as_storage, _image(owner.id))

    response = await media_store.SetAvatar(
        pb.SetAvatarRequest(account_id=owner.id, image_id=image.id), metadata=as_storage
    )

    assert response.image == image
    assert (await profile_of(owner.id)).avatar_image_id == image.id


async def test_someone_elses_image_cannot_become_an_avatar(
    media_store: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    new_account: AccountFactory,
    profile_of: ProfileReader,
) -> None:
    victim, intruder = await new_account(), await new_account()
    victims_image = await _create(media_store, as_storage, _image(victim.id))

    failure = await failure_of(
        media_store.SetAvatar(
            pb.SetAvatarRequest(account_id=intruder.id, image_id=victims_image.id),
            metadata=as_storage,
        )
    )

    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "IMAGE_NOT_FOUND"
    assert (await profile_of(intruder.id)).avatar_image_id == ""


@pytest.mark.parametrize(
    ("account_id", "image_id"),
    [("bad", str(uuid.uuid4())), (str(uuid.uuid4()), "bad"), ("", "")],
)
async def test_avatar_with_malformed_ids_is_not_found(
    media_store: pb_grpc.MediaStoreServiceAsyncStub,
    as_storage: Metadata,
    account_id: str,
    image_id: str,
) -> None:
    failure = await failure_of(
        media_store.SetAvatar(
            pb.SetAvatarRequest(account_id=account_id, image_id=image_id), metadata=as_storage
        )
    )

    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "IMAGE_NOT_FOUND"


# --- a data_access and database of these tests' own ------------------------------------------


class Mesh:
    """Stubs of the data_access these tests run, with the credentials of its callers."""

    def __init__(self, channel: grpc.aio.Channel, as_storage: Metadata, as_user: Metadata) -> None:
        self.media: pb_grpc.MediaStoreServiceAsyncStub = pb_grpc.MediaStoreServiceStub(channel)
        self.accounts: pb_grpc.AccountStoreServiceAsyncStub = pb_grpc.AccountStoreServiceStub(
            channel
        )
        self.profiles: pb_grpc.ProfileStoreServiceAsyncStub = pb_grpc.ProfileStoreServiceStub(
            channel
        )
        self.graph: pb_grpc.SocialGraphServiceAsyncStub = pb_grpc.SocialGraphServiceStub(channel)
        self.as_storage = as_storage
        self.as_user = as_user


@pytest.fixture(scope="module")
async def media_database_url(database_url: str) -> AsyncIterator[str]:
    """A migrated database of this module's own."""
    async with migrated_database(database_url, "meshgram_media") as url:
        yield url


@pytest.fixture(scope="module")
async def media_database(media_database_url: str) -> AsyncIterator[Database]:
    """A pool on that database, for setting up and reading rows as no RPC does."""
    opened = open_database(media_database_url, pool_size=2, application_name="tests")
    yield opened
    await opened.dispose()


@pytest.fixture(scope="module")
async def mesh(
    media_database_url: str, mesh_secret: str, as_storage: Metadata, as_user: Metadata
) -> AsyncIterator[Mesh]:
    """A data_access in-process on that database."""
    settings = DataAccessSettings(host="127.0.0.1", port=0, mesh_secret=SecretStr(mesh_secret))
    async with (
        serving(build_definition(settings, media_database_url), grace=1.0) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield Mesh(channel, as_storage, as_user)


@pytest.fixture(scope="module")
def owner(mesh: Mesh, as_auth: Metadata) -> AccountFactory:
    """Factory of unique accounts in that data_access."""

    async def create() -> pb.AccountRecord:
        unique = uuid.uuid4().hex[:16]
        response = await mesh.accounts.CreateAccount(
            pb.CreateAccountRequest(
                email=f"{unique}@example.com",
                username=f"user_{unique}",
                password_hash=f"$2b$04${unique}",
            ),
            metadata=as_auth,
        )
        return response.account

    return create


def new_key() -> str:
    """A fresh hex SHA-256 blob key."""
    return hashlib.sha256(uuid.uuid4().bytes).hexdigest()


def rendition(
    variant: str, fmt: str, width: int, height: int, size_bytes: int, sha256: str = ""
) -> pb.RenditionRecord:
    """A rendition with a fresh blob key unless one is given."""
    return pb.RenditionRecord(
        variant=variant,
        format=fmt,
        content_type=f"image/{fmt}",
        sha256=sha256 or new_key(),
        size_bytes=size_bytes,
        width=width,
        height=height,
    )


# Four variants in two formats, listed neither smallest first nor grouped by variant.
EIGHT = (
    ("w1080", "webp", 1080, 810, 91_000),
    ("square150", "webp", 150, 150, 4_100),
    ("w640", "jpeg", 640, 480, 52_000),
    ("w320", "webp", 320, 240, 11_000),
    ("square150", "jpeg", 150, 150, 5_300),
    ("w1080", "jpeg", 1080, 810, 120_000),
    ("w320", "jpeg", 320, 240, 14_000),
    ("w640", "webp", 640, 480, 38_000),
)
SMALLEST_FIRST = [
    ("square150", "jpeg"),
    ("square150", "webp"),
    ("w320", "jpeg"),
    ("w320", "webp"),
    ("w640", "jpeg"),
    ("w640", "webp"),
    ("w1080", "jpeg"),
    ("w1080", "webp"),
]


def eight_renditions() -> list[pb.RenditionRecord]:
    """The eight renditions of EIGHT, each with a fresh key."""
    return [rendition(*spec) for spec in EIGHT]


def picture(
    owner_id: str,
    *,
    size_bytes: int = 2048,
    kept: bool = True,
    renditions: Sequence[pb.RenditionRecord] = (),
    sha256: str = "",
    placeholder: str = "",
) -> pb.ImageRecord:
    """An image of owner_id as storage_svc records it."""
    return pb.ImageRecord(
        owner_id=owner_id,
        content_type="image/png",
        size_bytes=size_bytes,
        width=1200,
        height=900,
        sha256=sha256 or new_key(),
        placeholder=placeholder,
        original_kept=kept,
        renditions=list(renditions),
    )


async def record(mesh: Mesh, image: pb.ImageRecord, *, quota_bytes: int = 0) -> pb.ImageRecord:
    """CreateImage as storage_svc calls it; the stored record."""
    request = pb.CreateImageRequest(image=image, quota_bytes=quota_bytes)
    return (await mesh.media.CreateImage(request, metadata=mesh.as_storage)).image


async def get(mesh: Mesh, image_id: str) -> pb.ImageRecord:
    """GetImage; the stored record."""
    request = pb.GetImageRequest(image_id=image_id)
    return (await mesh.media.GetImage(request, metadata=mesh.as_storage)).image


async def usage(mesh: Mesh, account_id: str) -> int:
    """GetMediaUsage; the bytes the account's images take."""
    request = pb.GetMediaUsageRequest(account_id=account_id)
    return (await mesh.media.GetMediaUsage(request, metadata=mesh.as_storage)).used_bytes


async def access(mesh: Mesh, image_id: str, viewer_id: str) -> pb.GetImageAccessResponse:
    """GetImageAccess."""
    request = pb.GetImageAccessRequest(image_id=image_id, viewer_id=viewer_id)
    return await mesh.media.GetImageAccess(request, metadata=mesh.as_storage)


async def listed(
    mesh: Mesh, owner_id: str, page_size: int, before_position: int = 0
) -> pb.ListImagesResponse:
    """ListImages."""
    request = pb.ListImagesRequest(
        owner_id=owner_id, page_size=page_size, before_position=before_position
    )
    return await mesh.media.ListImages(request, metadata=mesh.as_storage)


async def delete(mesh: Mesh, actor_id: str, image_id: str) -> pb.ImageRecord:
    """DeleteImage; the image as it was."""
    request = pb.DeleteImageRequest(actor_id=actor_id, image_id=image_id)
    return (await mesh.media.DeleteImage(request, metadata=mesh.as_storage)).image


async def add_renditions(
    mesh: Mesh, image_id: str, renditions: Sequence[pb.RenditionRecord], placeholder: str = ""
) -> pb.ImageRecord:
    """AddRenditions; the image with its renditions."""
    request = pb.AddRenditionsRequest(
        image_id=image_id, renditions=list(renditions), placeholder=placeholder
    )
    return (await mesh.media.AddRenditions(request, metadata=mesh.as_storage)).image


async def queue_unreferenced(mesh: Mesh, keys: Sequence[str]) -> list[str]:
    """QueueUnreferencedBlobs; the keys it queued."""
    request = pb.QueueUnreferencedBlobsRequest(sha256=list(keys))
    response = await mesh.media.QueueUnreferencedBlobs(request, metadata=mesh.as_storage)
    return list(response.sha256)


async def rows(database: Database, statement: str, **params: object) -> list[Mapping[Any, Any]]:
    """The rows of one statement, run in its own transaction."""
    async with database.transaction() as session:
        return list((await session.execute(text(statement), params)).mappings())


async def queued(database: Database, keys: Sequence[str]) -> set[str]:
    """Those of keys that are on the blob-collection queue."""
    found = await rows(
        database,
        "SELECT sha256 FROM blob_collections WHERE sha256 = ANY(:keys)",
        keys=list(keys),
    )
    return {row["sha256"] for row in found}


async def image_count(database: Database, owner_id: str) -> int:
    """How many image rows the account has."""
    found = await rows(
        database, "SELECT count(*) AS n FROM images WHERE owner_id = :id", id=uuid.UUID(owner_id)
    )
    return int(found[0]["n"])


async def rendition_count(database: Database, image_id: str) -> int:
    """How many rendition rows name the image."""
    found = await rows(
        database,
        "SELECT count(*) AS n FROM image_renditions WHERE image_id = :id",
        id=uuid.UUID(image_id),
    )
    return int(found[0]["n"])


def shapes(renditions: Sequence[pb.RenditionRecord]) -> list[tuple[str, str]]:
    """The (variant, format) of each rendition, in order."""
    return [(r.variant, r.format) for r in renditions]


def by_shape(renditions: Sequence[pb.RenditionRecord]) -> dict[tuple[str, str], bytes]:
    """Each rendition, serialised, by its (variant, format): equality regardless of order."""
    return {(r.variant, r.format): r.SerializeToString(deterministic=True) for r in renditions}


# --- CreateImage and GetImage with renditions ---------------------------------------------------


async def test_eight_renditions_read_back_whole_smallest_first(
    mesh: Mesh, owner: AccountFactory
) -> None:
    account = await owner()
    sent = eight_renditions()
    # An upper-case digest is the same blob; it is stored lower-case.
    sent[3].sha256 = sent[3].sha256.upper()
    image = picture(
        account.id,
        size_bytes=700_000,
        renditions=sent,
        placeholder="LEHV6nWB2yk8pyo0adR*.7kCMdnj",
    )

    created = await record(mesh, image)
    read = await get(mesh, created.id)

    assert shapes(read.renditions) == SMALLEST_FIRST
    expected = list(sent)
    expected[3] = rendition(*EIGHT[3], sha256=sent[3].sha256.lower())
    assert by_shape(read.renditions) == by_shape(expected)
    assert by_shape(created.renditions) == by_shape(expected)
    assert (read.owner_id, read.content_type, read.size_bytes) == (account.id, "image/png", 700_000)
    assert (read.width, read.height, read.sha256) == (1200, 900, image.sha256)
    assert read.placeholder == image.placeholder
    assert read.original_kept is True
    assert read.position > 0
    assert read.create_time.seconds > 0
    renditions_bytes = sum(spec[4] for spec in EIGHT)
    assert read.stored_bytes == renditions_bytes + 700_000
    assert await usage(mesh, account.id) == read.stored_bytes


async def test_the_created_record_equals_the_one_read_back(
    mesh: Mesh, owner: AccountFactory
) -> None:
    account = await owner()

    created = await record(mesh, picture(account.id, renditions=eight_renditions()))

    assert shapes(created.renditions) == SMALLEST_FIRST
    assert created == await get(mesh, created.id)


async def test_an_original_not_kept_takes_no_bytes_and_usage_adds_up(
    mesh: Mesh, owner: AccountFactory
) -> None:
    account = await owner()
    only_renditions = [rendition("w320", "webp", 320, 240, 9_000)]

    first = await record(
        mesh, picture(account.id, size_bytes=50_000, kept=False, renditions=only_renditions)
    )
    second = await record(mesh, picture(account.id, size_bytes=3_000))

    assert first.original_kept is False
    assert first.stored_bytes == 9_000
    assert second.stored_bytes == 3_000
    assert second.position > first.position
    assert await usage(mesh, account.id) == 12_000


def _with_bad_digest() -> list[pb.RenditionRecord]:
    found = eight_renditions()[:2]
    found[1].sha256 = "zz" * 32
    return found


def _with_repeat() -> list[pb.RenditionRecord]:
    return [rendition("w320", "webp", 320, 240, 10), rendition("w320", "webp", 320, 240, 20)]


def _sized(**zeroes: int) -> list[pb.RenditionRecord]:
    found = rendition("w320", "webp", 320, 240, 10)
    for name, value in zeroes.items():
        setattr(found, name, value)
    return [found]


def _thirty_three() -> list[pb.RenditionRecord]:
    return [rendition(f"v{n}", "webp", 10 + n, 10, 100) for n in range(33)]


@pytest.mark.parametrize(
    ("make", "fields"),
    [
        pytest.param(_with_bad_digest, ["image.renditions[1].sha256"], id="bad-sha256"),
        pytest.param(_with_repeat, ["image.renditions[1]"], id="repeated-variant-format"),
        pytest.param(
            lambda: _sized(size_bytes=0), ["image.renditions[0].size_bytes"], id="zero-size"
        ),
        pytest.param(
            lambda: _sized(width=0, height=0),
            ["image.renditions[0].width", "image.renditions[0].height"],
            id="zero-dimensions",
        ),
        pytest.param(
            lambda: [rendition("", "", 10, 10, 10)],
            ["image.renditions[0].variant", "image.renditions[0].format"],
            id="unnamed",
        ),
        pytest.param(_thirty_three, ["image.renditions"], id="33-renditions"),
    ],
)
async def test_unstorable_renditions_are_invalid_and_record_nothing(
    mesh: Mesh,
    owner: AccountFactory,
    media_database: Database,
    make: Callable[[], list[pb.RenditionRecord]],
    fields: list[str],
) -> None:
    account = await owner()

    failure = await failure_of(record(mesh, picture(account.id, renditions=make())))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == fields
    assert await image_count(media_database, account.id) == 0
    assert await usage(mesh, account.id) == 0


async def test_thirty_two_renditions_are_accepted(mesh: Mesh, owner: AccountFactory) -> None:
    account = await owner()

    created = await record(mesh, picture(account.id, renditions=_thirty_three()[:32]))

    assert len((await get(mesh, created.id)).renditions) == 32


async def test_a_negative_quota_is_invalid(mesh: Mesh, owner: AccountFactory) -> None:
    account = await owner()

    failure = await failure_of(record(mesh, picture(account.id), quota_bytes=-1))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["quota_bytes"]


async def test_image_with_renditions_of_a_missing_owner_is_not_found(mesh: Mesh) -> None:
    image = picture(str(uuid.uuid4()), renditions=eight_renditions())

    failure = await failure_of(record(mesh, image, quota_bytes=10**9))

    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")


async def test_an_unknown_owner_is_not_found_whatever_the_quota(mesh: Mesh) -> None:
    image = picture(str(uuid.uuid4()), size_bytes=10_001)

    failure = await failure_of(record(mesh, image, quota_bytes=10_000))

    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")


# --- quota ------------------------------------------------------------------------------------


async def test_a_quota_of_zero_is_no_limit(mesh: Mesh, owner: AccountFactory) -> None:
    account = await owner()

    created = await record(mesh, picture(account.id, size_bytes=5 * 10**12), quota_bytes=0)

    assert await usage(mesh, account.id) == created.stored_bytes == 5 * 10**12


async def test_an_image_past_the_quota_is_refused_and_leaves_no_trace(
    mesh: Mesh, owner: AccountFactory, media_database: Database
) -> None:
    account = await owner()
    # Fills the quota to the byte: allowed.
    await record(mesh, picture(account.id, size_bytes=6_000), quota_bytes=10_000)
    await record(
        mesh,
        picture(account.id, kept=False, renditions=[rendition("w320", "webp", 3, 3, 4_000)]),
        quota_bytes=10_000,
    )
    over = picture(
        account.id, size_bytes=1, kept=False, renditions=[rendition("w320", "webp", 3, 3, 1)]
    )

    failure = await failure_of(record(mesh, over, quota_bytes=10_000))

    assert (failure.code, failure.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert await usage(mesh, account.id) == 10_000
    assert await image_count(media_database, account.id) == 2
    assert len((await listed(mesh, account.id, 10)).images) == 2
    found = await rows(
        media_database,
        "SELECT count(*) AS n FROM image_renditions WHERE sha256 = :key",
        key=over.renditions[0].sha256,
    )
    assert found[0]["n"] == 0


async def test_a_first_image_larger_than_the_quota_is_refused(
    mesh: Mesh, owner: AccountFactory, media_database: Database
) -> None:
    account = await owner()

    failure = await failure_of(
        record(mesh, picture(account.id, size_bytes=10_001), quota_bytes=10_000)
    )

    assert (failure.code, failure.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert await usage(mesh, account.id) == 0
    assert await image_count(media_database, account.id) == 0


async def test_concurrent_images_near_the_quota_never_pass_it(
    mesh: Mesh, owner: AccountFactory, media_database: Database
) -> None:
    account = await owner()
    quota = 10_000

    # Each takes 1,500 bytes: six fit (9,000), a seventh would pass the quota.
    outcomes = await asyncio.gather(
        *(
            record(mesh, picture(account.id, size_bytes=1_500), quota_bytes=quota)
            for _ in range(20)
        ),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    stored = [o for o in outcomes if isinstance(o, pb.ImageRecord)]
    assert len(stored) + len(refused) == 20
    assert len(stored) == 6
    assert {(e.code(), error_info(e).reason) for e in refused} == {
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    }
    recorded = (await listed(mesh, account.id, 100)).images
    assert {i.id for i in recorded} == {i.id for i in stored}
    assert await usage(mesh, account.id) == sum(i.stored_bytes for i in recorded) == 9_000
    assert await image_count(media_database, account.id) == 6


# --- GetImageAccess -----------------------------------------------------------------------------


def facts(answer: pb.GetImageAccessResponse) -> dict[str, bool]:
    """The visibility facts of an answer, by name."""
    return {
        "owner_private": answer.owner_private,
        "owner_hidden": answer.owner_hidden,
        "viewer_follows": answer.viewer_follows,
        "blocked": answer.blocked,
        "viewer_admin": answer.viewer_admin,
    }


NOTHING = dict.fromkeys(
    ("owner_private", "owner_hidden", "viewer_follows", "blocked", "viewer_admin"), False
)


async def set_account(database: Database, account_id: str, assignments: str) -> None:
    """Set columns of an account's row as moderation and deactivation leave them."""
    async with database.transaction() as session:
        await session.execute(
            text(f"UPDATE accounts SET {assignments} WHERE id = :id"),
            {"id": uuid.UUID(account_id)},
        )


async def make_private(mesh: Mesh, account_id: str) -> None:
    """Make an account's profile private, as user_svc does."""
    request = pb.UpdateProfileRequest(account_id=account_id, private=True)
    await mesh.profiles.UpdateProfile(request, metadata=mesh.as_user)


async def follow(mesh: Mesh, follower_id: str, account_id: str) -> None:
    """Follow (or ask to), as user_svc does."""
    request = pb.FollowRequest(follower_id=follower_id, account_id=account_id)
    await mesh.graph.Follow(request, metadata=mesh.as_user)


async def block(mesh: Mesh, blocker_id: str, account_id: str) -> None:
    """Block an account, as user_svc does."""
    request = pb.BlockRequest(blocker_id=blocker_id, account_id=account_id)
    await mesh.graph.Block(request, metadata=mesh.as_user)


async def test_a_stranger_sees_the_image_and_no_relation(mesh: Mesh, owner: AccountFactory) -> None:
    account, stranger = await owner(), await owner()
    image = await record(mesh, picture(account.id, renditions=eight_renditions()))

    answer = await access(mesh, image.id, stranger.id)

    assert answer.image == await get(mesh, image.id)
    assert shapes(answer.image.renditions) == SMALLEST_FIRST
    assert facts(answer) == NOTHING


async def test_a_private_owner_is_reported(mesh: Mesh, owner: AccountFactory) -> None:
    account, stranger = await owner(), await owner()
    image = await record(mesh, picture(account.id))
    await make_private(mesh, account.id)

    assert facts(await access(mesh, image.id, stranger.id)) == NOTHING | {"owner_private": True}


@pytest.mark.parametrize(
    ("assignments", "hidden"),
    [
        pytest.param(
            "deactivated_at = now(), delete_after = now() + interval '30 days'",
            True,
            id="deactivated",
        ),
        pytest.param("blocked_till = now() + interval '1 day'", True, id="blocked-by-admin"),
        pytest.param("blocked_till = now() - interval '1 minute'", False, id="block-expired"),
    ],
)
async def test_a_hidden_owner_is_reported(
    mesh: Mesh,
    owner: AccountFactory,
    media_database: Database,
    assignments: str,
    hidden: bool,
) -> None:
    account, stranger = await owner(), await owner()
    image = await record(mesh, picture(account.id))
    await set_account(media_database, account.id, assignments)

    assert facts(await access(mesh, image.id, stranger.id)) == NOTHING | {"owner_hidden": hidden}


async def test_only_an_approved_follow_counts(mesh: Mesh, owner: AccountFactory) -> None:
    public, private, follower = await owner(), await owner(), await owner()
    public_image = await record(mesh, picture(public.id))
    private_image = await record(mesh, picture(private.id))
    await make_private(mesh, private.id)
    await follow(mesh, follower.id, public.id)
    # Asking to follow a private account leaves the follow pending until approved.
    await follow(mesh, follower.id, private.id)

    assert (await access(mesh, public_image.id, follower.id)).viewer_follows is True
    asked = await access(mesh, private_image.id, follower.id)
    assert facts(asked) == NOTHING | {"owner_private": True}
    # The owner follows nobody: the follow of the viewer does not count the other way.
    assert (await access(mesh, public_image.id, public.id)).viewer_follows is False


@pytest.mark.parametrize("owner_blocks", [True, False], ids=["owner-blocks", "viewer-blocks"])
async def test_a_block_either_way_is_reported(
    mesh: Mesh, owner: AccountFactory, owner_blocks: bool
) -> None:
    account, viewer, bystander = await owner(), await owner(), await owner()
    image = await record(mesh, picture(account.id))
    if owner_blocks:
        await block(mesh, account.id, viewer.id)
    else:
        await block(mesh, viewer.id, account.id)

    assert facts(await access(mesh, image.id, viewer.id)) == NOTHING | {"blocked": True}
    assert facts(await access(mesh, image.id, bystander.id)) == NOTHING


async def test_an_admin_viewer_is_reported(
    mesh: Mesh, owner: AccountFactory, media_database: Database
) -> None:
    account, moderator = await owner(), await owner()
    image = await record(mesh, picture(account.id))
    await set_account(media_database, moderator.id, "role = 'admin'")

    assert facts(await access(mesh, image.id, moderator.id)) == NOTHING | {"viewer_admin": True}


@pytest.mark.parametrize("viewer_id", ["", "not-a-uuid"])
async def test_no_viewer_or_a_malformed_one_is_nobody(
    mesh: Mesh, owner: AccountFactory, viewer_id: str
) -> None:
    account = await owner()
    image = await record(mesh, picture(account.id))
    await make_private(mesh, account.id)

    answer = await access(mesh, image.id, viewer_id)

    assert answer.image.id == image.id
    assert facts(answer) == NOTHING | {"owner_private": True}


@pytest.mark.parametrize("image_id", [str(uuid.uuid4()), "nope"])
async def test_access_to_a_missing_image_is_not_found(
    mesh: Mesh, owner: AccountFactory, image_id: str
) -> None:
    viewer = await owner()

    failure = await failure_of(access(mesh, image_id, viewer.id))

    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")


# --- ListImages -------------------------------------------------------------------------------


async def test_images_are_listed_newest_first_a_page_at_a_time(
    mesh: Mesh, owner: AccountFactory
) -> None:
    account, other = await owner(), await owner()
    created = []
    for n in range(5):
        renditions = eight_renditions()[: n + 1] if n % 2 == 0 else []
        created.append(await record(mesh, picture(account.id, renditions=renditions)))
        # Another account's images interleave with these in position order.
        await record(mesh, picture(other.id))

    first = await listed(mesh, account.id, 2)
    second = await listed(mesh, account.id, 2, first.images[-1].position)
    third = await listed(mesh, account.id, 2, second.images[-1].position)

    pages = [first, second, third]
    assert [p.more for p in pages] == [True, True, False]
    assert [len(p.images) for p in pages] == [2, 2, 1]
    seen = [image for page in pages for image in page.images]
    assert [i.id for i in seen] == [i.id for i in reversed(created)]
    for image in seen:
        assert image == await get(mesh, image.id)
    assert [len(i.renditions) for i in seen] == [5, 0, 3, 0, 1]


async def test_a_page_that_ends_exactly_says_there_is_no_more(
    mesh: Mesh, owner: AccountFactory
) -> None:
    account, empty = await owner(), await owner()
    for _ in range(2):
        await record(mesh, picture(account.id))

    whole = await listed(mesh, account.id, 2)
    nothing = await listed(mesh, empty.id, 10)

    assert (len(whole.images), whole.more) == (2, False)
    assert (list(nothing.images), nothing.more) == ([], False)


@pytest.mark.parametrize(
    ("page_size", "before_position", "field"),
    [
        (0, 0, "page_size"),
        (-1, 0, "page_size"),
        (1001, 0, "page_size"),
        (10, -1, "before_position"),
    ],
)
async def test_bad_pages_are_invalid(
    mesh: Mesh, owner: AccountFactory, page_size: int, before_position: int, field: str
) -> None:
    account = await owner()

    failure = await failure_of(listed(mesh, account.id, page_size, before_position))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == [field]


# --- DeleteImage ------------------------------------------------------------------------------


async def test_the_owner_deletes_an_image_its_renditions_and_its_bytes(
    mesh: Mesh, owner: AccountFactory, media_database: Database
) -> None:
    account = await owner()
    kept = await record(mesh, picture(account.id, size_bytes=500))
    doomed = await record(
        mesh,
        picture(account.id, size_bytes=7_000, renditions=eight_renditions()[:3]),
    )
    keys = [doomed.sha256, *(r.sha256 for r in doomed.renditions)]
    assert await usage(mesh, account.id) == 500 + doomed.stored_bytes

    gone = await delete(mesh, account.id, doomed.id)

    assert gone == doomed
    missing = await failure_of(get(mesh, doomed.id))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    assert await rendition_count(media_database, doomed.id) == 0
    assert await usage(mesh, account.id) == kept.stored_bytes == 500
    assert await queued(media_database, keys) == set(keys)
    assert await queued(media_database, [kept.sha256]) == set()


async def test_deleting_an_image_without_its_original_queues_only_renditions(
    mesh: Mesh, owner: AccountFactory, media_database: Database
) -> None:
    account = await owner()
    image = await record(mesh, picture(account.id, kept=False, renditions=eight_renditions()[:2]))

    await delete(mesh, account.id, image.id)

    renditions = [r.sha256 for r in image.renditions]
    assert await queued(media_database, [image.sha256, *renditions]) == set(renditions)
    assert await usage(mesh, account.id) == 0


@pytest.mark.parametrize("stranger", ["account", "missing", "malformed"])
async def test_anyone_else_deleting_finds_nothing_and_changes_nothing(
    mesh: Mesh, owner: AccountFactory, media_database: Database, stranger: str
) -> None:
    account = await owner()
    image = await record(mesh, picture(account.id, renditions=eight_renditions()[:2]))
    actor = {
        "account": (await owner()).id,
        "missing": str(uuid.uuid4()),
        "malformed": "not-a-uuid",
    }[stranger]

    failure = await failure_of(delete(mesh, actor, image.id))

    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    assert await get(mesh, image.id) == image
    assert await usage(mesh, account.id) == image.stored_bytes
    keys = [image.sha256, *(r.sha256 for r in image.renditions)]
    assert await queued(media_database, keys) == set()


async def test_an_admin_deletes_anyones_image_and_the_audit_log_says_so(
    mesh: Mesh, owner: AccountFactory, media_database: Database
) -> None:
    account, moderator = await owner(), await owner()
    await set_account(media_database, moderator.id, "role = 'admin'")
    image = await record(mesh, picture(account.id, size_bytes=4_000))

    gone = await delete(mesh, moderator.id, image.id)

    assert gone.id == image.id
    assert await image_count(media_database, account.id) == 0
    assert await usage(mesh, account.id) == 0
    assert await queued(media_database, [image.sha256]) == {image.sha256}
    entries = await rows(
        media_database,
        "SELECT actor_id, action, reason FROM audit_events WHERE account_id = :id",
        id=uuid.UUID(account.id),
    )
    assert [(str(e["actor_id"]), e["action"]) for e in entries] == [(moderator.id, "image_deleted")]
    assert image.id in entries[0]["reason"]


async def test_an_owner_deleting_their_own_image_is_not_audited(
    mesh: Mesh, owner: AccountFactory, media_database: Database
) -> None:
    account = await owner()
    image = await record(mesh, picture(account.id))

    await delete(mesh, account.id, image.id)

    entries = await rows(
        media_database,
        "SELECT action FROM audit_events WHERE account_id = :id",
        id=uuid.UUID(account.id),
    )
    assert entries == []


async def test_deleting_the_avatar_clears_it_from_the_profile(
    mesh: Mesh, owner: AccountFactory
) -> None:
    account = await owner()
    avatar = await record(mesh, picture(account.id))
    request = pb.SetAvatarRequest(account_id=account.id, image_id=avatar.id)
    await mesh.media.SetAvatar(request, metadata=mesh.as_storage)

    await delete(mesh, account.id, avatar.id)

    profile = await mesh.profiles.GetProfile(
        pb.GetProfileRequest(account_id=account.id), metadata=mesh.as_user
    )
    assert profile.profile.avatar_image_id == ""


async def test_twenty_concurrent_deletes_of_one_image_succeed_once(
    mesh: Mesh, owner: AccountFactory
) -> None:
    account = await owner()
    # The usage left over shows a second subtraction (it cannot go below zero).
    await record(mesh, picture(account.id, size_bytes=900))
    image = await record(mesh, picture(account.id, size_bytes=2_500))

    outcomes = await asyncio.gather(
        *(delete(mesh, account.id, image.id) for _ in range(20)), return_exceptions=True
    )

    assert [o.id for o in outcomes if isinstance(o, pb.ImageRecord)] == [image.id]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(refused) == 19
    assert {(e.code(), error_info(e).reason) for e in refused} == {
        (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    }
    assert await usage(mesh, account.id) == 900


# --- AddRenditions ----------------------------------------------------------------------------


async def test_renditions_added_to_a_bare_image_count_their_bytes(
    mesh: Mesh, owner: AccountFactory
) -> None:
    account = await owner()
    bare = await record(mesh, picture(account.id, size_bytes=30_000))
    added = eight_renditions()

    grown = await add_renditions(mesh, bare.id, added, placeholder="L6PZfSi_.AyE_3t7t7R**0o#DgR4")

    assert shapes(grown.renditions) == SMALLEST_FIRST
    assert by_shape(grown.renditions) == by_shape(added)
    assert grown.stored_bytes == 30_000 + sum(spec[4] for spec in EIGHT)
    assert grown.placeholder == "L6PZfSi_.AyE_3t7t7R**0o#DgR4"
    assert grown == await get(mesh, bare.id)
    assert await usage(mesh, account.id) == grown.stored_bytes


async def test_renditions_an_image_has_are_kept(mesh: Mesh, owner: AccountFactory) -> None:
    account = await owner()
    existing = rendition("w320", "webp", 320, 240, 1_000)
    image = await record(
        mesh, picture(account.id, size_bytes=5_000, renditions=[existing], placeholder="LKO2")
    )
    replacement = rendition("w320", "webp", 320, 240, 9_999)
    new = rendition("w640", "webp", 640, 480, 2_000)

    grown = await add_renditions(mesh, image.id, [replacement, new], placeholder="other")

    assert by_shape(grown.renditions) == by_shape([existing, new])
    assert grown.stored_bytes == image.stored_bytes + 2_000 == 8_000
    assert grown.placeholder == "LKO2"
    assert await usage(mesh, account.id) == 8_000


async def test_adding_only_renditions_it_has_changes_nothing(
    mesh: Mesh, owner: AccountFactory
) -> None:
    account = await owner()
    image = await record(mesh, picture(account.id, renditions=eight_renditions()[:2]))

    same = await add_renditions(mesh, image.id, list(image.renditions))

    assert same == image
    assert await usage(mesh, account.id) == image.stored_bytes


async def test_concurrent_additions_of_the_same_renditions_count_once(
    mesh: Mesh, owner: AccountFactory
) -> None:
    account = await owner()
    bare = await record(mesh, picture(account.id, size_bytes=1_000))
    added = eight_renditions()[:4]
    added_bytes = sum(r.size_bytes for r in added)

    outcomes = await asyncio.gather(*(add_renditions(mesh, bare.id, added) for _ in range(10)))

    assert {o.stored_bytes for o in outcomes} == {1_000 + added_bytes}
    assert len((await get(mesh, bare.id)).renditions) == 4
    assert await usage(mesh, account.id) == 1_000 + added_bytes


@pytest.mark.parametrize("image_id", [str(uuid.uuid4()), "nope"])
async def test_renditions_of_a_missing_image_are_not_found(mesh: Mesh, image_id: str) -> None:
    failure = await failure_of(add_renditions(mesh, image_id, eight_renditions()[:1]))

    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")


async def test_unstorable_added_renditions_are_invalid(mesh: Mesh, owner: AccountFactory) -> None:
    account = await owner()
    image = await record(mesh, picture(account.id))

    failure = await failure_of(add_renditions(mesh, image.id, _with_bad_digest()))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["renditions[1].sha256"]
    assert await get(mesh, image.id) == image


# --- GetMediaUsage ------------------------------------------------------------------------------


async def test_an_account_without_images_uses_nothing(mesh: Mesh, owner: AccountFactory) -> None:
    account = await owner()

    assert await usage(mesh, account.id) == 0
    assert await usage(mesh, str(uuid.uuid4())) == 0


# --- QueueUnreferencedBlobs ---------------------------------------------------------------------


async def test_only_blobs_no_image_names_are_queued(
    mesh: Mesh, owner: AccountFactory, media_database: Database
) -> None:
    account = await owner()
    original = await record(mesh, picture(account.id))
    unkept = await record(
        mesh, picture(account.id, kept=False, renditions=[rendition("w320", "webp", 3, 3, 10)])
    )
    in_rendition = unkept.renditions[0].sha256
    orphan, shouting = new_key(), new_key()
    keys = [original.sha256, in_rendition, unkept.sha256, orphan, shouting.upper()]

    answered = await queue_unreferenced(mesh, keys)

    assert sorted(answered) == sorted([unkept.sha256, orphan, shouting])
    assert await queued(media_database, [k.lower() for k in keys]) == {
        unkept.sha256,
        orphan,
        shouting,
    }


async def test_a_key_listed_twice_is_queued_once(mesh: Mesh, media_database: Database) -> None:
    key = new_key()

    answered = await queue_unreferenced(mesh, [key, key.upper(), key])

    assert answered == [key]
    assert await queued(media_database, [key]) == {key}


async def test_the_bounds_of_the_key_list(mesh: Mesh) -> None:
    keys = [new_key() for _ in range(1000)]

    assert sorted(await queue_unreferenced(mesh, keys)) == sorted(keys)
    assert await queue_unreferenced(mesh, []) == []


@pytest.mark.parametrize(
    ("keys", "fields"),
    [
        pytest.param([new_key() for _ in range(1001)], ["sha256"], id="1001-keys"),
        pytest.param([new_key(), "not-hex", new_key()], ["sha256[1]"], id="malformed-key"),
        pytest.param([new_key(), ""], ["sha256[1]"], id="empty-key"),
    ],
)
async def test_bad_key_lists_are_invalid_and_queue_nothing(
    mesh: Mesh, media_database: Database, keys: list[str], fields: list[str]
) -> None:
    failure = await failure_of(queue_unreferenced(mesh, keys))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == fields
    assert await queued(media_database, keys) == set()


# --- migration 0011 -----------------------------------------------------------------------------


@pytest.fixture
async def database_at_0010(database_url: str) -> AsyncIterator[str]:
    """A database of its own migrated to revision 0010, dropped afterwards."""
    name = f"meshgram_media_0010_{secrets.token_hex(6)}"
    url = await admin.create_database(database_url, name)
    try:
        await upgrade_async(url, "0010")
        yield url
    finally:
        await admin.drop_database(database_url, name)


async def run_sql(url: str, statement: str, **params: object) -> list[Mapping[str, Any]]:
    """The rows of one statement on the database at url (none for statements without)."""

    def run(connection: Connection) -> list[Mapping[str, Any]]:
        result = connection.execute(text(statement), params)
        return [dict(row) for row in result.mappings()] if result.returns_rows else []

    engine = create_async_engine(to_asyncpg_url(url), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(run)
    finally:
        await engine.dispose()


async def test_0011_counts_images_already_stored_as_kept_originals(database_at_0010: str) -> None:
    first, second, without = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for account in (first, second, without):
        await run_sql(
            database_at_0010,
            "INSERT INTO accounts (id, email, username, password_hash) "
            "VALUES (:id, :email, :name, 'h')",
            id=account,
            email=f"{account.hex}@example.com",
            name=f"u_{account.hex[:16]}",
        )
    sizes = {first: [100, 250], second: [4_000]}
    for account, owned in sizes.items():
        for size in owned:
            await run_sql(
                database_at_0010,
                "INSERT INTO images (id, owner_id, content_type, size_bytes, width, height, "
                "sha256) VALUES (:id, :owner, 'image/png', :size, 10, 10, :key)",
                id=uuid.uuid4(),
                owner=account,
                size=size,
                key=new_key(),
            )

    await upgrade_async(database_at_0010)

    images = await run_sql(
        database_at_0010,
        "SELECT owner_id, size_bytes, original_kept, stored_bytes, placeholder, position "
        "FROM images",
    )
    assert len(images) == 3
    assert all(i["original_kept"] and i["stored_bytes"] == i["size_bytes"] for i in images)
    assert all(i["placeholder"] == "" for i in images)
    positions = [i["position"] for i in images]
    assert None not in positions
    assert len(set(positions)) == 3
    used = await run_sql(database_at_0010, "SELECT account_id, used_bytes FROM media_usage")
    assert {u["account_id"]: u["used_bytes"] for u in used} == {first: 350, second: 4_000}
    assert await run_sql(database_at_0010, "SELECT * FROM image_renditions") == []
    # An image recorded after the migration comes after every image already there.
    await run_sql(
        database_at_0010,
        "INSERT INTO images (id, owner_id, content_type, size_bytes, width, height, sha256) "
        "VALUES (:id, :owner, 'image/png', 1, 1, 1, :key)",
        id=uuid.uuid4(),
        owner=without,
        key=new_key(),
    )
    newest = await run_sql(
        database_at_0010, "SELECT position FROM images WHERE owner_id = :id", id=without
    )
    assert newest[0]["position"] > max(positions)
