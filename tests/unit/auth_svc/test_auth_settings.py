"""AuthSettings: defaults, and refusal of missing or weak secrets in every environment."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from auth_svc.settings import AuthSettings
from data_access.login_attempts import COUNTER_IDLE_MAX
from tests.helpers import clear_environment

TOKEN = secrets.token_urlsafe(32)
PEPPER = secrets.token_urlsafe(32)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's AUTH_* and MESHGRAM_ENV variables out of these tests."""
    clear_environment(monkeypatch, "AUTH_")


def test_defaults() -> None:
    settings = AuthSettings(data_access_token=TOKEN, password_pepper=PEPPER)
    assert settings.port == 50051
    assert settings.data_access_addr == "127.0.0.1:50060"
    assert settings.bcrypt_rounds == 12
    assert settings.access_token_ttl_seconds == 900
    assert settings.refresh_token_ttl_seconds == 30 * 24 * 3600
    assert settings.jwt_private_key_file == Path("var/keys/jwt-ed25519.pem")
    assert settings.environment == "development"
    assert settings.caller_token() == TOKEN
    assert settings.pepper() == PEPPER


def test_every_field_is_described() -> None:
    for name, info in AuthSettings.model_fields.items():
        assert info.description, name


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_PORT", "6000")
    monkeypatch.setenv("AUTH_BCRYPT_ROUNDS", "5")
    monkeypatch.setenv("AUTH_DATA_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("AUTH_PASSWORD_PEPPER", PEPPER)
    settings = AuthSettings()
    assert settings.port == 6000
    assert settings.bcrypt_rounds == 5
    assert settings.caller_token() == TOKEN
    assert settings.pepper() == PEPPER


def test_bcrypt_rounds_below_four_are_refused() -> None:
    with pytest.raises(ValidationError):
        AuthSettings(data_access_token=TOKEN, password_pepper=PEPPER, bcrypt_rounds=3)


@pytest.mark.parametrize("environment", ["development", "production"])
def test_missing_secrets_are_refused_naming_each_variable(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("MESHGRAM_ENV", environment)
    with pytest.raises(ValidationError) as caught:
        AuthSettings()
    message = str(caught.value)
    assert "AUTH_DATA_ACCESS_TOKEN is not set" in message
    assert "AUTH_PASSWORD_PEPPER is not set" in message
    assert "`make run` generates one once (var/secrets/) and passes it to auth_svc" in message


def test_each_missing_secret_is_named() -> None:
    with pytest.raises(ValidationError, match="AUTH_PASSWORD_PEPPER is not set"):
        AuthSettings(data_access_token=TOKEN)
    with pytest.raises(ValidationError, match="AUTH_DATA_ACCESS_TOKEN is not set"):
        AuthSettings(password_pepper=PEPPER)
    with pytest.raises(ValidationError, match="AUTH_PASSWORD_PEPPER is not set"):
        AuthSettings(data_access_token=TOKEN, password_pepper="")


@pytest.mark.parametrize("weak", ["pepper-of-31-characters-exactly", "changeme" * 5])
def test_a_weak_pepper_is_refused_without_being_shown(weak: str) -> None:
    with pytest.raises(ValidationError, match="AUTH_PASSWORD_PEPPER is too weak") as caught:
        AuthSettings(data_access_token=TOKEN, password_pepper=weak)
    assert weak not in str(caught.value)


def test_a_weak_caller_token_is_refused_without_being_shown() -> None:
    with pytest.raises(ValidationError, match="AUTH_DATA_ACCESS_TOKEN is too weak") as caught:
        AuthSettings(data_access_token="a-real-token", password_pepper=PEPPER)
    assert "a-real-token" not in str(caught.value)


def test_the_account_defences_have_their_documented_defaults() -> None:
    settings = AuthSettings(data_access_token=TOKEN, password_pepper=PEPPER)
    assert settings.reauthentication_window_seconds == 600
    assert (settings.mfa_issuer, settings.mfa_challenge_ttl_seconds) == ("meshgram", 300)
    assert settings.mfa_challenge_max_attempts == 5
    assert (settings.lockout_after_failures, settings.lockout_base_seconds) == (5, 30)
    assert (settings.lockout_max_seconds, settings.lockout_reset_seconds) == (900, 3600)
    assert (settings.captcha_after_failures, settings.captcha_after_client_failures) == (3, 10)
    assert settings.client_lockout_after_failures == 100
    assert settings.captcha_verify_url == ""


def test_a_captcha_provider_needs_its_secret() -> None:
    with pytest.raises(ValidationError, match="AUTH_CAPTCHA_SECRET is required"):
        AuthSettings(
            data_access_token=TOKEN,
            password_pepper=PEPPER,
            captcha_verify_url="https://captcha.example/siteverify",
        )


# data_access refuses to count over longer than COUNTER_IDLE_MAX (INVALID_ARGUMENT on every
# login): such a setting must stop auth_svc at start instead.
def test_a_reset_time_the_counter_store_refuses_is_refused_at_start() -> None:
    too_long = int(COUNTER_IDLE_MAX.total_seconds()) + 1
    with pytest.raises(ValidationError):
        AuthSettings(
            data_access_token=TOKEN, password_pepper=PEPPER, lockout_reset_seconds=too_long
        )
