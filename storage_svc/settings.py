"""Settings of storage_svc, read from STORAGE_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from meshkit.settings import RANDOM_SECRET, RequiredSecret, TokenVerifyingSettings

SERVICE_NAME = "storage_svc"


class StorageSettings(TokenVerifyingSettings):
    """Where storage_svc listens, where blobs go, its limits and how it reaches its peers."""

    model_config = SettingsConfigDict(env_prefix="STORAGE_")
    service_name = SERVICE_NAME

    port: int = Field(50053, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    blob_backend: Literal["local", "s3"] = Field(
        "local",
        description=(
            "Where image bytes live: `local` (the folder STORAGE_BLOB_DIR) or `s3` (an "
            "S3-compatible bucket, STORAGE_S3_*). With `s3` and no STORAGE_S3_ENDPOINT_URL, "
            "`make run` starts a local S3 server (moto) for development."
        ),
    )
    blob_dir: Path = Field(
        Path("var/blobs"),
        description="Folder of the local blob store (relative paths start at the working dir).",
    )
    s3_bucket: str = Field("meshgram-media", description="Bucket of the S3 blob store.")
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint URL; unset means AWS itself (by region)."
    )
    s3_region: str = Field("us-east-1", description="Region of the S3 bucket.")
    s3_access_key_id: str | None = Field(
        None, description="S3 access key id; unset uses the default AWS credential chain."
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret access key; unset uses the default AWS credential chain."
    )
    s3_prefix: str = Field("", description="Prefix of every object name in the bucket.")
    s3_create_bucket: bool = Field(
        False,
        description="Create the bucket at startup when it is missing (development servers).",
    )
    spool_dir: Path = Field(
        Path("var/uploads"),
        description=(
            "Folder of uploads in progress (one-shot and resumable); local to each replica."
        ),
    )
    max_image_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="Largest accepted upload, in bytes."
    )
    max_image_pixels: int = Field(
        40_000_000,
        gt=0,
        description=(
            "Largest accepted width x height; guards against decompression bombs. Pillow's own "
            "guard (about 89 megapixels) applies on top."
        ),
    )
    max_concurrent_processing: int = Field(
        2,
        ge=1,
        le=64,
        description=(
            "Uploads decoded and re-encoded at once (each takes a core and tens of MB); "
            "further uploads wait their turn."
        ),
    )
    keep_originals: bool = Field(
        False,
        description=(
            "Keep each uploaded file as it came (metadata included) besides its re-encoded "
            "renditions; it is served to its owner only and counts against their quota."
        ),
    )
    quota_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=0,
        description="Bytes each account's images may take in storage; 0 for no limit.",
    )
    media_url_keys: SecretStr | None = Field(
        None,
        description=(
            "Keys that sign media URLs, `id:secret` separated by commas; the first signs, all "
            "verify (rotate by putting a new key first). Required; `make run` keeps one in "
            "var/secrets/."
        ),
    )
    media_url_ttl_seconds: int = Field(
        3600,
        ge=60,
        le=7 * 86400,
        description="How long a signed media URL works (rounded up to 5 minutes).",
    )
    access_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description=(
            "How long who-may-see-an-image is remembered per image and viewer, so that popular "
            "images are delivered without a database read; a change of privacy, follows or "
            "blocks shows within this time. 0 turns it off."
        ),
    )
    shared_cache_seconds: int = Field(
        60,
        ge=0,
        le=86400,
        description=(
            "How long a shared cache (the edge's media cache, a CDN) may serve a public "
            "rendition before asking again (s-maxage); an image that stops being public, or is "
            "deleted, is gone from shared caches within this time. Browsers keep it a year."
        ),
    )
    upload_session_ttl_seconds: float = Field(
        86400.0,
        gt=0,
        le=30 * 86400,
        description="A resumable upload expires this long after its last bytes arrived.",
    )
    max_open_uploads: int = Field(
        10, ge=1, le=1000, description="Resumable uploads one account may have open at once."
    )
    blob_collect_seconds: float = Field(
        60.0,
        gt=0,
        le=86400,
        description=(
            "Interval between rounds of the blob collector, which deletes the bytes of deleted "
            "images unless another image shares them, and of expired upload sessions."
        ),
    )
    orphan_scan_seconds: float = Field(
        3600.0,
        gt=0,
        le=7 * 86400,
        description=(
            "Interval between scans of the blob store for bytes no image names (an upload that "
            "failed after writing them); those older than an hour are collected."
        ),
    )

    def required_secrets(self) -> list[RequiredSecret]:
        """The media URL keys, besides the caller credential."""
        return [*super().required_secrets(), self._media_url_secret()]

    def media_url_key_spec(self) -> str:
        """Return the media URL keys (validated when the settings were read)."""
        return self._media_url_secret().get()

    def _media_url_secret(self) -> RequiredSecret:
        """The media URL keys as a required secret."""
        return RequiredSecret(
            variable="STORAGE_MEDIA_URL_KEYS",
            value=self.media_url_keys,
            provided_by="`make run` generates one once (var/secrets/) and passes it to storage_svc",
            expected=f"id:secret (the secret {RANDOM_SECRET})",
        )
