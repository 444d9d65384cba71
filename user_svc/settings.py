"""Settings of user_svc, read from USER_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from meshkit.settings import TokenVerifyingSettings

SERVICE_NAME = "user_svc"


class UserSettings(TokenVerifyingSettings):
    """Where user_svc listens and how it reaches data_access and auth_svc."""

    model_config = SettingsConfigDict(env_prefix="USER_")
    service_name = SERVICE_NAME

    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
