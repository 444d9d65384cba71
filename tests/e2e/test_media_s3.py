"""Media on the S3 blob store, through the real Envoy: a mesh of this module's own whose
storage_svc keeps its bytes in a local S3 server (moto, started by the runner). Uploads, downloads
(whole, by range), and deletion: the bucket loses the bytes of a deleted image, except those
another image shares."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session

from tests import sample_images
from tests.e2e.conftest import QUOTA_BYTES
from tests.e2e.media_support import (
    FORMATS,
    ORIGINAL,
    SIZES,
    rendition,
    sha256_hex,
    upload,
    variant,
    with_query,
)
from tests.e2e.test_social_graph import Member, member, ok
from tests.helpers import migrated_database
from tools.mesh import Mesh, MeshPorts
from tools.s3_dev_server import DEV_ACCESS_KEY_ID, DEV_REGION, DEV_SECRET_ACCESS_KEY

# storage_svc's default bucket, and where its live blobs sit in it (storage_svc/s3_blobs.py).
BUCKET = "meshgram-media"
LIVE_PREFIX = "blobs/"


@pytest.fixture(scope="module")
async def s3_database_url(database_url: str) -> AsyncIterator[str]:
    """A migrated database of this module's mesh, on the session's server."""
    async with migrated_database(database_url, "meshgram_media_s3") as url:
        yield url


@pytest.fixture(scope="module")
def s3_mesh(s3_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh of its own whose storage_svc keeps blobs in a local S3 server."""
    state: Path = tmp_path_factory.mktemp("media-s3")
    mesh = Mesh(
        database_url=s3_database_url,
        ports=MeshPorts.free(),
        state_dir=state,
        cors_origins=("http://app.example.test",),
        extra_env={
            "MESHGRAM_ENV": "development",
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_CLIENT_LOCKOUT_AFTER_FAILURES": "100000",
            "AUTH_JWT_KEYS_DIR": str(state / "keys" / "jwt"),
            "STORAGE_MAX_IMAGE_BYTES": str(2 * 1024 * 1024),
            "STORAGE_KEEP_ORIGINALS": "true",
            "STORAGE_QUOTA_BYTES": str(QUOTA_BYTES),
            "STORAGE_BLOB_COLLECT_SECONDS": "1",
            # No endpoint: the runner starts a local S3 server and points storage_svc at it.
            "STORAGE_BLOB_BACKEND": "s3",
        },
        log_dir=state / "logs",
    )
    mesh.start(timeout=90)
    yield mesh
    mesh.stop()


@pytest.fixture
def http(s3_mesh: Mesh) -> Iterator[httpx.Client]:
    """An HTTP client to this module's edge."""
    with httpx.Client(base_url=f"http://{s3_mesh.edge_address}", timeout=30) as client:
        yield client


def bucket_keys(mesh: Mesh) -> set[str]:
    """The blob keys (SHA-256 hex) stored live in the mesh's bucket."""
    endpoint = mesh._s3_endpoint
    assert endpoint is not None, "the runner started no S3 server"

    async def listed() -> set[str]:
        """List every live object name of the bucket."""
        names: set[str] = set()
        async with get_session().create_client(
            "s3",
            region_name=DEV_REGION,
            endpoint_url=endpoint,
            aws_access_key_id=DEV_ACCESS_KEY_ID,
            aws_secret_access_key=DEV_SECRET_ACCESS_KEY,
        ) as s3:
            async for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix=LIVE_PREFIX
            ):
                names.update(entry["Key"] for entry in page.get("Contents", []))
        return names

    return {name.rsplit("/", 1)[-1] for name in asyncio.run(listed())}


def blob_keys(image: dict[str, Any]) -> set[str]:
    """Every blob an image names: its renditions and its kept original."""
    keys = {r["sha256"] for entry in image["variants"] for r in entry["renditions"]}
    return keys | {image["sha256"]}


def test_uploads_and_downloads_through_the_edge(http: httpx.Client, s3_mesh: Mesh) -> None:
    owner = member(http)
    data = sample_images.phone_jpeg(900, 600)
    image = upload(http, owner, data)
    assert blob_keys(image) <= bucket_keys(s3_mesh)

    described = ok(http.get(f"/v1/images/{image['id']}"))["image"]
    for name in SIZES:
        for fmt, content_type in FORMATS.items():
            served = http.get(with_query(variant(described, name)["url"], format=fmt))
            assert served.status_code == 200, served.text
            assert served.headers["content-type"] == content_type
            assert sha256_hex(served.content) == rendition(described, name, fmt)["sha256"]

    url = with_query(variant(described, "w640")["url"], format="webp")
    whole = http.get(url).content
    part = http.get(url, headers={"range": "bytes=100-299"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-299/{len(whole)}"
    assert part.content == whole[100:300]

    original = variant(
        ok(http.get(f"/v1/images/{image['id']}", headers=owner.auth))["image"], ORIGINAL
    )
    assert http.get(original["url"], headers=owner.auth).content == data


def wait_gone(mesh: Mesh, keys: set[str], seconds: float = 20.0) -> set[str]:
    """The keys still in the bucket once none is left or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        left = keys & bucket_keys(mesh)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def test_deleted_bytes_leave_the_bucket_and_shared_bytes_stay(
    http: httpx.Client, s3_mesh: Mesh
) -> None:
    first, second = member(http), member(http)
    shared = sample_images.phone_jpeg(700, 500)
    own = sample_images.jpeg(64, 48, colour=(10, 200, 120))
    theirs, kept = upload(http, first, shared), upload(http, second, shared)
    alone = upload(http, first, own)
    assert blob_keys(theirs) == blob_keys(kept)
    assert blob_keys(alone).isdisjoint(blob_keys(kept))
    assert blob_keys(alone) | blob_keys(kept) <= bucket_keys(s3_mesh)

    delete(http, first, alone)
    assert wait_gone(s3_mesh, blob_keys(alone)) == set()

    delete(http, first, theirs)
    # The collector runs every second: a few rounds, and the shared bytes are still there.
    time.sleep(3)
    assert blob_keys(kept) <= bucket_keys(s3_mesh)
    for name in SIZES:
        served = http.get(with_query(variant(kept, name)["url"], format="jpeg"))
        assert sha256_hex(served.content) == rendition(kept, name, "jpeg")["sha256"]
    assert http.get(f"/media/{kept['id']}/original", headers=second.auth).content == shared


def delete(http: httpx.Client, who: Member, image: dict[str, Any]) -> None:
    """Delete one of who's images and check it is gone."""
    ok(http.delete(f"/v1/images/{image['id']}", headers=who.auth))
    assert http.get(f"/v1/images/{image['id']}", headers=who.auth).status_code == 404
