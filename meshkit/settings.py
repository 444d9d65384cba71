"""Settings shared by every service; each service subclasses with its own env prefix."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshkit.caller import DEVELOPMENT_MESH_SECRET, derive_caller_token

Environment = Literal["development", "production"]
# Accepted in any case ("debug" works); anything else stops the service with a clear message.
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value),
]


class ServiceSettings(BaseSettings):
    """Listen address, logging and shutdown behaviour common to all services."""

    # hide_input_in_errors: a validation error must never echo a configured secret.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    host: str = Field("127.0.0.1", description="Interface the gRPC server listens on.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    log_level: LogLevel = Field("INFO", description="Python logging level.")
    shutdown_grace_seconds: float = Field(
        5.0, gt=0, description="How long in-flight calls may finish after SIGTERM."
    )
    shutdown_drain_seconds: float = Field(
        0.0,
        ge=0,
        description="After SIGTERM, seconds to keep serving while reporting NOT_SERVING, so a "
        "load balancer stops routing first (about 4 behind the edge with several replicas).",
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


class DataAccessClientSettings(ServiceSettings):
    """Settings of a service that calls data_access with its own caller credential.

    Subclasses set `service_name` and an env prefix; the credential's variable is then
    <PREFIX>DATA_ACCESS_TOKEN.
    """

    service_name: ClassVar[str]
    """The caller name presented to data_access, e.g. "auth_svc"."""

    data_access_addr: str = Field(
        "127.0.0.1:50060", description="host:port of data_access, where the service's data lives."
    )
    data_access_token: SecretStr | None = Field(
        None,
        description=(
            "Caller credential presented to data_access as this service: base64url(HMAC-SHA256("
            "mesh secret, service name)). Required in production; development derives it from "
            "the development mesh secret."
        ),
    )
    call_timeout_seconds: float = Field(
        3.0, gt=0, description="Deadline in seconds of every outbound call to a peer service."
    )

    @model_validator(mode="after")
    def _caller_token_resolves(self) -> Self:
        # Fail at startup, not on the first request, when production lacks its credential.
        self.caller_token()
        return self

    def caller_token(self) -> str:
        """Return the data_access caller credential (the development one only in development)."""
        prefix = self.model_config.get("env_prefix", "")
        return resolve_secret(
            self.data_access_token,
            name=f"{prefix}DATA_ACCESS_TOKEN",
            environment=self.environment,
            development_default=derive_caller_token(DEVELOPMENT_MESH_SECRET, self.service_name),
        )


class TokenVerifyingSettings(DataAccessClientSettings):
    """Settings of a service that also verifies access tokens against auth_svc's JWKS."""

    auth_addr: str = Field(
        "127.0.0.1:50051", description="host:port of auth_svc, source of the JWKS."
    )
