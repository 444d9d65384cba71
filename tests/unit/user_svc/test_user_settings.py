"""UserSettings: defaults, environment variables, production refusals."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from meshkit.caller import DEVELOPMENT_MESH_SECRET, derive_caller_token
from meshkit.settings import ServiceSettings
from tests.helpers import clear_environment
from user_svc.settings import UserSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's USER_* and MESHGRAM_ENV variables out of these tests."""
    clear_environment(monkeypatch, "USER_")


def test_development_defaults() -> None:
    settings = UserSettings()
    assert isinstance(settings, ServiceSettings)
    assert settings.port == 50052
    assert settings.data_access_addr == "127.0.0.1:50060"
    assert settings.auth_addr == "127.0.0.1:50051"
    assert settings.call_timeout_seconds > 0
    assert settings.caller_token() == derive_caller_token(DEVELOPMENT_MESH_SECRET, "user_svc")


def test_every_field_is_described() -> None:
    for name, info in UserSettings.model_fields.items():
        assert info.description, name


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_PORT", "6002")
    monkeypatch.setenv("USER_DATA_ACCESS_ADDR", "10.0.0.5:50060")
    monkeypatch.setenv("USER_DATA_ACCESS_TOKEN", "token-from-env")
    monkeypatch.setenv("USER_AUTH_ADDR", "10.0.0.6:50051")
    monkeypatch.setenv("USER_CALL_TIMEOUT_SECONDS", "0.5")
    settings = UserSettings()
    assert settings.port == 6002
    assert settings.data_access_addr == "10.0.0.5:50060"
    assert settings.auth_addr == "10.0.0.6:50051"
    assert settings.call_timeout_seconds == 0.5
    assert settings.caller_token() == "token-from-env"


def test_production_requires_the_caller_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHGRAM_ENV", "production")
    with pytest.raises(ValidationError, match="USER_DATA_ACCESS_TOKEN"):
        UserSettings()
    placeholder = derive_caller_token(DEVELOPMENT_MESH_SECRET, "user_svc")
    with pytest.raises(ValidationError, match="placeholder"):
        UserSettings(data_access_token=SecretStr(placeholder))
    assert UserSettings(data_access_token=SecretStr("real")).caller_token() == "real"


def test_the_token_never_shows_in_the_representation() -> None:
    assert "secret-value" not in repr(UserSettings(data_access_token=SecretStr("secret-value")))
