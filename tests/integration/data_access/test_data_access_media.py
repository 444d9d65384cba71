"""MediaStoreService through real stubs against the real database: images and avatars."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import pytest

from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from tests.helpers import AccountFactory, Metadata, ProfileReader, failure_of, field_violations

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
