"""StorageSettings: defaults, environment variables, refusal of a missing or weak credential."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from meshkit.settings import ServiceSettings
from storage_svc.settings import StorageSettings
from tests.helpers import clear_environment

TOKEN = SecretStr(secrets.token_urlsafe(32))
KEYS = SecretStr("k1:" + secrets.token_urlsafe(32))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's STORAGE_* and MESHGRAM_ENV variables out of these tests."""
    clear_environment(monkeypatch, "STORAGE_")


def test_defaults() -> None:
    settings = StorageSettings(data_access_token=TOKEN, media_url_keys=KEYS)
    assert isinstance(settings, ServiceSettings)
    assert settings.port == 50053
    assert settings.data_access_addr == "127.0.0.1:50060"
    assert settings.auth_addr == "127.0.0.1:50051"
    assert settings.blob_dir == Path("var/blobs")
    assert settings.max_image_bytes == 10 * 1024 * 1024
    assert 0 < settings.max_image_pixels <= 89_478_485  # within Pillow's own guard
    assert settings.caller_token() == TOKEN.get_secret_value()
    assert settings.blob_backend == "local"
    assert settings.keep_originals is False
    assert settings.quota_bytes == 1024 * 1024 * 1024
    assert settings.media_url_key_spec() == KEYS.get_secret_value()


def test_every_field_is_described() -> None:
    for name, info in StorageSettings.model_fields.items():
        assert info.description, name


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STORAGE_PORT", "6003")
    monkeypatch.setenv("STORAGE_BLOB_DIR", str(tmp_path))
    monkeypatch.setenv("STORAGE_MAX_IMAGE_BYTES", "2097152")
    monkeypatch.setenv("STORAGE_MAX_IMAGE_PIXELS", "1000000")
    monkeypatch.setenv("STORAGE_DATA_ACCESS_TOKEN", TOKEN.get_secret_value())
    monkeypatch.setenv("STORAGE_MEDIA_URL_KEYS", KEYS.get_secret_value())
    monkeypatch.setenv("STORAGE_BLOB_BACKEND", "s3")
    monkeypatch.setenv("STORAGE_KEEP_ORIGINALS", "true")
    settings = StorageSettings()
    assert settings.blob_backend == "s3"
    assert settings.keep_originals is True
    assert settings.port == 6003
    assert settings.blob_dir == tmp_path
    assert settings.max_image_bytes == 2 * 1024 * 1024
    assert settings.max_image_pixels == 1_000_000
    assert settings.caller_token() == TOKEN.get_secret_value()


@pytest.mark.parametrize("field", ["max_image_bytes", "max_image_pixels", "call_timeout_seconds"])
def test_limits_must_be_positive(field: str) -> None:
    limits: dict[str, Any] = {field: 0}
    with pytest.raises(ValidationError):
        StorageSettings(data_access_token=TOKEN, media_url_keys=KEYS, **limits)


@pytest.mark.parametrize("environment", ["development", "production"])
def test_a_missing_caller_token_is_refused(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("MESHGRAM_ENV", environment)
    with pytest.raises(ValidationError, match="STORAGE_DATA_ACCESS_TOKEN is not set") as caught:
        StorageSettings()
    assert "`make run` derives it from its mesh secret and passes it to storage_svc" in str(
        caught.value
    )


def test_a_weak_caller_token_is_refused_without_being_shown() -> None:
    with pytest.raises(ValidationError, match="STORAGE_DATA_ACCESS_TOKEN is too weak") as caught:
        StorageSettings(data_access_token=SecretStr("weak-storage-token-1234"), media_url_keys=KEYS)
    assert "weak-storage-token-1234" not in str(caught.value)


def test_media_url_keys_are_required_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="STORAGE_MEDIA_URL_KEYS is not set"):
        StorageSettings(data_access_token=TOKEN)
    with pytest.raises(ValidationError, match="STORAGE_MEDIA_URL_KEYS is too weak") as caught:
        StorageSettings(data_access_token=TOKEN, media_url_keys=SecretStr("k1:short-secret"))
    assert "short-secret" not in str(caught.value)


def test_an_unknown_blob_backend_is_refused() -> None:
    with pytest.raises(ValidationError, match="blob_backend"):
        StorageSettings(data_access_token=TOKEN, media_url_keys=KEYS, blob_backend="ftp")
