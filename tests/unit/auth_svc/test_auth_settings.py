"""AuthSettings: defaults, development placeholders, production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from auth_svc.settings import DEVELOPMENT_PASSWORD_PEPPER, AuthSettings
from meshkit.caller import DEVELOPMENT_MESH_SECRET, derive_caller_token
from tests.helpers import clear_environment


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's AUTH_* and MESHGRAM_ENV variables out of these tests."""
    clear_environment(monkeypatch, "AUTH_")


def test_development_defaults() -> None:
    settings = AuthSettings()
    assert settings.port == 50051
    assert settings.data_access_addr == "127.0.0.1:50060"
    assert settings.bcrypt_rounds == 12
    assert settings.access_token_ttl_seconds == 900
    assert settings.refresh_token_ttl_seconds == 30 * 24 * 3600
    assert settings.jwt_private_key_file == Path("var/keys/jwt-ed25519.pem")
    assert settings.caller_token() == derive_caller_token(DEVELOPMENT_MESH_SECRET, "auth_svc")
    assert settings.pepper() == DEVELOPMENT_PASSWORD_PEPPER


def test_every_field_is_described() -> None:
    for name, info in AuthSettings.model_fields.items():
        assert info.description, name


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_PORT", "6000")
    monkeypatch.setenv("AUTH_BCRYPT_ROUNDS", "5")
    monkeypatch.setenv("AUTH_PASSWORD_PEPPER", "pepper-from-env")
    settings = AuthSettings()
    assert settings.port == 6000
    assert settings.bcrypt_rounds == 5
    assert settings.pepper() == "pepper-from-env"


def test_bcrypt_rounds_below_four_are_refused() -> None:
    with pytest.raises(ValidationError):
        AuthSettings(bcrypt_rounds=3)


def test_production_requires_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHGRAM_ENV", "production")
    with pytest.raises(ValidationError, match="AUTH_DATA_ACCESS_TOKEN"):
        AuthSettings(password_pepper="a-real-pepper")
    with pytest.raises(ValidationError, match="AUTH_PASSWORD_PEPPER"):
        AuthSettings(data_access_token="a-real-token")
    settings = AuthSettings(data_access_token="a-real-token", password_pepper="a-real-pepper")
    assert settings.caller_token() == "a-real-token"


def test_production_refuses_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHGRAM_ENV", "production")
    with pytest.raises(ValidationError, match="placeholder"):
        AuthSettings(
            data_access_token=derive_caller_token(DEVELOPMENT_MESH_SECRET, "auth_svc"),
            password_pepper="a-real-pepper",
        )
    with pytest.raises(ValidationError, match="placeholder"):
        AuthSettings(data_access_token="a-real-token", password_pepper=DEVELOPMENT_PASSWORD_PEPPER)
