"""ImageService: uploads become safe renditions, who sees what, delivery, listing, quotas."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import uuid
from pathlib import Path

import pytest
from PIL import Image as PillowImage

from meshkit.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from meshkit.reasons import Reason
from storage_svc import processing
from storage_svc.blobs import LocalBlobStore
from storage_svc.delivery import RangeNotSatisfiable
from storage_svc.images import (
    DownloadRequest,
    ImageService,
    ImageView,
    NewImage,
    canonical_image_id,
)
from storage_svc.processing import VARIANTS
from tests.sample_images import phone_jpeg, png, truncated_jpeg
from tests.unit.storage_svc.storage_fakes import (
    FakeMedia,
    chunks_of,
    image_service,
    read_all,
)

OWNER = "owner-1"
FOLLOWER = "follower-1"
STRANGER = "stranger-1"
ADMIN = "admin-1"


def files_under(root: Path) -> list[Path]:
    """Every file below root."""
    return sorted(p for p in root.rglob("*") if p.is_file())


async def uploaded(service: ImageService, data: bytes, owner: str = OWNER) -> ImageView:
    """Upload data as owner."""
    return await service.upload(owner, chunks_of(data))


def variant_url(view: ImageView, name: str) -> str:
    """The URL a view lists for a variant."""
    return next(v.url for v in view.variants if v.name == name)


def signed_request(url: str, **fields: object) -> DownloadRequest:
    """A download request from a signed media path."""
    path, _, query = url.partition("?")
    _, _, image_id, variant = path.split("/")
    params = dict(part.split("=", 1) for part in query.split("&")) if query else {}
    return DownloadRequest(
        image_id=image_id,
        variant=variant,
        expires=int(params.get("expires", 0)),
        key_id=params.get("key_id", ""),
        signature=params.get("signature", ""),
        **fields,  # type: ignore[arg-type]
    )


async def test_an_upload_keeps_every_rendition_and_records_them(tmp_path: Path) -> None:
    media = FakeMedia()
    service = image_service(tmp_path, media)
    data = phone_jpeg(width=800, height=600, orientation=6)

    view = await uploaded(service, data)

    image = media.images[view.image.id]
    assert (image.width, image.height) == (600, 800)  # upright
    assert image.content_type == "image/jpeg"
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert not image.original_kept
    assert {(r.variant, r.format) for r in image.renditions} == {
        (spec.name, fmt) for spec in VARIANTS for fmt in ("webp", "jpeg")
    }
    blobs = LocalBlobStore(tmp_path / "blobs")
    for rendition in image.renditions:
        stored = await read_all(blobs.chunks(rendition.sha256, 1 << 20))
        assert hashlib.sha256(stored).hexdigest() == rendition.sha256
        assert len(stored) == rendition.size_bytes
    # The uploaded bytes (with their GPS position) are not kept anywhere, spool included.
    assert not await blobs.exists(image.sha256)
    assert files_under(tmp_path / "spool") == []
    assert media.usage_of[OWNER] == sum(r.size_bytes for r in image.renditions)


async def test_originals_are_kept_only_when_configured(tmp_path: Path) -> None:
    media = FakeMedia()
    service = image_service(tmp_path, media, keep_originals=True)
    data = phone_jpeg(width=320, height=240)

    view = await uploaded(service, data)

    blobs = LocalBlobStore(tmp_path / "blobs")
    assert await read_all(blobs.chunks(view.image.sha256, 1 << 20)) == data
    assert view.image.original_kept
    assert view.image.stored_bytes == data.__len__() + sum(
        r.size_bytes for r in view.image.renditions
    )
    assert [v.name for v in view.variants][-1] == "original"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (truncated_jpeg(), Reason.IMAGE_TYPE_UNSUPPORTED),
        (b"not an image at all", Reason.IMAGE_TYPE_UNSUPPORTED),
        (b"", Reason.IMAGE_TYPE_UNSUPPORTED),
    ],
)
async def test_rejected_uploads_leave_nothing_behind(
    tmp_path: Path, data: bytes, reason: Reason
) -> None:
    media = FakeMedia()
    service = image_service(tmp_path, media, keep_originals=True)

    with pytest.raises(InvalidArgument) as caught:
        await uploaded(service, data)

    assert caught.value.reason == reason
    assert [v.field for v in caught.value.violations] == ["body"]
    assert media.images == {}
    assert files_under(tmp_path) == []


async def test_an_upload_past_the_size_limit_stops_while_streaming(tmp_path: Path) -> None:
    service = image_service(tmp_path, max_bytes=100_000)
    sent = 0

    async def endless() -> object:
        nonlocal sent
        while True:
            sent += 64 * 1024
            yield b"\0" * (64 * 1024)

    with pytest.raises(InvalidArgument) as caught:
        await service.upload(OWNER, endless())  # type: ignore[arg-type]

    assert caught.value.reason == Reason.IMAGE_TOO_LARGE
    assert sent <= 2 * 64 * 1024
    assert files_under(tmp_path) == []


async def test_a_full_quota_refuses_before_any_byte_is_read(tmp_path: Path) -> None:
    media = FakeMedia()
    media.usage_of[OWNER] = 1000
    service = image_service(tmp_path, media, quota_bytes=1000)
    read = False

    async def chunks() -> object:
        nonlocal read
        read = True
        yield png()

    with pytest.raises(ResourceExhausted) as caught:
        await service.upload(OWNER, chunks())  # type: ignore[arg-type]
    assert caught.value.reason == Reason.QUOTA_EXCEEDED
    assert not read
    with pytest.raises(ResourceExhausted):
        await service.create_upload(OWNER, 10)


async def test_at_most_the_allowed_number_of_uploads_are_processed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = 0
    most = 0
    lock = threading.Lock()
    real = processing.process

    def counting(path: Path, *, max_pixels: int) -> object:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return real(path, max_pixels=max_pixels)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr("storage_svc.images.process", counting)
    service = image_service(tmp_path, max_concurrent_processing=2)

    await asyncio.gather(*(uploaded(service, png(colour=(n, 0, 0))) for n in range(6)))

    assert most == 2


async def test_who_sees_what(tmp_path: Path) -> None:
    media = FakeMedia()
    media.admins.add(ADMIN)
    media.owner(OWNER).followers.add(FOLLOWER)
    service = image_service(tmp_path, media, keep_originals=True)
    image_id = (await uploaded(service, png())).image.id

    # Public: everyone, signed in or not, with plain URLs; the original is the owner's only.
    for viewer in ("", STRANGER, FOLLOWER, ADMIN):
        view = await service.describe(image_id, viewer)
        assert all("?" not in v.url for v in view.variants)
        assert "original" not in [v.name for v in view.variants]
    owner_view = await service.describe(image_id, OWNER)
    assert "original" in [v.name for v in owner_view.variants]

    # Private: followers, the owner and admins, through signed URLs.
    media.owner(OWNER).private = True
    for viewer in ("", STRANGER):
        with pytest.raises(NotFound):
            await service.describe(image_id, viewer)
    for viewer in (FOLLOWER, ADMIN, OWNER):
        view = await service.describe(image_id, viewer)
        assert all("signature=" in v.url for v in view.variants)

    # Hidden (deactivated or blocked by an admin) or blocking: nobody but the owner and admins.
    media.owner(OWNER).private = False
    media.owner(OWNER).blocked.add(FOLLOWER)
    with pytest.raises(NotFound):
        await service.describe(image_id, FOLLOWER)
    media.owner(OWNER).hidden = True
    for viewer in ("", STRANGER):
        with pytest.raises(NotFound):
            await service.describe(image_id, viewer)
    await service.describe(image_id, ADMIN)
    await service.describe(image_id, OWNER)


async def test_a_signed_url_is_its_own_permission_and_only_for_what_it_names(
    tmp_path: Path,
) -> None:
    media = FakeMedia()
    media.owner(OWNER).private = True
    media.owner(OWNER).followers.add(FOLLOWER)
    service = image_service(tmp_path, media)
    image_id = (await uploaded(service, png())).image.id
    url = variant_url(await service.describe(image_id, FOLLOWER), "w320")

    delivery = await service.download(signed_request(url), "")
    assert delivery.cache_control.startswith("private, max-age=")
    assert (await read_all(delivery.chunks)).startswith(b"\xff\xd8\xff")  # a JPEG

    request = signed_request(url)
    # The first character: the last one of base64url also holds padding bits that decode to
    # nothing, so changing it may leave the signature's bytes as they were.
    forged = ("B" if request.signature[0] == "A" else "A") + request.signature[1:]
    altered = [
        DownloadRequest(**{**request.__dict__, "signature": forged}),
        DownloadRequest(**{**request.__dict__, "variant": "w1080"}),
        DownloadRequest(**{**request.__dict__, "expires": request.expires + 300}),
        DownloadRequest(**{**request.__dict__, "key_id": "k2"}),
        DownloadRequest(**{**request.__dict__, "image_id": str(uuid.uuid4())}),
    ]
    for bad in altered:
        with pytest.raises(PermissionDenied) as caught:
            await service.download(bad, "")
        assert caught.value.reason == Reason.MEDIA_URL_INVALID
    # Without a signature, a stranger finds nothing.
    with pytest.raises(NotFound):
        await service.download(DownloadRequest(image_id=image_id, variant="w320"), STRANGER)


async def test_an_expired_signature_is_refused(tmp_path: Path) -> None:
    media = FakeMedia()
    media.owner(OWNER).private = True
    issuing = image_service(tmp_path, media, clock_seconds=1_000_000.0)
    image_id = (await uploaded(issuing, png())).image.id
    url = variant_url(await issuing.describe(image_id, OWNER), "w320")
    later = image_service(tmp_path, media, clock_seconds=1_000_000.0 + 3600 + 301)

    with pytest.raises(PermissionDenied):
        await later.download(signed_request(url), "")


async def test_delivery_answers_formats_ranges_and_current_copies(tmp_path: Path) -> None:
    media = FakeMedia()
    service = image_service(tmp_path, media)
    view = await uploaded(service, png(width=400, height=300))
    image_id = view.image.id
    webp = await service.download(
        DownloadRequest(image_id=image_id, variant="w320", accept="image/avif,image/webp,*/*"), ""
    )
    jpeg = await service.download(
        DownloadRequest(image_id=image_id, variant="w320", accept="*/*"), ""
    )
    assert (webp.content_type, jpeg.content_type) == ("image/webp", "image/jpeg")
    assert webp.cache_control == "public, max-age=31536000, s-maxage=60, immutable"
    assert webp.vary_accept
    whole = await read_all(jpeg.chunks)
    assert jpeg.entity_tag == f'"{hashlib.sha256(whole).hexdigest()}"'
    with PillowImage.open(io.BytesIO(whole)) as decoded:
        assert decoded.size == (320, 240)

    chosen = await service.download(
        DownloadRequest(image_id=image_id, variant="w320", format="jpeg", accept="image/webp"), ""
    )
    assert chosen.content_type == "image/jpeg"
    assert not chosen.vary_accept

    part = await service.download(
        DownloadRequest(image_id=image_id, variant="w320", range="bytes=10-19"), ""
    )
    assert part.byte_range is not None
    assert part.byte_range.content_range == f"bytes 10-19/{len(whole)}"
    assert await read_all(part.chunks) == whole[10:20]

    with pytest.raises(RangeNotSatisfiable):
        await service.download(
            DownloadRequest(image_id=image_id, variant="w320", range=f"bytes={len(whole)}-"), ""
        )
    current = await service.download(
        DownloadRequest(image_id=image_id, variant="w320", if_none_match=jpeg.entity_tag), ""
    )
    assert current.not_modified


async def test_bad_download_requests_are_refused(tmp_path: Path) -> None:
    service = image_service(tmp_path, keep_originals=True)
    image_id = (await uploaded(service, png())).image.id
    with pytest.raises(InvalidArgument) as caught:
        await service.download(DownloadRequest(image_id=image_id, variant="w9999"), "")
    assert caught.value.violations[0].field == "variant"
    with pytest.raises(InvalidArgument) as caught:
        await service.download(DownloadRequest(image_id=image_id, format="gif"), "")
    assert caught.value.violations[0].field == "format"
    # The original goes to its owner only, even for a public image.
    for viewer in ("", STRANGER):
        with pytest.raises(NotFound):
            await service.download(DownloadRequest(image_id=image_id, variant="original"), viewer)
    original = await service.download(DownloadRequest(image_id=image_id, variant="original"), OWNER)
    assert await read_all(original.chunks) == png()


async def test_an_image_from_before_renditions_gets_them_once(tmp_path: Path) -> None:
    media = FakeMedia()
    blobs = LocalBlobStore(tmp_path / "blobs")
    service = image_service(tmp_path, media, blobs=blobs)
    data = png(width=200, height=100)
    digest = hashlib.sha256(data).hexdigest()
    await blobs.put(digest, data)
    legacy = await media.create_image(
        NewImage(OWNER, "image/png", len(data), 200, 100, digest, original_kept=True),
        quota_bytes=0,
    )

    first = await service.describe(legacy.id, STRANGER)
    second = await service.describe(legacy.id, "")

    assert media.added_renditions == 1
    assert [v.name for v in first.variants] == [spec.name for spec in VARIANTS]
    assert first.variants == second.variants
    assert first.image.placeholder


async def test_my_images_come_newest_first_a_page_at_a_time(tmp_path: Path) -> None:
    media = FakeMedia()
    service = image_service(tmp_path, media, quota_bytes=10 << 20)
    ids = [(await uploaded(service, png(colour=(n, n, n)))).image.id for n in range(5)]
    await uploaded(service, png(colour=(9, 9, 9)), owner=STRANGER)

    seen: list[str] = []
    token = ""
    while True:
        page = await service.list_mine(OWNER, 2, token)
        seen += [view.image.id for view in page.images]
        assert page.quota_bytes == 10 << 20
        assert page.used_bytes == media.usage_of[OWNER]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    with pytest.raises(InvalidArgument):
        await service.list_mine(
            STRANGER, 2, (await service.list_mine(OWNER, 2, "")).next_page_token
        )


async def test_only_the_owner_or_an_admin_deletes(tmp_path: Path) -> None:
    media = FakeMedia()
    media.admins.add(ADMIN)
    service = image_service(tmp_path, media)
    first = (await uploaded(service, png(colour=(255, 0, 0)))).image.id
    second = (await uploaded(service, png(colour=(0, 0, 255)))).image.id

    with pytest.raises(NotFound):
        await service.delete(STRANGER, first)
    await service.delete(OWNER, first)
    await service.delete(ADMIN, second)
    assert media.images == {}
    assert media.usage_of[OWNER] == 0


async def test_a_resumable_upload_becomes_an_image_with_its_last_byte(tmp_path: Path) -> None:
    media = FakeMedia()
    service = image_service(tmp_path, media)
    data = phone_jpeg(width=300, height=200)
    session = await service.create_upload(OWNER, len(data))

    half = await service.append_upload(OWNER, session.id, 0, chunks_of(data[:1000]))
    assert half.image is None
    assert half.session.offset == 1000
    done = await service.append_upload(OWNER, session.id, 1000, chunks_of(data[1000:]))

    assert done.image is not None
    assert done.image.image.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(NotFound):
        await service.get_upload(OWNER, session.id)
    assert files_under(tmp_path / "spool") == []


@pytest.mark.parametrize(
    "raw", ["6F1C7F0E-2A4B-4C8E-9A8E-0D3C2B1A0F9E", "{6f1c7f0e2a4b4c8e9a8e0d3c2b1a0f9e}"]
)
def test_image_ids_are_canonical_uuids(raw: str) -> None:
    assert canonical_image_id(raw) == "6f1c7f0e-2a4b-4c8e-9a8e-0d3c2b1a0f9e"


@pytest.mark.parametrize("raw", ["nope", "../../etc/passwd", "6f1c7f0e"])
def test_malformed_image_ids_are_not_found(raw: str) -> None:
    with pytest.raises(NotFound):
        canonical_image_id(raw)


def test_a_missing_image_id_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        canonical_image_id("")
    assert caught.value.violations[0].field == "image_id"


async def test_who_may_see_an_image_is_remembered_briefly_and_forgotten_on_delete(
    tmp_path: Path,
) -> None:
    media = FakeMedia()
    service = image_service(tmp_path, media, access_cache_seconds=60)
    image_id = (await uploaded(service, png())).image.id
    request = DownloadRequest(image_id=image_id, variant="w320")
    reads = media.access_reads

    for _ in range(5):
        await read_all((await service.download(request, "")).chunks)
    await service.describe(image_id, "")

    assert media.access_reads == reads + 1  # one read, then remembered
    await service.describe(image_id, STRANGER)
    assert media.access_reads == reads + 2  # per viewer
    await service.delete(OWNER, image_id)
    with pytest.raises(NotFound):
        await service.download(request, "")


async def test_without_the_cache_every_delivery_reads_who_may_see(tmp_path: Path) -> None:
    media = FakeMedia()
    service = image_service(tmp_path, media)
    image_id = (await uploaded(service, png())).image.id
    reads = media.access_reads

    await service.describe(image_id, "")
    media.owner(OWNER).private = True
    with pytest.raises(NotFound):
        await service.describe(image_id, "")
    assert media.access_reads == reads + 2


async def test_a_signed_url_stops_working_when_the_owner_is_hidden_or_blocks_the_viewer(
    tmp_path: Path,
) -> None:
    media = FakeMedia()
    media.owner(OWNER).private = True
    media.owner(OWNER).followers.add(FOLLOWER)
    service = image_service(tmp_path, media, keep_originals=True)
    image_id = (await uploaded(service, png())).image.id
    shown = signed_request(variant_url(await service.describe(image_id, FOLLOWER), "w320"))
    original = signed_request(variant_url(await service.describe(image_id, OWNER), "original"))
    await service.download(shown, "")
    await service.download(original, "")

    media.owner(OWNER).blocked.add(FOLLOWER)
    with pytest.raises(NotFound):
        await service.download(shown, FOLLOWER)  # the blocked viewer, with its token
    media.owner(OWNER).hidden = True  # deactivated (deletion pending) or blocked by an admin
    for request in (shown, original):
        with pytest.raises(NotFound):
            await service.download(request, "")
    media.admins.add(ADMIN)
    await service.download(shown, ADMIN)  # admins still see it, with their token
