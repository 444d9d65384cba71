"""The mail settings of auth_svc: defaults, refusals, and the SMTP password kept out of sight."""

from __future__ import annotations

import secrets

import pytest
from pydantic import ValidationError

from auth_svc.mail.wiring import smtp_server
from auth_svc.settings import AuthSettings
from tests.helpers import clear_environment

TOKEN = secrets.token_urlsafe(32)
PEPPER = secrets.token_urlsafe(32)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's AUTH_* and MESHGRAM_ENV variables out of these tests."""
    clear_environment(monkeypatch, "AUTH_")


def settings(**fields: object) -> AuthSettings:
    return AuthSettings(data_access_token=TOKEN, password_pepper=PEPPER, **fields)


def test_defaults_send_plain_smtp_to_the_local_mailbox() -> None:
    server = smtp_server(settings())
    assert (server.host, server.port, server.security) == ("127.0.0.1", 8025, "none")
    assert server.username == ""
    assert server.password is None
    assert settings().public_url == "http://localhost:8080"
    assert settings().mail_from == "meshgram <no-reply@localhost>"


def test_the_smtp_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    password = secrets.token_urlsafe(16)
    monkeypatch.setenv("AUTH_SMTP_HOST", "smtp.example.test")
    monkeypatch.setenv("AUTH_SMTP_PORT", "465")
    monkeypatch.setenv("AUTH_SMTP_SECURITY", "tls")
    monkeypatch.setenv("AUTH_SMTP_USERNAME", "mailer")
    monkeypatch.setenv("AUTH_SMTP_PASSWORD", password)
    monkeypatch.setenv("AUTH_SMTP_TIMEOUT_SECONDS", "3")
    server = smtp_server(settings())
    assert (server.host, server.port, server.security) == ("smtp.example.test", 465, "tls")
    assert server.username == "mailer"
    assert server.password is not None
    assert server.password.get_secret_value() == password
    assert server.timeout_seconds == 3
    assert password not in repr(server)
    assert password not in repr(settings())


@pytest.mark.parametrize(
    "fields",
    [
        {"smtp_security": "ssl"},
        {"smtp_port": 0},
        {"smtp_timeout_seconds": 0},
        {"mail_max_attempts": 0},
        {"public_url": "localhost:8080"},
        {"public_url": "javascript:alert(1)"},
        {"public_url": "https://app.example.test/?next=x"},
    ],
)
def test_unusable_values_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        settings(**fields)
