"""Settings of storage_svc, read from STORAGE_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from meshkit.settings import TokenVerifyingSettings

SERVICE_NAME = "storage_svc"


class StorageSettings(TokenVerifyingSettings):
    """Where storage_svc listens, where blobs go, its limits and how it reaches its peers."""

    model_config = SettingsConfigDict(env_prefix="STORAGE_")
    service_name = SERVICE_NAME

    port: int = Field(50053, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    blob_dir: Path = Field(
        Path("var/blobs"),
        description="Folder of the local blob store (relative paths start at the working dir).",
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
    blob_collect_seconds: float = Field(
        60.0,
        gt=0,
        le=86400,
        description=(
            "Interval between rounds of the blob collector, which deletes the bytes of images "
            "whose account was deleted for good unless another image shares them."
        ),
    )
