"""Settings shared by every service; each service subclasses with its own env prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "production"]


class ServiceSettings(BaseSettings):
    """Listen address, logging and shutdown behaviour common to all services."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Interface the gRPC server listens on.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    log_level: str = Field("INFO", description="Python logging level.")
    shutdown_grace_seconds: float = Field(
        5.0, gt=0, description="How long in-flight calls may finish after SIGTERM."
    )
    environment: Environment = Field(
        "development",
        validation_alias="MESHGRAM_ENV",
        description="development allows built-in placeholder secrets; production refuses them.",
    )


class PlaceholderSecretError(ValueError):
    """A development placeholder secret was configured outside development."""


def resolve_secret(
    value: SecretStr | None, *, name: str, environment: Environment, development_default: str
) -> str:
    """Return the configured secret, the placeholder in development, or refuse to start."""
    if value is not None and value.get_secret_value():
        secret = value.get_secret_value()
        if environment == "production" and secret == development_default:
            raise PlaceholderSecretError(f"{name} is the development placeholder; set a real one")
        return secret
    if environment == "production":
        raise PlaceholderSecretError(f"{name} must be set when MESHGRAM_ENV=production")
    return development_default
