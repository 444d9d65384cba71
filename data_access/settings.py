"""Settings of data_access, read from DATA_ACCESS_* environment variables (plus DATABASE_URL)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from meshkit.caller import DEVELOPMENT_MESH_SECRET
from meshkit.settings import ServiceSettings, resolve_secret

SERVICE_NAME = "data_access"


class DataAccessSettings(ServiceSettings):
    """data_access's port, database, mesh secret, pool and refresh-token sweeping."""

    model_config = SettingsConfigDict(env_prefix="DATA_ACCESS_")

    port: int = Field(50060, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "DATA_ACCESS_DATABASE_URL"),
        description=(
            "PostgreSQL URL (postgresql://, postgres:// or postgresql+asyncpg://). When unset, an "
            "embedded PostgreSQL is started in pg_data_dir."
        ),
    )
    pg_data_dir: Path = Field(
        Path("var/pgdata"),
        description="Data folder of the embedded PostgreSQL, relative to the working directory.",
    )
    mesh_secret: SecretStr | None = Field(
        None,
        description=(
            "Secret from which every caller credential is derived (HMAC-SHA256 of the caller's "
            "name). Required in production; development uses a built-in placeholder."
        ),
    )
    pool_size: int = Field(
        10, ge=1, le=1000, description="Database connections kept open by this process."
    )
    pool_max_overflow: int = Field(
        10, ge=0, le=1000, description="Extra connections opened under load beyond pool_size."
    )
    refresh_token_sweep_seconds: float = Field(
        300.0, gt=0, description="Interval between deletions of expired refresh tokens."
    )

    @field_validator("database_url")
    @classmethod
    def _blank_means_unset(cls, value: str | None) -> str | None:
        """Treat DATABASE_URL="" like an unset variable (embedded database)."""
        if value is None or not value.strip():
            return None
        return value.strip()

    def resolved_mesh_secret(self) -> str:
        """Return the mesh secret (development placeholder outside production)."""
        return resolve_secret(
            self.mesh_secret,
            name="DATA_ACCESS_MESH_SECRET",
            environment=self.environment,
            development_default=DEVELOPMENT_MESH_SECRET,
        )
