"""The edge's media cache, on a mesh of its own whose shared-cache lifetime (s-maxage) is a
few seconds: public renditions served from the cache in the right format, revalidated with
storage_svc once stale (so an image that stops being public, or is deleted, stops being served),
ranges and 304s from the cache, and nothing private ever kept."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import sample_images
from tests.e2e.media_support import FORMATS, rendition, sha256_hex, upload, variant
from tests.e2e.support import own_mesh
from tests.e2e.test_social_graph import Member, make_private, member, ok
from tools.mesh import Mesh

SHARED_CACHE_SECONDS = 2
# Ages are whole seconds: a copy is stale once its age, rounded down, passes s-maxage.
STALE_AFTER = SHARED_CACHE_SECONDS + 1.5
WEBP_FIRST = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"


@pytest.fixture(scope="module")
def cache_mesh(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh on its own ports whose public renditions stay fresh at the edge for 2 s."""
    env = {
        "STORAGE_SHARED_CACHE_SECONDS": str(SHARED_CACHE_SECONDS),
        # Who may see an image is asked of data_access on every revalidation.
        "STORAGE_ACCESS_CACHE_SECONDS": "0",
    }
    with own_mesh(database_url, tmp_path_factory.mktemp("media-cache"), env) as mesh:
        yield mesh


@pytest.fixture
def web(cache_mesh: Mesh) -> Iterator[httpx.Client]:
    """A REST client of the cache mesh's edge."""
    with httpx.Client(base_url=f"http://{cache_mesh.edge_address}", timeout=30) as client:
        yield client


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The events that happened between two readings, those that did not left out."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def public_image(web: httpx.Client, seed: int) -> tuple[Member, dict[str, Any]]:
    """A new member and a distinct image of theirs (public account)."""
    owner = member(web)
    picture = sample_images.jpeg(96, 64, colour=(seed % 256, 40, (seed * 13) % 256))
    return owner, upload(web, owner, picture)


def test_a_public_rendition_is_served_from_the_edge_cache_in_the_format_asked(
    cache_mesh: Mesh, web: httpx.Client
) -> None:
    _, image = public_image(web, 1)
    url = variant(image, "w320")["url"]
    before = cache_mesh.media_cache_events()
    first = web.get(url, headers={"accept": WEBP_FIRST})
    second = web.get(url, headers={"accept": WEBP_FIRST})
    jpeg = web.get(url, headers={"accept": "*/*"})
    jpeg_again = web.get(url, headers={"accept": "image/jpeg"})
    events = delta(before, cache_mesh.media_cache_events())

    for reply, fmt in ((first, "webp"), (second, "webp"), (jpeg, "jpeg"), (jpeg_again, "jpeg")):
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == FORMATS[fmt]
        assert sha256_hex(reply.content) == rendition(image, "w320", fmt)["sha256"]
        assert reply.headers["etag"] == f'"{rendition(image, "w320", fmt)["sha256"]}"'
        # The URL named no format: whoever caches it further must key on Accept.
        assert reply.headers["vary"] == "accept"
        assert reply.headers["cache-control"].startswith("public")
    assert "age" not in first.headers
    assert "age" in second.headers
    assert "age" in jpeg_again.headers
    assert (events.get("miss"), events.get("hit")) == (2, 2), events


@pytest.mark.parametrize(
    "accept",
    [
        WEBP_FIRST,
        "image/webp",
        "IMAGE/WEBP;q=0.5",
        "image/webp;q=0",
        "image/webp;q=0.0, image/jpeg",
        "image/webp;q=abc",
        "image/webpx, text/html",
        "image/webp ;q=1",
        "*/*",
        "",
    ],
)
def test_the_edge_picks_the_format_storage_svc_would(web: httpx.Client, accept: str) -> None:
    # The edge writes the format into a /media URL; the /v1/images download lets storage_svc
    # choose from the same Accept header. They must agree.
    _, image = public_image(web, 2)
    by_edge = web.get(variant(image, "w320")["url"], headers={"accept": accept})
    by_service = web.get(
        f"/v1/images/{image['id']}/variants/w320:download", headers={"accept": accept}
    )
    assert by_edge.status_code == by_service.status_code == 200, by_edge.text
    assert by_edge.headers["content-type"] == by_service.headers["content-type"]


def test_a_stale_copy_is_revalidated_and_one_no_longer_public_is_not_served(
    cache_mesh: Mesh, web: httpx.Client
) -> None:
    owner, image = public_image(web, 3)
    url = variant(image, "w640")["url"]
    assert web.get(url).status_code == 200
    time.sleep(STALE_AFTER)
    before = cache_mesh.media_cache_events()
    again = web.get(url)
    assert again.status_code == 200
    assert sha256_hex(again.content) == rendition(image, "w640", "jpeg")["sha256"]
    assert delta(before, cache_mesh.media_cache_events()).get("validate") == 1

    make_private(web, owner)
    assert web.get(url).status_code in (200, 404)  # fresh for at most s-maxage
    time.sleep(STALE_AFTER)
    refused = web.get(url)
    assert refused.status_code == 404, refused.headers
    assert refused.json()["details"][0]["reason"] == "IMAGE_NOT_FOUND"
    # The owner still sees it (with their token, which the cache never answers).
    assert web.get(url, headers=owner.auth).status_code == 200


def test_a_deleted_image_leaves_the_edge_cache_within_its_shared_lifetime(
    web: httpx.Client,
) -> None:
    owner, image = public_image(web, 4)
    url = variant(image, "square150")["url"]
    assert web.get(url).status_code == 200
    assert "age" in web.get(url).headers
    ok(web.delete(f"/v1/images/{image['id']}", headers=owner.auth))
    time.sleep(STALE_AFTER)
    assert web.get(url).status_code == 404


def test_ranges_and_a_clients_revalidation_are_answered_by_storage_svc_exactly(
    cache_mesh: Mesh, web: httpx.Client
) -> None:
    _, image = public_image(web, 5)
    url = variant(image, "w320")["url"]
    whole = web.get(url)
    assert whole.status_code == 200
    assert "age" in web.get(url).headers  # kept
    before = cache_mesh.media_cache_events()
    part = web.get(url, headers={"range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == whole.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(whole.content)}"
    past = web.get(url, headers={"range": f"bytes={len(whole.content)}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(whole.content)}"
    current = web.get(url, headers={"if-none-match": whole.headers["etag"]})
    assert current.status_code == 304
    assert current.content == b""
    assert "hit" not in delta(before, cache_mesh.media_cache_events())
    # And the cache still serves the whole file.
    assert web.get(url).content == whole.content


def test_signed_and_authorised_downloads_are_never_kept_at_the_edge(
    cache_mesh: Mesh, web: httpx.Client
) -> None:
    owner, image = public_image(web, 6)
    make_private(web, owner)
    described = ok(web.get(f"/v1/images/{image['id']}", headers=owner.auth))["image"]
    signed = variant(described, "w320")["url"]
    assert "signature=" in signed
    before = cache_mesh.media_cache_events()
    replies = [web.get(signed) for _ in range(2)]
    replies += [web.get(f"/media/{image['id']}/w320", headers=owner.auth) for _ in range(2)]
    for reply in replies:
        assert reply.status_code == 200, reply.text
        assert "age" not in reply.headers
        assert not reply.headers["cache-control"].startswith("public")
    assert "hit" not in delta(before, cache_mesh.media_cache_events())
    # A stranger asking for the unsigned URL gets nothing from the cache either.
    assert web.get(f"/media/{image['id']}/w320").status_code == 404
