"""StorageSettings: defaults, environment variables, production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from meshkit.caller import DEVELOPMENT_MESH_SECRET, derive_caller_token
from meshkit.settings import ServiceSettings
from storage_svc.settings import StorageSettings
from tests.helpers import clear_environment


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's STORAGE_* and MESHGRAM_ENV variables out of these tests."""
    clear_environment(monkeypatch, "STORAGE_")


def test_development_defaults() -> None:
    settings = StorageSettings()
    assert isinstance(settings, ServiceSettings)
    assert settings.port == 50053
    assert settings.data_access_addr == "127.0.0.1:50060"
    assert settings.auth_addr == "127.0.0.1:50051"
    assert settings.blob_dir == Path("var/blobs")
    assert settings.max_image_bytes == 10 * 1024 * 1024
    assert 0 < settings.max_image_pixels <= 89_478_485  # within Pillow's own guard
    assert settings.caller_token() == derive_caller_token(DEVELOPMENT_MESH_SECRET, "storage_svc")


def test_every_field_is_described() -> None:
    for name, info in StorageSettings.model_fields.items():
        assert info.description, name


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STORAGE_PORT", "6003")
    monkeypatch.setenv("STORAGE_BLOB_DIR", str(tmp_path))
    monkeypatch.setenv("STORAGE_MAX_IMAGE_BYTES", "2097152")
    monkeypatch.setenv("STORAGE_MAX_IMAGE_PIXELS", "1000000")
    monkeypatch.setenv("STORAGE_DATA_ACCESS_TOKEN", "token-from-env")
    settings = StorageSettings()
    assert settings.port == 6003
    assert settings.blob_dir == tmp_path
    assert settings.max_image_bytes == 2 * 1024 * 1024
    assert settings.max_image_pixels == 1_000_000
    assert settings.caller_token() == "token-from-env"


@pytest.mark.parametrize("field", ["max_image_bytes", "max_image_pixels", "call_timeout_seconds"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValidationError):
        StorageSettings(**{field: 0})


def test_production_requires_the_caller_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHGRAM_ENV", "production")
    with pytest.raises(ValidationError, match="STORAGE_DATA_ACCESS_TOKEN"):
        StorageSettings()
    placeholder = derive_caller_token(DEVELOPMENT_MESH_SECRET, "storage_svc")
    with pytest.raises(ValidationError, match="placeholder"):
        StorageSettings(data_access_token=SecretStr(placeholder))
    assert StorageSettings(data_access_token=SecretStr("real")).caller_token() == "real"
