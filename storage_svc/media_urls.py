"""Signed, expiring media URLs: how a viewer allowed to see an image that is not public fetches
its files without a token (an <img> tag sends none).

A signature is HMAC-SHA256 over the image id, the variant and the expiry, under one of several
named keys. The first key signs; every listed key verifies, so a key is rotated by putting the
new one first and dropping the old one once the URLs it signed have expired. Expiries are
rounded up to a fixed step, so one viewer asking twice in a while gets the same URL, which
browsers and caches then keep.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from meshkit.errors import PermissionDenied
from meshkit.reasons import Reason

# URLs issued within one step share an expiry (and so are the same URL).
EXPIRY_STEP_SECONDS = 300
_SIGNATURE_BYTES = 32


@dataclass(frozen=True)
class SignedUrl:
    """A URL path with its signing query, and when it stops working (Unix seconds)."""

    path: str
    expires: int


class MediaUrlSigner:
    """Signs media paths with the first key and verifies signatures made by any key."""

    def __init__(
        self,
        keys: Mapping[str, bytes],
        *,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("at least one media URL key is needed")
        self._keys = dict(keys)
        self._signing_id = next(iter(self._keys))
        self._ttl = ttl_seconds
        self._clock = clock

    def sign(self, image_id: str, variant: str) -> SignedUrl:
        """Return the signed path of an image's variant, good for at least the configured time."""
        step = EXPIRY_STEP_SECONDS
        expires = math.ceil((self._clock() + self._ttl) / step) * step
        signature = self._signature(self._signing_id, image_id, variant, expires)
        query = urlencode({"expires": expires, "key_id": self._signing_id, "signature": signature})
        return SignedUrl(path=f"{media_path(image_id, variant)}?{query}", expires=expires)

    def verify(
        self, image_id: str, variant: str, *, expires: int, key_id: str, signature: str
    ) -> None:
        """Return when the signature is one of ours for this image and variant and has not
        expired; PermissionDenied (MEDIA_URL_INVALID) otherwise, the same for every failure."""
        key_known = key_id in self._keys
        # Compare against a signature even for an unknown key, so timing tells nothing.
        expected = self._signature(
            key_id if key_known else self._signing_id, image_id, variant, expires
        )
        valid = hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
        if not (key_known and valid and expires > self._clock()):
            raise PermissionDenied(
                message="this media URL is not valid (altered or expired): ask for a new one",
                reason=Reason.MEDIA_URL_INVALID,
            )

    def _signature(self, key_id: str, image_id: str, variant: str, expires: int) -> str:
        """The base64url (unpadded) HMAC-SHA256 of the signed fields under key_id."""
        message = f"{image_id}\n{variant}\n{expires}".encode()
        digest = hmac.new(self._keys[key_id], message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_SIGNATURE_BYTES]).rstrip(b"=").decode()


def media_path(image_id: str, variant: str) -> str:
    """The edge path of an image's variant."""
    return f"/media/{image_id}/{variant}"


def parse_keys(spec: str) -> dict[str, bytes]:
    """Parse "id:secret,id:secret" (the first signs) into named keys; ValueError when a part is
    malformed, an id repeats or a secret is shorter than 32 characters."""
    keys: dict[str, bytes] = {}
    for part in spec.split(","):
        key_id, sep, secret = part.strip().partition(":")
        if not sep or not key_id or not key_id.isalnum():
            raise ValueError("each key must be written id:secret with an alphanumeric id")
        if len(secret) < 32:
            raise ValueError(f"the secret of key {key_id!r} must have at least 32 characters")
        if key_id in keys:
            raise ValueError(f"key {key_id!r} is listed twice")
        keys[key_id] = secret.encode()
    return keys
