"""Settings of storage_svc, read from STORAGE_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from meshkit.caller import DEVELOPMENT_MESH_SECRET, derive_caller_token
from meshkit.settings import ServiceSettings, resolve_secret

SERVICE_NAME = "storage_svc"


class StorageSettings(ServiceSettings):
    """Where storage_svc listens, where blobs go, its limits and how it reaches its peers."""

    model_config = SettingsConfigDict(env_prefix="STORAGE_", extra="ignore", frozen=True)

    port: int = Field(50053, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    data_access_addr: str = Field(
        "127.0.0.1:50060", description="host:port of data_access (MediaStoreService)."
    )
    data_access_token: SecretStr | None = Field(
        None,
        description=(
            "Caller credential for data_access: base64url(HMAC-SHA256(mesh secret, "
            "'storage_svc')). Required in production; development derives it from the "
            "development mesh secret."
        ),
    )
    auth_addr: str = Field(
        "127.0.0.1:50051", description="host:port of auth_svc, source of the JWKS."
    )
    call_timeout_seconds: float = Field(
        3.0, gt=0, description="Deadline of every outbound call to data_access or auth_svc."
    )
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

    @model_validator(mode="after")
    def _token_resolvable(self) -> StorageSettings:
        # Fail at startup, not on the first request, when production lacks its credential.
        self.caller_token()
        return self

    def caller_token(self) -> str:
        """Return the data_access credential (the development one only in development)."""
        return resolve_secret(
            self.data_access_token,
            name="STORAGE_DATA_ACCESS_TOKEN",
            environment=self.environment,
            development_default=derive_caller_token(DEVELOPMENT_MESH_SECRET, SERVICE_NAME),
        )
