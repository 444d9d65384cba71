"""Email and username rules, and registration collecting every violation."""

from __future__ import annotations

import pytest

from auth_svc import accounts
from meshkit.errors import InvalidArgument
from meshkit.usernames import normalise_username


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Alice@Example.COM", "alice@example.com"),
        ("  bob@example.org ", "bob@example.org"),
        ("first.last+tag@sub.example.com", "first.last+tag@sub.example.com"),
    ],
)
def test_emails_are_normalised(raw: str, expected: str) -> None:
    assert accounts.normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "   ", "no-at-sign", "a@b", "a..b@example.com", "a@localhost", "x y@example.com"]
)
def test_bad_emails_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        accounts.normalise_email(raw)


def test_email_longer_than_254_is_refused() -> None:
    local = "a" * 64
    domain = ".".join(["b" * 63, "c" * 63, "d" * 63, "e" * 50]) + ".com"
    with pytest.raises(ValueError, match=r".+"):
        accounts.normalise_email(f"{local}@{domain}")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Alice", "alice"), ("a.b_c9", "a.b_c9"), ("abc", "abc"), ("x" * 30, "x" * 30)],
)
def test_usernames_are_lower_cased(raw: str, expected: str) -> None:
    assert normalise_username(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ab",
        "x" * 31,
        ".alice",
        "alice.",
        "al..ice",
        "al-ice",
        "al ice",
        "\u212aate",  # Kelvin sign: lower-cases to an ASCII "k" but is not what was typed
        "élodie",
    ],
)
def test_bad_usernames_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        normalise_username(raw)


def test_registration_is_normalised() -> None:
    password = "maple quartz lantern"
    registration = accounts.validate_registration("Ann@Example.com", "Ann_1", password)
    assert registration == accounts.Registration("ann@example.com", "ann_1", password)


def test_registration_reports_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        accounts.validate_registration("nope", "a", "short")
    assert [v.field for v in caught.value.violations] == ["email", "username", "password"]
    assert all(v.description for v in caught.value.violations)
    assert caught.value.reason == "INVALID_FIELD"


def test_login_email_is_none_when_malformed() -> None:
    assert accounts.login_email("Ann@Example.com") == "ann@example.com"
    assert accounts.login_email("") is None
    assert accounts.login_email("not an email") is None
