"""data_access settings as an operator sets them through the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_access.settings import DataAccessSettings
from meshkit.caller import DEVELOPMENT_MESH_SECRET
from meshkit.settings import PlaceholderSecretError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DATA_ACCESS_DATABASE_URL", "MESHGRAM_ENV"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_listen_on_50060_with_the_embedded_database() -> None:
    settings = DataAccessSettings()

    assert settings.port == 50060
    assert settings.database_url is None
    assert settings.pg_data_dir == Path("var/pgdata")


@pytest.mark.parametrize("variable", ["DATABASE_URL", "DATA_ACCESS_DATABASE_URL"])
def test_database_url_is_read_from_either_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "postgresql://postgres@127.0.0.1:5432/postgres")

    assert DataAccessSettings().database_url == "postgresql://postgres@127.0.0.1:5432/postgres"


def test_blank_database_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "  ")

    assert DataAccessSettings().database_url is None


def test_prefixed_variables_configure_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_ACCESS_PORT", "6000")
    monkeypatch.setenv("DATA_ACCESS_POOL_SIZE", "3")
    monkeypatch.setenv("DATA_ACCESS_REFRESH_TOKEN_SWEEP_SECONDS", "30")
    monkeypatch.setenv("DATA_ACCESS_MESH_SECRET", "from-the-environment")

    settings = DataAccessSettings()

    assert (settings.port, settings.pool_size, settings.refresh_token_sweep_seconds) == (
        6000,
        3,
        30.0,
    )
    assert settings.resolved_mesh_secret() == "from-the-environment"


def test_development_falls_back_to_the_development_mesh_secret() -> None:
    assert DataAccessSettings().resolved_mesh_secret() == DEVELOPMENT_MESH_SECRET


@pytest.mark.parametrize("secret", [None, DEVELOPMENT_MESH_SECRET])
def test_production_refuses_a_missing_or_placeholder_mesh_secret(
    monkeypatch: pytest.MonkeyPatch, secret: str | None
) -> None:
    monkeypatch.setenv("MESHGRAM_ENV", "production")
    if secret is not None:
        monkeypatch.setenv("DATA_ACCESS_MESH_SECRET", secret)

    with pytest.raises(PlaceholderSecretError):
        DataAccessSettings().resolved_mesh_secret()
