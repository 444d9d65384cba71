"""Settings of data_access, read from DATA_ACCESS_* environment variables (plus DATABASE_URL)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from meshkit.mesh_tls import DEFAULT_TRUST_DOMAIN
from meshkit.settings import RequiredSecret, ServiceSettings

SERVICE_NAME = "data_access"


class DatabaseSettings(ServiceSettings):
    """Where data_access's database is: all that migrations need (they need no secret)."""

    model_config = SettingsConfigDict(env_prefix="DATA_ACCESS_")

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

    @field_validator("database_url")
    @classmethod
    def _blank_means_unset(cls, value: str | None) -> str | None:
        """Treat DATABASE_URL="" like an unset variable (embedded database)."""
        if value is None or not value.strip():
            return None
        return value.strip()


class DataAccessSettings(DatabaseSettings):
    """data_access's port, database, mesh secret, pool and refresh-token sweeping."""

    port: int = Field(50060, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    mesh_secret: SecretStr | None = Field(
        None,
        description=(
            "Secret from which every caller credential of plaintext mode is derived "
            "(HMAC-SHA256 of the caller's name). Required without TLS_CERT (with mutual TLS each "
            "caller is named by its certificate); `make run` keeps one in var/secrets/."
        ),
    )
    trust_domain: str = Field(
        DEFAULT_TRUST_DOMAIN,
        min_length=1,
        description=(
            "SPIFFE trust domain of the callers' certificates: a caller presenting "
            "spiffe://<trust domain>/<workload> is that workload."
        ),
    )
    pool_size: int = Field(
        10, ge=1, le=1000, description="Database connections kept open by this process."
    )
    pool_max_overflow: int = Field(
        10, ge=0, le=1000, description="Extra connections opened under load beyond pool_size."
    )
    refresh_token_sweep_seconds: float = Field(
        300.0,
        gt=0,
        description=(
            "Interval between sweeps of what has outlived its use: expired refresh tokens, ended "
            "sessions, used or expired mailed tokens, and sent or given-up mail."
        ),
    )
    change_heartbeat_seconds: float = Field(
        0.25,
        gt=0,
        le=10,
        description=(
            "Interval of the change feed's round trips to PostgreSQL, each followed by a "
            "heartbeat to subscribers; bounds how stale a subscriber's cache can be."
        ),
    )
    change_retention_seconds: float = Field(
        3600.0,
        ge=120,
        description="How long change-log entries are kept for subscribers that reconnect.",
    )

    def required_secrets(self) -> list[RequiredSecret]:
        """The mesh secret in plaintext mode; with mutual TLS certificates name the callers."""
        if self.tls_cert is not None:
            return super().required_secrets()
        return [*super().required_secrets(), self._mesh_secret()]

    def mesh_secret_value(self) -> str | None:
        """Return the mesh secret (validated when the settings were read); None with mutual TLS,
        where no caller token is ever read."""
        if self.tls_cert is not None:
            return None
        return self._mesh_secret().get()

    def _mesh_secret(self) -> RequiredSecret:
        """The mesh secret as a required secret."""
        return RequiredSecret(
            variable="DATA_ACCESS_MESH_SECRET",
            value=self.mesh_secret,
            provided_by="`make run` generates one once (var/secrets/) and passes it to data_access",
        )
