"""Helpers of the end-to-end media tests (test_media.py, test_media_s3.py): uploads over REST,
reading served files back, checking that a served file carries no metadata and stands upright,
and signing media URLs with the mesh's key the way storage_svc does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from PIL import Image as PillowImage

from tests import sample_images
from tests.e2e.test_social_graph import Member, ok
from tools.mesh import MEDIA_URL_KEY_FILE, MEDIA_URL_KEY_ID

ORIGINAL = "original"
# The sizes every upload is served in, smallest first (ImageVariant.name).
SIZES = ("square150", "w320", "w640", "w1080")
FORMATS = {"webp": "image/webp", "jpeg": "image/jpeg"}
# Bytes phone_jpeg puts in its metadata; a served file holding any of them leaks it.
SECRETS = (
    sample_images.CAMERA_MAKE.encode(),
    sample_images.CAMERA_MODEL.encode(),
    sample_images.BODY_SERIAL.encode(),
    sample_images.COMMENT,
    sample_images.XMP_SECRET.encode(),
    sample_images.IPTC_CITY,
    sample_images.gps_latitude_bytes(),
    b"Exif\x00\x00",
    b"http://ns.adobe.com/xap/1.0/",
    b"<x:xmpmeta",
)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of data."""
    return hashlib.sha256(data).hexdigest()


def upload(http: httpx.Client, who: Member, data: bytes) -> dict[str, Any]:
    """POST a file to /v1/images as who; the stored image (fails unless 200)."""
    return dict(ok(http.post("/v1/images", content=data, headers=who.auth))["image"])


def variant(image: dict[str, Any], name: str) -> dict[str, Any]:
    """The entry of one variant in an image as GetImage or an upload describes it."""
    [found] = [entry for entry in image["variants"] if entry["name"] == name]
    return dict(found)


def rendition(image: dict[str, Any], name: str, fmt: str) -> dict[str, Any]:
    """The rendition of a variant in a format, as listed in the image."""
    [found] = [entry for entry in variant(image, name)["renditions"] if entry["format"] == fmt]
    return dict(found)


def with_query(url: str, **params: str) -> str:
    """url with params added to (or replacing those of) its query."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return f"{parts.path}?{urlencode(query)}"


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL."""
    return dict(parse_qsl(urlsplit(url).query))


def media_key(state_dir: Path) -> bytes:
    """The media URL key a mesh run from state_dir signs with (id MEDIA_URL_KEY_ID)."""
    return (state_dir / "secrets" / MEDIA_URL_KEY_FILE).read_text(encoding="utf-8").strip().encode()


def signed_path(key: bytes, image_id: str, name: str, expires: int) -> str:
    """The media path of a variant signed with key until expires (Unix seconds), computed as the
    API documents it: base64url (unpadded) HMAC-SHA256 of "image\\nvariant\\nexpires"."""
    digest = hmac.new(key, f"{image_id}\n{name}\n{expires}".encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    query = urlencode({"expires": expires, "key_id": MEDIA_URL_KEY_ID, "signature": signature})
    return f"/media/{image_id}/{name}?{query}"


def assert_stripped(data: bytes) -> PillowImage.Image:
    """Fail when a served file carries any of phone_jpeg's metadata (in its bytes or as Pillow
    reads it) or lacks its colour profile; return the decoded picture."""
    for secret in SECRETS:
        assert secret not in data, secret
    picture = PillowImage.open(io.BytesIO(data))
    picture.load()
    assert not picture.getexif(), dict(picture.getexif())
    for field in ("exif", "xmp", "XML:com.adobe.xmp", "comment"):
        assert field not in picture.info, field
    profile = picture.info.get("icc_profile")
    # The phone's own profile, as it was.
    assert profile == sample_images.srgb_icc(), "the colour profile was dropped or changed"
    return picture


def red_corner(picture: PillowImage.Image) -> str:
    """Which corner of a phone_jpeg rendition holds the red block ("top-left", "top-right",
    "bottom-left" or "bottom-right"); fails unless exactly one does."""
    rgb = picture.convert("RGB")
    width, height = rgb.size
    corners = {
        "top-left": (width // 10, height // 10),
        "top-right": (width - 1 - width // 10, height // 10),
        "bottom-left": (width // 10, height - 1 - height // 10),
        "bottom-right": (width - 1 - width // 10, height - 1 - height // 10),
    }
    red = [name for name, point in corners.items() if _is_red(rgb.getpixel(point))]
    assert len(red) == 1, (red, [rgb.getpixel(point) for point in corners.values()])
    return red[0]


def _is_red(pixel: Any) -> bool:
    """Whether a pixel is close to sample_images.RED (lossy encodings shift it a little)."""
    return all(
        abs(int(got) - want) < 40 for got, want in zip(pixel, sample_images.RED, strict=True)
    )
