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
    cache_enabled: bool = Field(
        True,
        description=(
            "Serve profile reads from a cache kept coherent by data_access's change feed; "
            "false sends every read to data_access."
        ),
    )
    cache_max_entries: int = Field(100_000, ge=1, description="Profiles the cache holds at most.")
    cache_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Estimated memory the cached profiles take at most."
    )
    cache_fresh_seconds: float = Field(
        1.0,
        gt=0,
        le=30,
        description=(
            "The cache is used only while the change feed's latest heartbeat vouches for a time "
            "less than this ago: the bound on how stale a cached read can be."
        ),
    )
    username_change_cooldown_seconds: float = Field(
        7 * 24 * 3600,
        ge=0,
        le=365 * 24 * 3600,
        description=(
            "Least time between two username changes of one account (7 days): handles stay "
            "recognisable and cannot be cycled to confuse followers."
        ),
    )
    account_deletion_grace_seconds: float = Field(
        30 * 24 * 3600,
        ge=0,
        le=365 * 24 * 3600,
        description=(
            "How long a deleted account stays restorable by logging in (30 days) before it is "
            "deleted for good."
        ),
    )
    reauthentication_window_seconds: float = Field(
        600,
        gt=0,
        le=86400,
        description=(
            "Deleting an account needs a login (or re-authentication) at most this many seconds "
            "old (10 minutes)."
        ),
    )
