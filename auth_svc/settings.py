"""Settings of auth_svc, read from AUTH_* environment variables (plus the shared MESHGRAM_ENV)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from meshkit.settings import RANDOM_SECRET, DataAccessClientSettings, RequiredSecret

SERVICE_NAME = "auth_svc"


class AuthSettings(DataAccessClientSettings):
    """auth_svc's port, data_access address and credential, secrets, hashing cost, lifetimes."""

    model_config = SettingsConfigDict(env_prefix="AUTH_")
    service_name = SERVICE_NAME

    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    password_pepper: SecretStr | None = Field(
        None,
        description=(
            "Server-side secret mixed into every password hash (HMAC-SHA256 before bcrypt). "
            "Required; `make run` keeps one in var/secrets/. Changing it invalidates every "
            "stored password."
        ),
    )
    bcrypt_rounds: int = Field(
        12,
        ge=4,
        le=31,
        description=(
            "bcrypt cost factor (log2 of the iterations) for new hashes; a password hashed at "
            "another cost is re-hashed at its next successful login."
        ),
    )
    access_token_ttl_seconds: int = Field(
        900, gt=0, le=86_400, description="Lifetime of an access token (JWT) in seconds."
    )
    refresh_token_ttl_seconds: int = Field(
        30 * 86_400,
        gt=0,
        le=2**31 - 1,
        description=(
            "Lifetime of a refresh token in seconds; each refresh issues a fresh one, so a "
            "session not refreshed for this long ends (idle lifetime)."
        ),
    )
    session_max_seconds: int = Field(
        90 * 86_400,
        gt=0,
        le=2**31 - 1,
        description=(
            "Absolute lifetime of a session in seconds: after this long since the login, "
            "refreshing fails and the user logs in again."
        ),
    )
    refresh_reuse_window_seconds: float = Field(
        5.0,
        ge=0,
        le=60,
        description=(
            "A refresh repeated within this many seconds of the first (tabs refreshing at "
            "once) gets the same refresh token instead of revoking the session; 0 turns it off."
        ),
    )
    jwt_private_key_file: Path = Field(
        Path("var/keys/jwt-ed25519.pem"),
        description=(
            "PEM (PKCS#8) Ed25519 private key that signs access tokens, relative to the working "
            "directory. Generated with mode 0600 when missing in development; must exist in "
            "production."
        ),
    )
    # Redeclared for auth_svc's own default and wording: its one peer is data_access.
    call_timeout_seconds: float = Field(
        5.0, gt=0, description="Deadline in seconds of every call to data_access."
    )

    def required_secrets(self) -> list[RequiredSecret]:
        """The password pepper, besides the caller credential."""
        return [*super().required_secrets(), self._pepper_secret()]

    def pepper(self) -> str:
        """Return the password pepper (validated when the settings were read)."""
        return self._pepper_secret().get()

    def _pepper_secret(self) -> RequiredSecret:
        """The password pepper as a required secret."""
        return RequiredSecret(
            variable="AUTH_PASSWORD_PEPPER",
            value=self.password_pepper,
            provided_by="`make run` generates one once (var/secrets/) and passes it to auth_svc",
            expected=f"{RANDOM_SECRET}, and never change it: stored passwords would stop matching",
        )
