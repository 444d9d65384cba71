"""UserSettings: defaults, environment variables, refusal of a missing or weak credential."""

from __future__ import annotations

import secrets

import pytest
from pydantic import SecretStr, ValidationError

from meshkit.settings import ServiceSettings
from tests.helpers import clear_environment
from user_svc.settings import UserSettings

TOKEN = SecretStr(secrets.token_urlsafe(32))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's USER_* and MESHGRAM_ENV variables out of these tests."""
    clear_environment(monkeypatch, "USER_")


def test_defaults() -> None:
    settings = UserSettings(data_access_token=TOKEN)
    assert isinstance(settings, ServiceSettings)
    assert settings.port == 50052
    assert settings.data_access_addr == "127.0.0.1:50060"
    assert settings.auth_addr == "127.0.0.1:50051"
    assert settings.call_timeout_seconds > 0
    assert settings.caller_token() == TOKEN.get_secret_value()


def test_every_field_is_described() -> None:
    for name, info in UserSettings.model_fields.items():
        assert info.description, name


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_PORT", "6002")
    monkeypatch.setenv("USER_DATA_ACCESS_ADDR", "10.0.0.5:50060")
    monkeypatch.setenv("USER_DATA_ACCESS_TOKEN", TOKEN.get_secret_value())
    monkeypatch.setenv("USER_AUTH_ADDR", "10.0.0.6:50051")
    monkeypatch.setenv("USER_CALL_TIMEOUT_SECONDS", "0.5")
    settings = UserSettings()
    assert settings.port == 6002
    assert settings.data_access_addr == "10.0.0.5:50060"
    assert settings.auth_addr == "10.0.0.6:50051"
    assert settings.call_timeout_seconds == 0.5
    assert settings.caller_token() == TOKEN.get_secret_value()


@pytest.mark.parametrize("environment", ["development", "production"])
def test_a_missing_caller_token_is_refused(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("MESHGRAM_ENV", environment)
    with pytest.raises(ValidationError, match="USER_DATA_ACCESS_TOKEN is not set") as caught:
        UserSettings()
    assert "`make run` derives it from its mesh secret and passes it to user_svc" in str(
        caught.value
    )


def test_a_weak_caller_token_is_refused_without_being_shown() -> None:
    with pytest.raises(ValidationError, match="USER_DATA_ACCESS_TOKEN is too weak") as caught:
        UserSettings(data_access_token=SecretStr("weak-user-token-1234"))
    assert "weak-user-token-1234" not in str(caught.value)


def test_the_token_never_shows_in_the_representation() -> None:
    assert TOKEN.get_secret_value() not in repr(UserSettings(data_access_token=TOKEN))
