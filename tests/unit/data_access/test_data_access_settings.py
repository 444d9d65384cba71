"""data_access settings as an operator sets them through the environment."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from data_access.settings import DataAccessSettings, DatabaseSettings
from tests.helpers import clear_environment

MESH_SECRET = secrets.token_urlsafe(32)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's database, DATA_ACCESS_* and MESHGRAM_ENV variables out; every test
    but the refusals runs with a mesh secret in the environment."""
    clear_environment(monkeypatch, "DATA_ACCESS_")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATA_ACCESS_MESH_SECRET", MESH_SECRET)


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

    settings = DataAccessSettings()

    assert (settings.port, settings.pool_size, settings.refresh_token_sweep_seconds) == (
        6000,
        3,
        30.0,
    )
    assert settings.mesh_secret_value() == MESH_SECRET


@pytest.mark.parametrize("environment", ["development", "production"])
def test_a_missing_mesh_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("MESHGRAM_ENV", environment)
    monkeypatch.delenv("DATA_ACCESS_MESH_SECRET")

    with pytest.raises(ValidationError, match="DATA_ACCESS_MESH_SECRET is not set") as caught:
        DataAccessSettings()
    assert "`make run` generates one once (var/secrets/) and passes it to data_access" in str(
        caught.value
    )


@pytest.mark.parametrize("weak", ["from-the-environment", "x" * 64])
def test_a_weak_mesh_secret_is_refused_without_being_shown(
    monkeypatch: pytest.MonkeyPatch, weak: str
) -> None:
    monkeypatch.setenv("DATA_ACCESS_MESH_SECRET", weak)

    with pytest.raises(ValidationError, match="DATA_ACCESS_MESH_SECRET is too weak") as caught:
        DataAccessSettings()
    assert weak not in str(caught.value)


def test_migrations_need_no_mesh_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_ACCESS_MESH_SECRET")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

    assert DatabaseSettings().database_url == "postgresql://postgres@127.0.0.1:5432/postgres"
