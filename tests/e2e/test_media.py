"""Media through the real Envoy on the session mesh (local blob store): phone photos served upright
and stripped of their metadata, the original to its owner only, HTTP delivery (ETag, 304, ranges,
caching, format by Accept), who sees what (public, followers through signed URLs, blocks),
resumable uploads, hostile files, listing, deletion, quotas, races, and logs without secrets."""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from meshgram.storage.v1 import storage_pb2, storage_pb2_grpc
from tests import sample_images
from tests.e2e.conftest import QUOTA_BYTES, UPLOAD_SESSION_TTL_SECONDS
from tests.e2e.media_support import (
    FORMATS,
    ORIGINAL,
    SIZES,
    assert_stripped,
    media_key,
    query_of,
    red_corner,
    rendition,
    sha256_hex,
    signed_path,
    upload,
    variant,
    with_query,
)
from tests.e2e.support import grpc_web_frame, grpc_web_unframe, log_lines, wait_for_request
from tests.e2e.test_grpc_web import WEB_HEADERS
from tests.e2e.test_moderation import make_role
from tests.e2e.test_social_graph import Member, make_private, member, ok, reason, violations
from tools.mesh import Mesh

MAX_UPLOAD_BYTES = 2 * 1024 * 1024
PUBLIC_CACHE = "public, max-age=31536000, s-maxage=0, immutable"
WEBP_FIRST = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9


@pytest.fixture(scope="module")
def phone_photo() -> bytes:
    """A phone JPEG on its side (orientation 6) full of metadata: GPS, XMP, comment, ICC."""
    return sample_images.phone_jpeg()


def tiny(seed: int) -> bytes:
    """A small distinct JPEG (its colour from seed)."""
    return sample_images.jpeg(48, 32, colour=(seed % 256, (seed * 7) % 256, 90))


def fetch(
    http: httpx.Client, url: str, who: Member | None = None, **headers: str
) -> httpx.Response:
    """GET a media URL as who (or signed out) with extra headers."""
    return http.get(url, headers={**(who.auth if who else {}), **headers})


def describe(http: httpx.Client, image_id: str, who: Member | None = None) -> httpx.Response:
    """GET /v1/images/{id} as who (or signed out)."""
    return http.get(f"/v1/images/{image_id}", headers=who.auth if who else {})


def approved_follower(http: httpx.Client, owner: Member) -> Member:
    """A new member whose follow request the (private) owner approved."""
    fan = member(http)
    ok(http.post(f"/v1/profiles/{owner.name}:follow", json={}, headers=fan.auth))
    ok(http.post(f"/v1/profiles/me/followRequests/{fan.name}:approve", json={}, headers=owner.auth))
    return fan


# -- Safe to show -----------------------------------------------------------------------------


def test_a_phone_photo_is_served_upright_and_stripped_in_every_size_and_format(
    http: httpx.Client, phone_photo: bytes
) -> None:
    owner = member(http)
    image = upload(http, owner, phone_photo)
    # Stored 1600x1200 on its side: shown 1200x1600.
    assert (image["width"], image["height"]) == (1200, 1600)
    assert image["sha256"] == sha256_hex(phone_photo)
    assert [entry["name"] for entry in image["variants"]] == [*SIZES, ORIGINAL]

    for name in SIZES:
        listed = variant(image, name)
        assert listed["url"] == f"/media/{image['id']}/{name}"
        by_accept = fetch(http, listed["url"], accept=WEBP_FIRST)
        by_query = fetch(http, with_query(listed["url"], format="jpeg"), accept=WEBP_FIRST)
        for fmt, reply in (("webp", by_accept), ("jpeg", by_query)):
            assert reply.status_code == 200, (name, fmt, reply.text)
            assert reply.headers["content-type"] == FORMATS[fmt]
            expected = rendition(image, name, fmt)
            assert sha256_hex(reply.content) == expected["sha256"]
            assert len(reply.content) == int(expected["sizeBytes"])
            picture = assert_stripped(reply.content)
            assert picture.format == fmt.upper()
            assert picture.size == (listed["width"], listed["height"]), (name, fmt)
            # The stored top-left corner is the shown top-right one once turned upright.
            assert red_corner(picture) == "top-right", (name, fmt)
    assert (variant(image, "w1080")["width"], variant(image, "w320")["width"]) == (1080, 320)
    assert variant(image, "square150")["height"] == 150


def test_the_original_is_served_to_its_owner_only(http: httpx.Client, phone_photo: bytes) -> None:
    owner, other = member(http), member(http)
    image = upload(http, owner, phone_photo)
    original = variant(ok(describe(http, image["id"], owner))["image"], ORIGINAL)
    assert original["url"].startswith(f"/media/{image['id']}/original?")

    served = fetch(http, original["url"], owner)
    assert served.status_code == 200, served.text
    assert served.content == phone_photo
    assert served.headers["content-type"] == "image/jpeg"
    assert "public" not in served.headers["cache-control"]
    by_token = fetch(http, f"/media/{image['id']}/original", owner)
    assert by_token.status_code == 200
    assert by_token.content == phone_photo

    seen = ok(describe(http, image["id"], other))["image"]
    assert ORIGINAL not in [entry["name"] for entry in seen["variants"]]
    assert seen["storedBytes"] == "0"
    for who in (other, None):
        refused = fetch(http, f"/media/{image['id']}/original", who)
        assert refused.status_code == 404, refused.text
        assert reason(refused) == "IMAGE_NOT_FOUND"
    # The signature of the owner's URL is for the original alone.
    moved = with_query(f"/media/{image['id']}/w320", **query_of(original["url"]))
    assert fetch(http, moved).status_code == 403


# -- Delivery ---------------------------------------------------------------------------------


def test_http_delivery_tags_caches_and_serves_ranges(http: httpx.Client) -> None:
    owner = member(http)
    image = upload(http, owner, sample_images.phone_jpeg(800, 600))
    url = variant(image, "w320")["url"]
    webp, jpeg = rendition(image, "w320", "webp"), rendition(image, "w320", "jpeg")

    whole = fetch(http, url, accept="image/webp,*/*")
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "image/webp"
    assert whole.headers["etag"] == f'"{sha256_hex(whole.content)}"' == f'"{webp["sha256"]}"'
    assert whole.headers["cache-control"] == PUBLIC_CACHE
    assert whole.headers["vary"].lower() == "accept"
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert "meshgram-status" not in whole.headers
    # curl sends */*: JPEG, which every client shows.
    plain = fetch(http, url, accept="*/*")
    assert plain.headers["content-type"] == "image/jpeg"
    assert plain.headers["etag"] == f'"{sha256_hex(plain.content)}"' == f'"{jpeg["sha256"]}"'
    assert fetch(http, url, accept="image/webp;q=0").headers["content-type"] == "image/jpeg"
    chosen = fetch(http, with_query(url, format="webp"), accept="*/*")
    assert chosen.headers["content-type"] == "image/webp"
    assert "vary" not in chosen.headers

    current = http.get(
        url, headers={"accept": "image/webp", "if-none-match": whole.headers["etag"]}
    )
    assert current.status_code == 304
    assert current.content == b""
    assert current.headers["etag"] == whole.headers["etag"]
    stale = http.get(url, headers={"accept": "image/webp", "if-none-match": '"0000"'})
    assert stale.status_code == 200
    assert stale.content == whole.content

    size = len(whole.content)
    head = fetch(http, url, accept="image/webp", range="bytes=0-99")
    assert head.status_code == 206
    assert head.headers["content-range"] == f"bytes 0-99/{size}"
    assert head.content == whole.content[:100]
    tail = fetch(http, url, accept="image/webp", range="bytes=-50")
    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes {size - 50}-{size - 1}/{size}"
    assert tail.content == whole.content[-50:]
    past = fetch(http, url, accept="image/webp", range=f"bytes={size}-")
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{size}"
    assert reason(past) == "RANGE_NOT_SATISFIABLE"

    bad_format = fetch(http, with_query(url, format="gif"))
    assert bad_format.status_code == 400
    assert "format" in violations(bad_format)
    bad_variant = fetch(http, f"/media/{image['id']}/w9999")
    assert bad_variant.status_code == 400
    assert "variant" in violations(bad_variant)


async def test_native_grpc_downloads_carry_the_http_status_as_metadata(
    http: httpx.Client, edge_channel: grpc.aio.Channel
) -> None:
    owner = member(http)
    image = upload(http, owner, sample_images.phone_jpeg(640, 480))
    stub = storage_pb2_grpc.StorageServiceStub(edge_channel)
    auth = (("authorization", owner.auth["authorization"]),)

    described = await stub.GetImage(
        storage_pb2.GetImageRequest(image_id=image["id"]), metadata=auth
    )
    assert described.image.sha256 == image["sha256"]
    w640 = next(entry for entry in described.image.variants if entry.name == "w640")
    expected = next(r for r in w640.renditions if r.format == "jpeg")

    request = storage_pb2.DownloadImageRequest(image_id=image["id"], variant="w640", format="jpeg")
    whole_call = stub.DownloadImage(request)
    whole = b"".join([chunk.data async for chunk in whole_call])
    assert sha256_hex(whole) == expected.sha256
    assert dict(await whole_call.initial_metadata())["etag"] == f'"{expected.sha256}"'

    ranged = stub.DownloadImage(request, metadata=(("range", "bytes=10-19"),))
    chunks = [chunk async for chunk in ranged]
    headers = dict(await ranged.initial_metadata())
    assert headers["meshgram-status"] == "206"
    assert headers["content-range"] == f"bytes 10-19/{len(whole)}"
    assert b"".join(chunk.data for chunk in chunks) == whole[10:20]
    assert {chunk.content_type for chunk in chunks} == {"image/jpeg"}

    current = stub.DownloadImage(request, metadata=(("if-none-match", f'"{expected.sha256}"'),))
    assert [chunk async for chunk in current] == []
    assert dict(await current.initial_metadata())["meshgram-status"] == "304"

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.DownloadImage(
            storage_pb2.DownloadImageRequest(image_id=image["id"], variant=ORIGINAL)
        ).read()
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_image_over_grpc_web(http: httpx.Client) -> None:
    owner = member(http)
    image = upload(http, owner, tiny(1))
    reply = http.post(
        "/meshgram.storage.v1.StorageService/GetImage",
        content=grpc_web_frame(
            storage_pb2.GetImageRequest(image_id=image["id"]).SerializeToString()
        ),
        headers=WEB_HEADERS,
    )
    messages, trailers = grpc_web_unframe(reply.content)
    assert trailers.get("grpc-status") == "0", trailers
    seen = storage_pb2.GetImageResponse.FromString(messages[0]).image
    assert seen.id == image["id"]
    # The uploaded file's digest is its owner's only.
    assert seen.sha256 == ""
    # Signed out: the public renditions, never the original.
    assert [entry.name for entry in seen.variants] == list(SIZES)
    served = fetch(http, seen.variants[0].url)
    assert served.status_code == 200


# -- Who sees what ----------------------------------------------------------------------------


def test_a_public_accounts_images_need_neither_token_nor_signature(http: httpx.Client) -> None:
    owner = member(http)
    image = upload(http, owner, tiny(2))
    seen = ok(describe(http, image["id"]))["image"]
    for entry in seen["variants"]:
        assert "?" not in entry["url"]
        assert "urlExpireTime" not in entry
        assert fetch(http, entry["url"]).status_code == 200


def test_a_private_accounts_images_reach_approved_followers_through_signed_urls(
    http: httpx.Client, e2e_state: Path
) -> None:
    owner, stranger = member(http), member(http)
    make_private(http, owner)
    fan = approved_follower(http, owner)
    image, other = upload(http, owner, tiny(3)), upload(http, owner, tiny(4))
    plain = f"/media/{image['id']}/w320"

    assert describe(http, image["id"]).status_code == 404
    assert fetch(http, plain).status_code == 404
    assert describe(http, image["id"], stranger).status_code == 404
    assert fetch(http, plain, stranger).status_code == 404
    assert fetch(http, plain, fan).status_code == 200

    seen = ok(describe(http, image["id"], fan))["image"]
    assert ORIGINAL not in [entry["name"] for entry in seen["variants"]]
    for entry in seen["variants"]:
        assert entry["urlExpireTime"]
        served = fetch(http, entry["url"])  # an <img> tag sends no token
        assert served.status_code == 200, served.text
        assert "public" not in served.headers["cache-control"]
    signed = variant(seen, "w320")["url"]
    query = query_of(signed)

    def refused(url: str) -> None:
        reply = fetch(http, url)
        assert reply.status_code == 403, (url, reply.text)
        assert reason(reply) == "MEDIA_URL_INVALID"

    altered = query["signature"][:-2] + ("AA" if query["signature"][-2:] != "AA" else "BB")
    refused(with_query(signed, signature=altered))
    refused(with_query(signed, expires=str(int(query["expires"]) + 300)))
    refused(with_query(f"/media/{image['id']}/w640", **query))
    refused(with_query(f"/media/{image['id']}/original", **query))
    refused(with_query(f"/media/{other['id']}/w320", **query))

    key = media_key(e2e_state)
    # The signature as documented works (so the expired one below fails for its expiry only).
    assert fetch(http, signed_path(key, image["id"], "w320", int(time.time()) + 600)).is_success
    refused(signed_path(key, image["id"], "w320", int(time.time()) - 60))


def test_a_block_hides_images_between_the_two_accounts(http: httpx.Client) -> None:
    owner, pest = member(http), member(http)
    image = upload(http, owner, tiny(5))
    url = variant(image, "w320")["url"]
    assert fetch(http, url, pest).status_code == 200
    ok(http.post(f"/v1/profiles/{pest.name}:block", json={}, headers=owner.auth))
    assert describe(http, image["id"], pest).status_code == 404
    hidden = fetch(http, url, pest)
    assert hidden.status_code == 404
    assert reason(hidden) == "IMAGE_NOT_FOUND"
    # The other way round too: the pest's own images are hidden from the blocker.
    theirs = upload(http, pest, tiny(6))
    assert describe(http, theirs["id"], owner).status_code == 404
    assert fetch(http, variant(theirs, "w320")["url"], owner).status_code == 404


# -- Resumable uploads ------------------------------------------------------------------------


def create_upload(http: httpx.Client, who: Member, size: int) -> dict[str, Any]:
    """POST /v1/uploads; the new session."""
    return dict(ok(http.post("/v1/uploads", json={"sizeBytes": size}, headers=who.auth))["upload"])


def append(
    http: httpx.Client, who: Member, upload_id: str, offset: int, data: bytes
) -> httpx.Response:
    """PATCH bytes to a session at offset."""
    return http.patch(
        f"/v1/uploads/{upload_id}", params={"offset": offset}, content=data, headers=who.auth
    )


def dropped_append(edge: str, who: Member, upload_id: str, offset: int, rest: bytes) -> None:
    """Start a PATCH announcing all of rest but hang up 64 KiB before its end."""
    host, port = edge.removeprefix("http://").split(":")
    head = (
        f"PATCH /v1/uploads/{upload_id}?offset={offset} HTTP/1.1\r\n"
        f"host: {host}:{port}\r\n"
        f"authorization: {who.auth['authorization']}\r\n"
        "content-type: application/octet-stream\r\n"
        f"content-length: {len(rest)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(head + rest[: len(rest) - 64 * 1024])


def settled_session(http: httpx.Client, who: Member, upload_id: str) -> dict[str, Any]:
    """The session once the dropped call has let go of it: a probe append at the reported
    offset stops being refused as busy (an empty body appends nothing)."""
    deadline = time.monotonic() + 15
    while True:
        session = dict(ok(http.get(f"/v1/uploads/{upload_id}", headers=who.auth))["upload"])
        probe = append(http, who, upload_id, int(session["offset"]), b"")
        if probe.status_code == 200 or time.monotonic() > deadline:
            assert probe.status_code == 200, probe.text
            return dict(probe.json()["upload"])
        assert reason(probe) in ("UPLOAD_BUSY", "UPLOAD_OFFSET_MISMATCH"), probe.text


def test_a_resumable_upload_survives_a_dropped_connection(
    http: httpx.Client, edge_url: str
) -> None:
    owner = member(http)
    data = sample_images.noise_jpeg(1.2, seed=7)
    session = create_upload(http, owner, len(data))
    assert (session["sizeBytes"], session["offset"]) == (str(len(data)), "0")
    upload_id = session["uploadId"]
    first = 300_000
    assert ok(append(http, owner, upload_id, 0, data[:first]))["upload"]["offset"] == str(first)

    dropped_append(edge_url, owner, upload_id, first, data[first:])
    resumed = settled_session(http, owner, upload_id)
    offset = int(resumed["offset"])
    # What arrived before the hang-up is kept (how much depends on buffering on the way).
    assert first <= offset < len(data)

    done = ok(append(http, owner, upload_id, offset, data[offset:]))
    assert done["upload"]["offset"] == str(len(data))
    image = done["image"]
    assert image["sha256"] == sha256_hex(data)
    assert image["sizeBytes"] == str(len(data))
    assert http.get(f"/v1/uploads/{upload_id}", headers=owner.auth).status_code == 404
    # The same file in one go gives the same image.
    again = upload(http, owner, data)
    assert again["sha256"] == image["sha256"]
    assert rendition(again, "w640", "webp") == rendition(image, "w640", "webp")
    served = fetch(http, variant(image, "w320")["url"], accept="image/webp")
    assert sha256_hex(served.content) == rendition(image, "w320", "webp")["sha256"]


def test_resumable_uploads_refuse_wrong_offsets_strangers_and_oversize(
    http: httpx.Client,
) -> None:
    owner, stranger = member(http), member(http)
    data = tiny(9)
    upload_id = create_upload(http, owner, len(data))["uploadId"]
    ok(append(http, owner, upload_id, 0, data[:100]))

    wrong = append(http, owner, upload_id, 50, data[50:])
    assert wrong.status_code == 400
    assert wrong.json()["code"] == FAILED_PRECONDITION
    assert reason(wrong) == "UPLOAD_OFFSET_MISMATCH"
    assert "100" in wrong.json()["message"]
    info = next(d for d in wrong.json()["details"] if d["@type"].endswith("ErrorInfo"))
    assert info["metadata"] == {"offset": "100"}

    for call in (
        http.get(f"/v1/uploads/{upload_id}", headers=stranger.auth),
        append(http, stranger, upload_id, 100, data[100:]),
        http.delete(f"/v1/uploads/{upload_id}", headers=stranger.auth),
    ):
        assert call.status_code == 404, call.text
        assert reason(call) == "UPLOAD_NOT_FOUND"

    over = append(http, owner, upload_id, 100, data[100:] + b"extra")
    assert over.status_code == 400
    assert "body" in violations(over)
    assert ok(http.get(f"/v1/uploads/{upload_id}", headers=owner.auth))["upload"]["offset"] == "100"
    done = ok(append(http, owner, upload_id, 100, data[100:]))
    assert done["image"]["sha256"] == sha256_hex(data)

    too_big = http.post("/v1/uploads", json={"sizeBytes": MAX_UPLOAD_BYTES + 1}, headers=owner.auth)
    assert too_big.status_code == 400
    assert "size_bytes" in violations(too_big)
    assert reason(too_big) == "IMAGE_TOO_LARGE"
    assert http.post("/v1/uploads", json={"sizeBytes": 0}, headers=owner.auth).status_code == 400
    assert http.post("/v1/uploads", json={"sizeBytes": 10}).status_code == 401


def test_an_unfinished_upload_expires(http: httpx.Client) -> None:
    owner = member(http)
    upload_id = create_upload(http, owner, 1000)["uploadId"]
    ok(append(http, owner, upload_id, 0, b"\xff\xd8\xff" + bytes(97)))
    time.sleep(UPLOAD_SESSION_TTL_SECONDS + 2)
    gone = http.get(f"/v1/uploads/{upload_id}", headers=owner.auth)
    assert gone.status_code == 404
    assert reason(gone) == "UPLOAD_NOT_FOUND"
    assert append(http, owner, upload_id, 100, bytes(900)).status_code == 404


# -- Hostile files ----------------------------------------------------------------------------


def hostile(kind: str) -> bytes:
    """A file of a hostile kind: a decompression bomb, a cut-off JPEG, noise, or too many bytes."""
    if kind == "bomb":
        return sample_images.png_bomb()
    if kind == "truncated":
        return sample_images.truncated_jpeg()
    return os.urandom(50_000 if kind == "random" else MAX_UPLOAD_BYTES + 1)


@pytest.mark.parametrize(
    ("kind", "wanted"),
    [
        ("bomb", "IMAGE_TOO_LARGE"),
        ("truncated", "IMAGE_TYPE_UNSUPPORTED"),
        ("random", "IMAGE_TYPE_UNSUPPORTED"),
        ("oversize", "IMAGE_TOO_LARGE"),
    ],
)
def test_hostile_files_are_refused_and_the_service_carries_on(
    http: httpx.Client, kind: str, wanted: str
) -> None:
    owner = member(http)
    data = hostile(kind)
    refused = http.post("/v1/images", content=data, headers=owner.auth)
    assert refused.status_code == 400, refused.text
    assert reason(refused) == wanted
    assert "body" in violations(refused)
    listed = ok(http.get("/v1/images", headers=owner.auth))
    assert listed.get("images", []) == []
    assert listed["usedBytes"] == "0"
    # Right after, the next upload is fine.
    assert upload(http, owner, tiny(10))["sha256"] == sha256_hex(tiny(10))


# -- Listing, deletion, quota -----------------------------------------------------------------


def test_my_images_come_newest_first_a_page_at_a_time_with_my_usage(http: httpx.Client) -> None:
    owner = member(http)
    uploaded = [upload(http, owner, tiny(20 + n))["id"] for n in range(5)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        params = {"pageSize": "2", **({"pageToken": token} if token else {})}
        body = ok(http.get("/v1/images", params=params, headers=owner.auth))
        pages += 1
        assert len(body.get("images", [])) <= 2
        assert int(body["quotaBytes"]) == QUOTA_BYTES
        assert int(body["usedBytes"]) > 0
        seen += [entry["id"] for entry in body.get("images", [])]
        token = body["nextPageToken"]
        if not token:
            break
    assert seen == uploaded[::-1]
    assert pages == 3
    stored = sum(int(ok(describe(http, i, owner))["image"]["storedBytes"]) for i in uploaded)
    assert int(body["usedBytes"]) == stored


def test_deletion_by_the_owner_a_stranger_and_an_admin(
    http: httpx.Client, database_url: str
) -> None:
    owner, stranger, moderator = member(http), member(http), member(http)
    make_role(database_url, moderator, "admin")
    mine, reported = upload(http, owner, tiny(30)), upload(http, owner, tiny(31))

    refused = http.delete(f"/v1/images/{mine['id']}", headers=stranger.auth)
    assert refused.status_code == 404
    assert reason(refused) == "IMAGE_NOT_FOUND"
    assert describe(http, mine["id"]).status_code == 200

    ok(http.delete(f"/v1/images/{mine['id']}", headers=owner.auth))
    assert describe(http, mine["id"], owner).status_code == 404
    assert fetch(http, variant(mine, "w320")["url"], owner).status_code == 404
    assert http.delete(f"/v1/images/{mine['id']}", headers=owner.auth).status_code == 404

    # Admins see every rendition (never the original) and may delete.
    seen = ok(describe(http, reported["id"], moderator))["image"]
    assert ORIGINAL not in [entry["name"] for entry in seen["variants"]]
    ok(http.delete(f"/v1/images/{reported['id']}", headers=moderator.auth))
    assert describe(http, reported["id"], owner).status_code == 404
    events = ok(
        http.get("/v1/admin/auditEvents", params={"username": owner.name}, headers=moderator.auth)
    )["events"]
    assert [(e["action"], e["actorUsername"]) for e in events] == [
        ("image_deleted", moderator.name)
    ]
    assert reported["id"] in events[0]["reason"]
    assert ok(http.get("/v1/images", headers=owner.auth)).get("images", []) == []


def test_bytes_another_image_shares_outlive_a_deletion(http: httpx.Client) -> None:
    first, second = member(http), member(http)
    data = sample_images.phone_jpeg(900, 700)
    theirs, kept = upload(http, first, data), upload(http, second, data)
    assert rendition(theirs, "w640", "jpeg") == rendition(kept, "w640", "jpeg")
    ok(http.delete(f"/v1/images/{theirs['id']}", headers=first.auth))
    # The collector runs every second: give it a few rounds.
    time.sleep(3)
    for name in SIZES:
        for fmt in FORMATS:
            served = fetch(http, with_query(variant(kept, name)["url"], format=fmt))
            assert served.status_code == 200, (name, fmt, served.text)
            assert sha256_hex(served.content) == rendition(kept, name, fmt)["sha256"]
    original = fetch(http, f"/media/{kept['id']}/original", second)
    assert original.content == data


def test_uploads_stop_at_the_quota(http: httpx.Client, mesh: Mesh) -> None:
    owner = member(http)
    used = 0
    for seed in range(10):
        reply = http.post(
            "/v1/images", content=sample_images.noise_jpeg(1.8, seed=seed), headers=owner.auth
        )
        if reply.status_code != 200:
            break
        used += int(reply.json()["image"]["storedBytes"])
    assert reply.status_code == 429, reply.text
    assert reply.json()["code"] == RESOURCE_EXHAUSTED
    assert reason(reply) == "QUOTA_EXCEEDED"
    assert 0 < used <= QUOTA_BYTES
    assert int(ok(http.get("/v1/images", headers=owner.auth))["usedBytes"]) == used

    # Native gRPC gets the same answer.
    chunk = storage_pb2.UploadImageRequest()
    chunk.body.data = sample_images.noise_jpeg(1.8, seed=99)
    with grpc.insecure_channel(mesh.edge_address) as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        with pytest.raises(grpc.RpcError) as full:
            stub.UploadImage(
                iter([chunk]), metadata=(("authorization", owner.auth["authorization"]),)
            )
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_concurrent_uploads_never_take_more_than_the_quota(http: httpx.Client) -> None:
    owner = member(http)
    data = sample_images.noise_jpeg(1.0, seed=42)
    with ThreadPoolExecutor(20) as pool:
        replies = list(
            pool.map(lambda _: http.post("/v1/images", content=data, headers=owner.auth), range(20))
        )
    statuses = Counter(reply.status_code for reply in replies)
    assert set(statuses) == {200, 429}, [r.text for r in replies if r.status_code not in (200, 429)]
    assert all(reason(r) == "QUOTA_EXCEEDED" for r in replies if r.status_code == 429)
    stored = sum(int(r.json()["image"]["storedBytes"]) for r in replies if r.status_code == 200)
    used = int(
        ok(http.get("/v1/images", params={"pageSize": 100}, headers=owner.auth))["usedBytes"]
    )
    assert used == stored
    assert used <= QUOTA_BYTES


# -- Races ------------------------------------------------------------------------------------


def test_identical_concurrent_uploads_each_make_an_image(http: httpx.Client) -> None:
    owner = member(http)
    data = sample_images.phone_jpeg(400, 300)
    with ThreadPoolExecutor(20) as pool:
        replies = list(
            pool.map(lambda _: http.post("/v1/images", content=data, headers=owner.auth), range(20))
        )
    assert [reply.status_code for reply in replies] == [200] * 20, [r.text for r in replies]
    images = [reply.json()["image"] for reply in replies]
    assert len({image["id"] for image in images}) == 20
    assert {image["sha256"] for image in images} == {sha256_hex(data)}
    assert len({rendition(image, "w320", "webp")["sha256"] for image in images}) == 1
    listed = ok(http.get("/v1/images", params={"pageSize": 100}, headers=owner.auth))
    assert len(listed["images"]) == 20


def test_concurrent_deletes_of_one_image_succeed_once(http: httpx.Client) -> None:
    owner = member(http)
    image = upload(http, owner, tiny(40))
    with ThreadPoolExecutor(20) as pool:
        replies = list(
            pool.map(
                lambda _: http.delete(f"/v1/images/{image['id']}", headers=owner.auth), range(20)
            )
        )
    assert Counter(reply.status_code for reply in replies) == {200: 1, 404: 19}
    assert describe(http, image["id"], owner).status_code == 404


# -- Logs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_traffic(mesh: Mesh, edge_url: str) -> tuple[list[str], list[str]]:
    """Media calls of a private account's follower (a good and an altered signed URL) and of
    the owner; returns (secrets that must not be logged, request ids to wait for)."""
    with httpx.Client(base_url=edge_url, timeout=30) as http:
        owner = member(http)
        make_private(http, owner)
        fan = approved_follower(http, owner)
        image = upload(http, owner, tiny(50))
        signed = variant(ok(describe(http, image["id"], fan))["image"], "w640")["url"]
        signature = query_of(signed)["signature"]
        altered = with_query(signed, signature=signature[::-1])
        original = variant(ok(describe(http, image["id"], owner))["image"], ORIGINAL)["url"]
        replies = [
            fetch(http, signed),
            fetch(http, altered),
            fetch(http, original, owner),
            fetch(http, signed, fan),
        ]
    assert [reply.status_code for reply in replies] == [200, 403, 200, 200]
    secrets = [
        signature,
        signature[::-1],
        query_of(original)["signature"],
        owner.tokens["accessToken"],
        fan.tokens["accessToken"],
    ]
    return secrets, [reply.headers["x-request-id"] for reply in replies]


def logged_secrets(mesh: Mesh, process: str, traffic: tuple[list[str], list[str]]) -> list[str]:
    """Lines of a process's log that hold one of the traffic's secrets, once it has logged the
    refused (altered) call, which every process logs."""
    secrets, request_ids = traffic
    assert wait_for_request(mesh, process, request_ids[1])
    return [
        str(line)
        for line in log_lines(mesh, process)
        if any(secret in str(line) for secret in secrets)
    ]


def test_storage_logs_hold_no_signature_or_token(
    mesh: Mesh, signed_traffic: tuple[list[str], list[str]]
) -> None:
    assert logged_secrets(mesh, "storage_svc", signed_traffic) == []


def test_edge_access_log_holds_no_signature_or_token(
    mesh: Mesh, signed_traffic: tuple[list[str], list[str]]
) -> None:
    assert logged_secrets(mesh, "envoy", signed_traffic) == []
