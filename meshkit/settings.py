"""Settings shared by every service; each service subclasses with its own env prefix."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Self, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshkit.mesh_tls import MeshTls
from meshkit.tracing import TracingSettingsError, tracing_settings

Environment = Literal["development", "production"]
UnverifiedEmailMay = Literal["nothing", "sign_in", "edit_profile"]
# Accepted in any case ("debug" works); anything else stops the service with a clear message.
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value),
]

MIN_SECRET_LENGTH = 32
# A long value made of a handful of characters ("changemechangeme...") is no secret either.
MIN_SECRET_DISTINCT_CHARACTERS = 8
NEW_SECRET_COMMAND = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
RANDOM_SECRET = (
    f"at least {MIN_SECRET_LENGTH} random characters, e.g. the output of {NEW_SECRET_COMMAND}"
)


class SecretError(ValueError):
    """A required secret is missing or weak; the message names its variable, never its value."""


def secret_weakness(secret: str) -> str | None:
    """Say why secret is obviously weak (too short, too few distinct characters), else None."""
    if len(secret) < MIN_SECRET_LENGTH:
        return f"fewer than {MIN_SECRET_LENGTH} characters"
    if len(set(secret)) < MIN_SECRET_DISTINCT_CHARACTERS:
        return f"fewer than {MIN_SECRET_DISTINCT_CHARACTERS} distinct characters"
    return None


@dataclass(frozen=True)
class RequiredSecret:
    """A secret a service cannot start without, and what to tell whoever forgot to set it."""

    variable: str
    value: SecretStr | None = field(repr=False)
    provided_by: str
    """How `make run` provides it, e.g. "`make run` generates one (var/secrets/) and ..."."""
    expected: str = RANDOM_SECRET
    """What a good value is, for the refusal message."""

    def problem(self) -> str | None:
        """Say why the secret is unusable (unset or weak), else None; never quotes the value."""
        secret = "" if self.value is None else self.value.get_secret_value()
        if not secret:
            return (
                f"{self.variable} is not set. {self.provided_by}; to start the service any "
                f"other way, set {self.variable} to {self.expected}."
            )
        weakness = secret_weakness(secret)
        if weakness is not None:
            return f"{self.variable} is too weak ({weakness}); set it to {self.expected}."
        return None

    def get(self) -> str:
        """Return the secret; SecretError when it is unset or weak."""
        problem = self.problem()
        if problem is not None or self.value is None:
            raise SecretError(problem)
        return self.value.get_secret_value()


class ServiceSettings(BaseSettings):
    """Listen address, logging and shutdown behaviour common to all services."""

    # hide_input_in_errors: a validation error must never echo a configured secret.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    host: str = Field("127.0.0.1", description="Interface the gRPC server listens on.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    log_level: LogLevel = Field("INFO", description="Python logging level.")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the Prometheus endpoint (/metrics) on `host`; 0 turns it off.",
    )
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
        description="production turns off development conveniences: auth_svc never creates a "
        "missing signing key and `make run` generates no secrets. Secrets are required in both.",
    )

    unverified_email_may: UnverifiedEmailMay = Field(
        "edit_profile",
        validation_alias="MESHGRAM_UNVERIFIED_EMAIL_MAY",
        description="What an account whose email is not verified yet may do: `nothing` (it "
        "cannot sign in), `sign_in` (sign in and read, but change nothing) or `edit_profile` "
        "(also edit its profile and upload its pictures). Same value for every service.",
    )

    tls_cert: Path | None = Field(
        None,
        description="PEM certificate of this workload for mutual TLS inside the mesh (its SPIFFE "
        "identity as URI SAN). With TLS_KEY and TLS_CA set too, the service accepts only TLS "
        "clients holding a certificate from that CA, and calls its peers over mutual TLS; unset, "
        "plaintext (loopback development only). `make run` makes them (tools/dev_certs.py).",
    )
    tls_key: Path | None = Field(None, description="PEM private key of TLS_CERT.")
    tls_ca: Path | None = Field(
        None, description="PEM CA certificate(s) that peers' certificates must be signed by."
    )

    def required_secrets(self) -> list[RequiredSecret]:
        """The secrets this service refuses to start without (subclasses add theirs)."""
        return []

    def mesh_tls(self) -> MeshTls | None:
        """This workload's mutual-TLS material read from its files, or None in plaintext mode."""
        if self.tls_cert is None or self.tls_key is None or self.tls_ca is None:
            return None
        return MeshTls.from_files(self.tls_cert, self.tls_key, self.tls_ca)

    @model_validator(mode="after")
    def _tls_files_are_complete(self) -> Self:
        # Half a TLS configuration would silently fall back to plaintext: refuse it.
        prefix = self.model_config.get("env_prefix", "")
        files = {"TLS_CERT": self.tls_cert, "TLS_KEY": self.tls_key, "TLS_CA": self.tls_ca}
        given = {name for name, path in files.items() if path is not None}
        if given and len(given) < len(files):
            missing = ", ".join(f"{prefix}{name}" for name in files if name not in given)
            raise ValueError(f"mutual TLS needs a certificate, its key and a CA; set {missing}")
        unreadable = [
            f"{prefix}{name} ({path})"
            for name, path in files.items()
            if path is not None and not path.is_file()
        ]
        if unreadable:
            raise ValueError(f"no such file: {', '.join(unreadable)}")
        return self

    @model_validator(mode="after")
    def _secrets_are_usable(self) -> Self:
        # Refuse at startup, not on the first request, and name every problem at once.
        problems = [p for s in self.required_secrets() if (p := s.problem()) is not None]
        if problems:
            raise SecretError("\n".join(problems))
        return self


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def load_settings(settings_class: type[SettingsT], service: str) -> SettingsT:
    """Read settings_class from the environment; SystemExit with a readable message naming each
    invalid variable (never its value) when they are unusable; the OTEL_* variables of tracing
    are checked too."""
    try:
        tracing_settings(os.environ)
    except TracingSettingsError as exc:
        raise SystemExit(f"{service}: cannot start, invalid settings:\n  {exc}") from None
    try:
        return settings_class()
    except ValidationError as exc:
        prefix = settings_class.model_config.get("env_prefix", "")
        lines = [f"{service}: cannot start, invalid settings:"]
        for error in exc.errors(include_url=False, include_input=False):
            loc = [str(part) for part in error["loc"]]
            # Name the variable an operator sets, not the Python field behind it.
            if loc and loc[0] in settings_class.model_fields:
                loc[0] = f"{prefix}{loc[0]}".upper()
            message = error["msg"].removeprefix("Value error, ").replace("\n", "\n  ")
            lines.append(f"  {'.'.join(loc)}: {message}" if loc else f"  {message}")
        raise SystemExit("\n".join(lines)) from None


class DataAccessClientSettings(ServiceSettings):
    """Settings of a service that calls data_access with its own caller credential.

    Subclasses set `service_name` and an env prefix; the credential's variable is then
    <PREFIX>DATA_ACCESS_TOKEN.
    """

    service_name: ClassVar[str]
    """The caller name presented to data_access, e.g. "auth_svc"."""

    data_access_addr: str = Field(
        "127.0.0.1:50060",
        description=(
            "gRPC target of data_access, where the service's data lives: host:port, or "
            "ipv4:host:port,host:port (or a DNS name) for several replicas, used in turn."
        ),
    )
    data_access_token: SecretStr | None = Field(
        None,
        description=(
            "Caller credential presented to data_access as this service in plaintext mode: "
            "base64url(HMAC-SHA256(mesh secret, service name)). Required without TLS_CERT (with "
            "mutual TLS the certificate names the caller); `make run` derives it."
        ),
    )
    call_timeout_seconds: float = Field(
        3.0, gt=0, description="Deadline in seconds of every outbound call to a peer service."
    )

    def required_secrets(self) -> list[RequiredSecret]:
        """The caller credential in plaintext mode, besides what the base class requires; with
        mutual TLS the certificate is the credential."""
        if self.tls_cert is not None:
            return super().required_secrets()
        return [*super().required_secrets(), self._caller_token_secret()]

    def caller_token(self) -> str | None:
        """Return the data_access caller credential of plaintext mode (validated when the
        settings were read); None with mutual TLS, where data_access reads the certificate."""
        if self.tls_cert is not None:
            return None
        return self._caller_token_secret().get()

    def _caller_token_secret(self) -> RequiredSecret:
        """The caller credential as a required secret."""
        prefix = self.model_config.get("env_prefix", "")
        return RequiredSecret(
            variable=f"{prefix}DATA_ACCESS_TOKEN",
            value=self.data_access_token,
            provided_by=(
                f"`make run` derives it from its mesh secret and passes it to {self.service_name}"
            ),
            expected=(
                f'base64url(HMAC-SHA256(DATA_ACCESS_MESH_SECRET, "{self.service_name}")), '
                "as meshkit.caller.derive_caller_token computes it"
            ),
        )


class TokenVerifyingSettings(DataAccessClientSettings):
    """Settings of a service that also verifies access tokens against auth_svc's JWKS."""

    auth_addr: str = Field(
        "127.0.0.1:50051", description="host:port of auth_svc, source of the JWKS."
    )
