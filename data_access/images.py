"""Image metadata and the choice of an account's avatar among its own images."""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from data_access import profiles
from data_access.changes import ChangeFeed
from data_access.database import Database, FastQuery, violated_constraint
from data_access.models import CONTENT_TYPE_MAX, Image
from data_access.records import ImageRecord, NewImage
from data_access.validation import Violations, parse_id
from meshkit.errors import NotFound
from meshkit.reasons import Reason

_OWNER_CONSTRAINT = "fk_images_owner_id_accounts"
# Built once; the columns are named like ImageRecord's fields.
_BY_ID = FastQuery.of(select(*Image.__table__.c).where(Image.id == bindparam("key")))


class ImageStore:
    """Records uploaded images and sets avatars."""

    def __init__(self, database: Database, feed: ChangeFeed) -> None:
        self._database = database
        self._feed = feed

    async def create(self, image: NewImage) -> ImageRecord:
        """Record an image's metadata with a fresh id; NotFound (ACCOUNT_NOT_FOUND) when the
        owner does not exist."""
        check = Violations()
        check.text("image.content_type", image.content_type, max_chars=CONTENT_TYPE_MAX)
        check.positive("image.size_bytes", image.size_bytes)
        check.positive("image.width", image.width)
        check.positive("image.height", image.height)
        sha256 = check.sha256_hex("image.sha256", image.sha256)
        check.raise_if_any()
        owner = parse_id(image.owner_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            try:
                inserted = await session.execute(
                    insert(Image)
                    .values(
                        id=uuid.uuid4(),
                        owner_id=owner,
                        content_type=image.content_type,
                        size_bytes=image.size_bytes,
                        width=image.width,
                        height=image.height,
                        sha256=sha256,
                    )
                    .returning(Image)
                )
            except IntegrityError as exc:
                if violated_constraint(exc) == _OWNER_CONSTRAINT:
                    raise NotFound(
                        message="account not found", reason=Reason.ACCOUNT_NOT_FOUND
                    ) from None
                raise
            return image_record(inserted.scalar_one())

    async def get(self, image_id: str) -> ImageRecord:
        """Return an image's metadata, or NotFound (IMAGE_NOT_FOUND)."""
        key = parse_id(image_id, reason=Reason.IMAGE_NOT_FOUND, what="image")
        row = await self._database.fetch_one(_BY_ID, {"key": key})
        if row is None:
            raise _not_found()
        return ImageRecord(**row)

    async def set_avatar(self, account_id: str, image_id: str) -> ImageRecord:
        """Make an image the avatar of its owner and return it; NotFound (IMAGE_NOT_FOUND) when
        the image does not exist or belongs to another account."""
        image_key = parse_id(image_id, reason=Reason.IMAGE_NOT_FOUND, what="image")
        owner = parse_id(account_id, reason=Reason.IMAGE_NOT_FOUND, what="image")
        async with self._database.transaction() as session:
            # Someone else's image is reported exactly like a missing one: ids are not probes.
            # FOR KEY SHARE keeps the image from vanishing before the profile points at it.
            image = await session.scalar(
                select(Image)
                .where(Image.id == image_key, Image.owner_id == owner)
                .with_for_update(read=True, key_share=True)
            )
            if image is None:
                raise _not_found()
            position = await profiles.set_avatar(session, owner, image.id)
        # Acknowledged once the new avatar is on its way to the profile caches (see profiles.py).
        await self._feed.delivered(position)
        return image_record(image)


def image_record(image: Image) -> ImageRecord:
    """Return the stored image as a record."""
    return ImageRecord(
        id=image.id,
        owner_id=image.owner_id,
        content_type=image.content_type,
        size_bytes=image.size_bytes,
        width=image.width,
        height=image.height,
        sha256=image.sha256,
        created_at=image.created_at,
    )


def _not_found() -> NotFound:
    """The answer for an image that does not exist or is not the caller's."""
    return NotFound(message="image not found", reason=Reason.IMAGE_NOT_FOUND)
