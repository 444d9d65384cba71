"""meshkit.settings: what counts as a usable secret, and how a service refuses to start."""

from __future__ import annotations

import secrets

import pytest

from auth_svc.settings import AuthSettings
from meshkit.settings import MIN_SECRET_LENGTH, load_settings, secret_weakness
from tests.helpers import clear_environment


@pytest.mark.parametrize(
    ("secret", "weakness"),
    [
        ("abcdefgh" * 4, None),
        (("abcdefgh" * 4)[: MIN_SECRET_LENGTH - 1], "fewer than 32 characters"),
        ("", "fewer than 32 characters"),
        ("abcdefg" * 10, "fewer than 8 distinct characters"),
        (secrets.token_urlsafe(32), None),
    ],
)
def test_secret_weakness(secret: str, weakness: str | None) -> None:
    assert secret_weakness(secret) == weakness


def test_a_service_without_its_secrets_exits_naming_each_variable_but_no_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_environment(monkeypatch, "AUTH_")
    monkeypatch.setenv("AUTH_DATA_ACCESS_TOKEN", "too-short-to-be-a-token")
    monkeypatch.setenv("AUTH_PORT", "70000")

    with pytest.raises(SystemExit) as caught:
        load_settings(AuthSettings, "auth_svc")
    # Field errors first: the secrets are checked once the plain settings are valid.
    assert str(caught.value) == (
        "auth_svc: cannot start, invalid settings:\n"
        "  AUTH_PORT: Input should be less than or equal to 65535"
    )

    monkeypatch.delenv("AUTH_PORT")
    with pytest.raises(SystemExit) as caught:
        load_settings(AuthSettings, "auth_svc")
    lines = str(caught.value).splitlines()
    assert lines[0] == "auth_svc: cannot start, invalid settings:"
    assert lines[1].startswith("  AUTH_DATA_ACCESS_TOKEN is too weak (fewer than 32 characters)")
    assert lines[2].startswith("  AUTH_PASSWORD_PEPPER is not set. `make run` generates one")
    assert "too-short-to-be-a-token" not in str(caught.value)
