"""Images: their metadata and renditions, who may see them, their owner's usage against a quota,
their deletion (queueing their blobs for collection), and the choice of an avatar."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from data_access import profiles
from data_access.changes import ChangeFeed
from data_access.database import Database, FastQuery
from data_access.models import CONTENT_TYPE_MAX
from data_access.moderation import record_audit
from data_access.records import ImageAccess, ImageRecord, NewImage, Rendition
from data_access.validation import Violations, parse_id
from meshkit.errors import NotFound, ResourceExhausted
from meshkit.reasons import Reason

LIST_MAX = 1000
RENDITIONS_MAX = 32
QUEUE_MAX = 1000
_NAME_MAX = 32


class ImageStore:
    """Records, reads, lists and deletes images; keeps usage; sets avatars."""

    def __init__(self, database: Database, feed: ChangeFeed) -> None:
        self._database = database
        self._feed = feed

    async def create(self, image: NewImage, *, quota_bytes: int = 0) -> ImageRecord:
        """Record an image with its renditions and add its bytes to its owner's usage, in one
        transaction; ResourceExhausted (QUOTA_EXCEEDED) past quota_bytes (0: no limit); NotFound
        (ACCOUNT_NOT_FOUND) when the owner does not exist."""
        check = Violations()
        check.text("image.content_type", image.content_type, max_chars=CONTENT_TYPE_MAX)
        check.positive("image.size_bytes", image.size_bytes)
        check.positive("image.width", image.width)
        check.positive("image.height", image.height)
        sha256 = check.sha256_hex("image.sha256", image.sha256)
        check.text("image.placeholder", image.placeholder, max_chars=200, required=False)
        if quota_bytes < 0:
            check.add("quota_bytes", "must not be negative")
        renditions = _checked_renditions(check, image.renditions, "image.renditions")
        check.raise_if_any()
        owner = parse_id(image.owner_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        stored = sum(r.size_bytes for r in renditions) + (
            image.size_bytes if image.original_kept else 0
        )
        async with self._database.transaction() as session:
            # The owner first: an unknown account is NotFound whatever the quota says.
            if not await session.scalar(_OWNER_EXISTS, {"owner": owner}):
                raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
            used = await session.scalar(
                _ADD_USAGE, {"owner": owner, "bytes": stored, "quota": quota_bytes}
            )
            if used is None:
                raise _over_quota(quota_bytes)
            row = (
                (
                    await session.execute(
                        _INSERT_IMAGE,
                        {
                            "id": uuid.uuid4(),
                            "owner": owner,
                            "content_type": image.content_type,
                            "size_bytes": image.size_bytes,
                            "width": image.width,
                            "height": image.height,
                            "sha256": sha256,
                            "placeholder": image.placeholder,
                            "original_kept": image.original_kept,
                            "stored_bytes": stored,
                        },
                    )
                )
                .mappings()
                .one()
            )
            await _insert_renditions(session, row["id"], renditions)
        return _record(row, _in_order(renditions))

    async def get(self, image_id: str) -> ImageRecord:
        """Return an image with its renditions, or NotFound (IMAGE_NOT_FOUND)."""
        return (await self.access(image_id, "")).image

    async def access(self, image_id: str, viewer_id: str) -> ImageAccess:
        """Return an image and how its owner and the viewer ("" for none) stand, in one read;
        NotFound (IMAGE_NOT_FOUND) when there is no such image."""
        key = parse_id(image_id, reason=Reason.IMAGE_NOT_FOUND, what="image")
        viewer: uuid.UUID | None = None
        if viewer_id:
            # A malformed viewer id is nobody in particular: it follows no one and is no admin.
            try:
                viewer = uuid.UUID(viewer_id)
            except ValueError:
                viewer = None
        rows = await self._database.fetch_all(_ACCESS, {"key": key, "viewer": viewer})
        if not rows:
            raise _not_found()
        first = rows[0]
        return ImageAccess(
            image=_record(first, _renditions_of(rows)),
            owner_private=first["owner_private"],
            owner_hidden=first["owner_hidden"],
            viewer_follows=first["viewer_follows"],
            blocked=first["blocked"],
            viewer_admin=first["viewer_admin"],
        )

    async def page(
        self, owner_id: str, *, page_size: int, before_position: int
    ) -> tuple[list[ImageRecord], bool]:
        """Return a page of an account's images, newest first, and whether older ones remain."""
        check = Violations()
        check.page(page_size, before_position, maximum=LIST_MAX, before_field="before_position")
        check.raise_if_any()
        owner = parse_id(owner_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            rows = list(
                (
                    await session.execute(
                        _PAGE,
                        {
                            "owner": owner,
                            "before": before_position or None,
                            "limit": page_size + 1,
                        },
                    )
                ).mappings()
            )
            page = rows[:page_size]
            found = (
                (await session.execute(_RENDITIONS_OF, {"ids": [row["id"] for row in page]}))
                .mappings()
                .all()
            )
        by_image: dict[uuid.UUID, list[Mapping[Any, Any]]] = {}
        for rendition in found:
            by_image.setdefault(rendition["image_id"], []).append(rendition)
        images = [_record(row, _renditions_of(by_image.get(row["id"], []))) for row in page]
        return images, len(rows) > page_size

    async def delete(self, actor_id: str, image_id: str) -> ImageRecord:
        """Delete an image the actor owns, or any image when the actor is an admin (audited);
        queue its blobs for collection, take its bytes off its owner's usage and drop it as an
        avatar. NotFound (IMAGE_NOT_FOUND) for anyone else."""
        key = parse_id(image_id, reason=Reason.IMAGE_NOT_FOUND, what="image")
        actor = parse_id(actor_id, reason=Reason.IMAGE_NOT_FOUND, what="image")
        async with self._database.transaction() as session:
            row = (await session.execute(_LOCK_IMAGE, {"key": key})).mappings().one_or_none()
            if row is None:
                raise _not_found()
            owner = row["owner_id"]
            if owner != actor and not await session.scalar(_IS_ADMIN, {"id": actor}):
                raise _not_found()
            found = (await session.execute(_RENDITIONS_OF, {"ids": [key]})).mappings().all()
            renditions = _renditions_of(found)
            blobs = {r.sha256 for r in renditions}
            if row["original_kept"]:
                blobs.add(row["sha256"])
            position = await profiles.drop_avatar(session, owner, key)
            await session.execute(_DELETE_IMAGE, {"key": key})
            await session.execute(_SUB_USAGE, {"owner": owner, "bytes": row["stored_bytes"]})
            await queue_blobs(session, blobs)
            if owner != actor:
                await record_audit(session, actor, "image_deleted", owner, reason=f"image {key}")
        if position is not None:
            # The profile caches learn that the avatar is gone before the caller hears back.
            await self._feed.delivered(position)
        return _record(row, renditions)

    async def add_renditions(
        self, image_id: str, renditions: Sequence[Rendition], placeholder: str
    ) -> ImageRecord:
        """Add renditions an image lacks (kept ones stay) and count their bytes as its owner's;
        NotFound (IMAGE_NOT_FOUND) when there is no such image."""
        check = Violations()
        checked = _checked_renditions(check, renditions, "renditions")
        check.text("placeholder", placeholder, max_chars=200, required=False)
        check.raise_if_any()
        key = parse_id(image_id, reason=Reason.IMAGE_NOT_FOUND, what="image")
        async with self._database.transaction() as session:
            row = (await session.execute(_LOCK_IMAGE, {"key": key})).mappings().one_or_none()
            if row is None:
                raise _not_found()
            added = await _insert_renditions(session, key, checked)
            if added or (placeholder and not row["placeholder"]):
                await session.execute(
                    _GROW_IMAGE, {"key": key, "bytes": added, "placeholder": placeholder}
                )
                await session.execute(
                    _ADD_USAGE, {"owner": row["owner_id"], "bytes": added, "quota": 0}
                )
        return await self.get(image_id)

    async def usage(self, account_id: str) -> int:
        """Return the bytes an account's images take (0 for an unknown account)."""
        account = parse_id(account_id, reason=Reason.ACCOUNT_NOT_FOUND, what="account")
        async with self._database.transaction() as session:
            return int(await session.scalar(_USAGE, {"owner": account}) or 0)

    async def queue_unreferenced(self, keys: Sequence[str]) -> list[str]:
        """Queue for collection those of keys that no image names; return them."""
        check = Violations()
        if len(keys) > QUEUE_MAX:
            check.add("sha256", f"must list at most {QUEUE_MAX} keys")
        checked = [check.sha256_hex(f"sha256[{n}]", key) for n, key in enumerate(keys)]
        check.raise_if_any()
        if not checked:
            return []
        async with self._database.transaction() as session:
            return list(await session.scalars(_QUEUE_UNREFERENCED, {"keys": checked}))

    async def set_avatar(self, account_id: str, image_id: str) -> ImageRecord:
        """Make an image the avatar of its owner and return it; NotFound (IMAGE_NOT_FOUND) when
        the image does not exist or belongs to another account."""
        image_key = parse_id(image_id, reason=Reason.IMAGE_NOT_FOUND, what="image")
        owner = parse_id(account_id, reason=Reason.IMAGE_NOT_FOUND, what="image")
        async with self._database.transaction() as session:
            # Someone else's image is reported exactly like a missing one: ids are not probes.
            # FOR KEY SHARE keeps the image from vanishing before the profile points at it.
            row = (
                (await session.execute(_SHARE_OWN_IMAGE, {"key": image_key, "owner": owner}))
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise _not_found()
            position = await profiles.set_avatar(session, owner, image_key)
        # Acknowledged once the new avatar is on its way to the profile caches (see profiles.py).
        await self._feed.delivered(position)
        return await self.get(image_id)


async def queue_blobs(session: AsyncSession, keys: Iterable[str]) -> None:
    """Queue blobs for the collector in the caller's transaction (requeue resets a claim)."""
    listed = sorted(keys)
    if listed:
        await session.execute(_QUEUE, {"keys": listed})


def _checked_renditions(
    check: Violations, renditions: Sequence[Rendition], field: str
) -> list[Rendition]:
    """Return renditions with their digests normalised, recording every problem in check."""
    if len(renditions) > RENDITIONS_MAX:
        check.add(field, f"must list at most {RENDITIONS_MAX} renditions")
    checked = []
    seen = set()
    for n, rendition in enumerate(renditions):
        at = f"{field}[{n}]"
        check.text(f"{at}.variant", rendition.variant, max_chars=_NAME_MAX)
        check.text(f"{at}.format", rendition.format, max_chars=_NAME_MAX)
        check.text(f"{at}.content_type", rendition.content_type, max_chars=CONTENT_TYPE_MAX)
        check.positive(f"{at}.size_bytes", rendition.size_bytes)
        check.positive(f"{at}.width", rendition.width)
        check.positive(f"{at}.height", rendition.height)
        digest = check.sha256_hex(f"{at}.sha256", rendition.sha256)
        if (rendition.variant, rendition.format) in seen:
            check.add(at, "repeats a variant and format")
        seen.add((rendition.variant, rendition.format))
        checked.append(
            Rendition(
                variant=rendition.variant,
                format=rendition.format,
                content_type=rendition.content_type,
                sha256=digest,
                size_bytes=rendition.size_bytes,
                width=rendition.width,
                height=rendition.height,
            )
        )
    return checked


async def _insert_renditions(
    session: AsyncSession, image: uuid.UUID, renditions: Sequence[Rendition]
) -> int:
    """Insert renditions of an image (ones it has are kept); return the bytes added."""
    if not renditions:
        return 0
    sizes = await session.scalars(
        _INSERT_RENDITIONS,
        {
            "image": image,
            "variants": [r.variant for r in renditions],
            "formats": [r.format for r in renditions],
            "content_types": [r.content_type for r in renditions],
            "digests": [r.sha256 for r in renditions],
            "sizes": [r.size_bytes for r in renditions],
            "widths": [r.width for r in renditions],
            "heights": [r.height for r in renditions],
        },
    )
    return sum(sizes)


def _renditions_of(rows: Iterable[Mapping[Any, Any]]) -> tuple[Rendition, ...]:
    """The renditions in rows that have one (r_* columns; a LEFT JOIN leaves them NULL)."""
    found = [
        Rendition(
            variant=row["r_variant"],
            format=row["r_format"],
            content_type=row["r_content_type"],
            sha256=row["r_sha256"],
            size_bytes=row["r_size_bytes"],
            width=row["r_width"],
            height=row["r_height"],
        )
        for row in rows
        if row["r_variant"] is not None
    ]
    return _in_order(found)


def _in_order(renditions: Iterable[Rendition]) -> tuple[Rendition, ...]:
    """Renditions smallest first, then by name and format: the order every answer lists."""
    return tuple(sorted(renditions, key=lambda r: (r.width * r.height, r.variant, r.format)))


def _record(row: Mapping[Any, Any], renditions: Sequence[Rendition]) -> ImageRecord:
    """Build an image record from a row of images' columns and its renditions."""
    return ImageRecord(
        id=row["id"],
        owner_id=row["owner_id"],
        content_type=row["content_type"],
        size_bytes=row["size_bytes"],
        width=row["width"],
        height=row["height"],
        sha256=row["sha256"],
        created_at=row["created_at"],
        placeholder=row["placeholder"],
        original_kept=row["original_kept"],
        stored_bytes=row["stored_bytes"],
        position=row["position"],
        renditions=tuple(renditions),
    )


def _over_quota(quota_bytes: int) -> ResourceExhausted:
    """The answer for an image that would take its owner past the quota."""
    return ResourceExhausted(
        message=f"this image would take your storage past its quota of {quota_bytes} bytes; "
        "delete some images first",
        reason=Reason.QUOTA_EXCEEDED,
    )


def _not_found() -> NotFound:
    """The answer for an image that does not exist or is not the caller's."""
    return NotFound(message="image not found", reason=Reason.IMAGE_NOT_FOUND)


# Statements below are put together from these constant column lists only (hence S608).
_IMAGE_COLUMNS = (
    "i.id, i.owner_id, i.content_type, i.size_bytes, i.width, i.height, i.sha256, i.created_at, "
    "i.placeholder, i.original_kept, i.stored_bytes, i.position"
)
_RENDITION_COLUMNS = (
    "r.variant AS r_variant, r.format AS r_format, r.content_type AS r_content_type, "
    "r.sha256 AS r_sha256, r.size_bytes AS r_size_bytes, r.width AS r_width, "
    "r.height AS r_height"
)
# One row per rendition (one with NULL renditions when it has none), each carrying the image and
# how its owner and the viewer stand: the whole decision of who sees it in one round trip.
_ACCESS = FastQuery.of(
    text(
        f"SELECT {_IMAGE_COLUMNS}, {_RENDITION_COLUMNS}, "  # noqa: S608
        "p.private AS owner_private, "
        "(a.deactivated_at IS NOT NULL OR coalesce(a.blocked_till > now(), false)) "
        "AS owner_hidden, "
        "EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = :viewer "
        "AND f.followed_id = i.owner_id AND f.status = 'active') AS viewer_follows, "
        "EXISTS (SELECT 1 FROM blocks b WHERE "
        "(b.blocker_id = :viewer AND b.blocked_id = i.owner_id) "
        "OR (b.blocker_id = i.owner_id AND b.blocked_id = :viewer)) AS blocked, "
        "EXISTS (SELECT 1 FROM accounts v WHERE v.id = :viewer AND v.role = 'admin') "
        "AS viewer_admin "
        "FROM images i JOIN accounts a ON a.id = i.owner_id "
        "JOIN profiles p ON p.account_id = i.owner_id "
        "LEFT JOIN image_renditions r ON r.image_id = i.id "
        "WHERE i.id = :key"
    )
)
_PAGE = text(
    f"SELECT {_IMAGE_COLUMNS} FROM images i WHERE i.owner_id = :owner "  # noqa: S608
    "AND (CAST(:before AS bigint) IS NULL OR i.position < :before) "
    "ORDER BY i.position DESC LIMIT :limit"
)
_RENDITIONS_OF = text(
    f"SELECT r.image_id, {_RENDITION_COLUMNS} FROM image_renditions r WHERE r.image_id = ANY(:ids)"  # noqa: S608
)
_LOCK_IMAGE = text(f"SELECT {_IMAGE_COLUMNS} FROM images i WHERE i.id = :key FOR UPDATE")  # noqa: S608
_SHARE_OWN_IMAGE = text(
    "SELECT i.id FROM images i WHERE i.id = :key AND i.owner_id = :owner FOR KEY SHARE"
)
_INSERT_IMAGE = text(
    "INSERT INTO images (id, owner_id, content_type, size_bytes, width, height, sha256, "  # noqa: S608
    "placeholder, original_kept, stored_bytes) VALUES (:id, :owner, :content_type, :size_bytes, "
    ":width, :height, :sha256, :placeholder, :original_kept, :stored_bytes) "
    f"RETURNING {_IMAGE_COLUMNS.replace('i.', '')}"
)
_INSERT_RENDITIONS = text(
    "INSERT INTO image_renditions "
    "(image_id, variant, format, content_type, sha256, size_bytes, width, height) "
    "SELECT CAST(:image AS uuid), * FROM unnest(CAST(:variants AS text[]), "
    "CAST(:formats AS text[]), "
    "CAST(:content_types AS text[]), CAST(:digests AS text[]), CAST(:sizes AS bigint[]), "
    "CAST(:widths AS int[]), CAST(:heights AS int[])) "
    "ON CONFLICT DO NOTHING RETURNING size_bytes"
)
_GROW_IMAGE = text(
    "UPDATE images SET stored_bytes = stored_bytes + :bytes, "
    "placeholder = CASE WHEN placeholder = '' THEN :placeholder ELSE placeholder END "
    "WHERE id = :key"
)
_DELETE_IMAGE = text("DELETE FROM images WHERE id = :key")
# Adds to an account's usage unless that passes the quota (0: none); no row means it would.
_ADD_USAGE = text(
    "INSERT INTO media_usage AS m (account_id, used_bytes) "
    "SELECT CAST(:owner AS uuid), CAST(:bytes AS bigint) "
    "WHERE CAST(:quota AS bigint) = 0 OR CAST(:bytes AS bigint) <= CAST(:quota AS bigint) "
    "ON CONFLICT (account_id) DO UPDATE SET used_bytes = m.used_bytes + excluded.used_bytes "
    "WHERE CAST(:quota AS bigint) = 0 OR m.used_bytes + excluded.used_bytes <= :quota "
    "RETURNING used_bytes"
)
_SUB_USAGE = text(
    "UPDATE media_usage SET used_bytes = greatest(used_bytes - CAST(:bytes AS bigint), 0) "
    "WHERE account_id = :owner"
)
_USAGE = text("SELECT used_bytes FROM media_usage WHERE account_id = :owner")
# FOR KEY SHARE: the account cannot go before this image names it.
_OWNER_EXISTS = text("SELECT true FROM accounts WHERE id = :owner FOR KEY SHARE")
_IS_ADMIN = text("SELECT true FROM accounts WHERE id = :id AND role = 'admin'")
_QUEUE = text(
    "INSERT INTO blob_collections (sha256) SELECT unnest(CAST(:keys AS text[])) "
    "ON CONFLICT (sha256) DO UPDATE SET claimed_until = NULL"
)
_QUEUE_UNREFERENCED = text(
    "INSERT INTO blob_collections (sha256) "
    "SELECT k FROM unnest(CAST(:keys AS text[])) AS k "
    "WHERE NOT EXISTS (SELECT 1 FROM images WHERE sha256 = k AND original_kept) "
    "AND NOT EXISTS (SELECT 1 FROM image_renditions WHERE sha256 = k) "
    "ON CONFLICT (sha256) DO NOTHING RETURNING sha256"
)
