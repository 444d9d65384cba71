"""Settings of auth_svc, read from AUTH_* environment variables (plus the shared MESHGRAM_ENV)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from meshkit.caller import DEVELOPMENT_MESH_SECRET, derive_caller_token
from meshkit.settings import ServiceSettings, resolve_secret

SERVICE_NAME = "auth_svc"

# Development-only stand-ins; resolve_secret refuses both when MESHGRAM_ENV=production.
DEVELOPMENT_DATA_ACCESS_TOKEN = derive_caller_token(DEVELOPMENT_MESH_SECRET, SERVICE_NAME)
DEVELOPMENT_PASSWORD_PEPPER = "meshgram-development-password-pepper-not-for-production"


class AuthSettings(ServiceSettings):
    """auth_svc's port, data_access address and credential, secrets, hashing cost, lifetimes."""

    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", frozen=True)

    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    data_access_addr: str = Field(
        "127.0.0.1:50060", description="host:port of data_access (AccountStoreService)."
    )
    data_access_token: SecretStr | None = Field(
        None,
        description=(
            "Caller credential presented to data_access as auth_svc "
            "(base64url HMAC-SHA256 of the mesh secret and 'auth_svc'). Required in production; "
            "development derives it from the development mesh secret."
        ),
    )
    password_pepper: SecretStr | None = Field(
        None,
        description=(
            "Server-side secret mixed into every password hash (HMAC-SHA256 before bcrypt). "
            "Required in production; changing it invalidates every stored password."
        ),
    )
    bcrypt_rounds: int = Field(
        12, ge=4, le=31, description="bcrypt cost factor (log2 of the iterations) for new hashes."
    )
    access_token_ttl_seconds: int = Field(
        900, gt=0, le=86_400, description="Lifetime of an access token (JWT) in seconds."
    )
    refresh_token_ttl_seconds: int = Field(
        30 * 86_400,
        gt=0,
        le=2**31 - 1,
        description="Lifetime of a refresh token in seconds; each refresh issues a fresh one.",
    )
    jwt_private_key_file: Path = Field(
        Path("var/keys/jwt-ed25519.pem"),
        description=(
            "PEM (PKCS#8) Ed25519 private key that signs access tokens, relative to the working "
            "directory. Generated with mode 0600 when missing in development; must exist in "
            "production."
        ),
    )
    call_timeout_seconds: float = Field(
        5.0, gt=0, description="Deadline in seconds of every call to data_access."
    )

    @model_validator(mode="after")
    def _secrets_resolve(self) -> AuthSettings:
        """Refuse to load when a production secret is missing or still a placeholder."""
        self.caller_token()
        self.pepper()
        return self

    def caller_token(self) -> str:
        """Return the data_access caller credential (development default outside production)."""
        return resolve_secret(
            self.data_access_token,
            name="AUTH_DATA_ACCESS_TOKEN",
            environment=self.environment,
            development_default=DEVELOPMENT_DATA_ACCESS_TOKEN,
        )

    def pepper(self) -> str:
        """Return the password pepper (development placeholder outside production)."""
        return resolve_secret(
            self.password_pepper,
            name="AUTH_PASSWORD_PEPPER",
            environment=self.environment,
            development_default=DEVELOPMENT_PASSWORD_PEPPER,
        )
