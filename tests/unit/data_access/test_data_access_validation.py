"""Checks of caller values that need no database: devices, mails, bounds."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from data_access.records import Device, Mail
from data_access.validation import SEALED_MAIL_MAX_BYTES, USER_AGENT_MAX, Violations
from meshkit.errors import InvalidArgument


def _fields(check: Violations) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        check.raise_if_any()
    return [violation.field for violation in caught.value.violations]


@pytest.mark.parametrize(
    ("client_ip", "stored"),
    [
        ("", ""),
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_a_device_keeps_its_address_in_canonical_form(client_ip: str, stored: str) -> None:
    check = Violations()

    device = check.device("device", Device("x" * USER_AGENT_MAX, client_ip))

    check.raise_if_any()
    assert device == Device("x" * USER_AGENT_MAX, stored)


@pytest.mark.parametrize(
    ("device", "fields"),
    [
        (Device(user_agent="x" * (USER_AGENT_MAX + 1)), ["device.user_agent"]),
        (Device(user_agent="nul\x00"), ["device.user_agent"]),
        (Device(client_ip="example.com"), ["device.client_ip"]),
        (Device(client_ip="1.2.3.4.5"), ["device.client_ip"]),
        (Device(client_ip="1" * 1000), ["device.client_ip"]),
        (Device("\x00", "bad"), ["device.user_agent", "device.client_ip"]),
    ],
)
def test_an_unstorable_device_names_each_bad_field(device: Device, fields: list[str]) -> None:
    check = Violations()

    check.device("device", device)

    assert _fields(check) == fields


@pytest.mark.parametrize(
    ("mail", "fields"),
    [
        (Mail("", b"x"), ["mail.kind"]),
        (Mail("k" * 65, b"x"), ["mail.kind"]),
        (Mail("k", b""), ["mail.sealed"]),
        (Mail("k", b"x" * (SEALED_MAIL_MAX_BYTES + 1)), ["mail.sealed"]),
    ],
)
def test_an_unstorable_mail_names_its_bad_field(mail: Mail, fields: list[str]) -> None:
    check = Violations()

    check.mail("mail", mail)

    assert _fields(check) == fields


def test_no_mail_and_the_largest_mail_are_accepted() -> None:
    check = Violations()

    check.mail("mail", None)
    check.mail("mail", Mail("k", b"x" * SEALED_MAIL_MAX_BYTES))

    check.raise_if_any()


def test_bounds_are_inclusive() -> None:
    check = Violations()
    second, minute = timedelta(seconds=1), timedelta(minutes=1)

    check.in_range("limit", 1, 1, 100)
    check.in_range("limit", 100, 1, 100)
    check.duration("lease", second, second, minute)
    check.duration("lease", minute, second, minute)
    check.raise_if_any()

    check.in_range("low", 0, 1, 100)
    check.in_range("high", 101, 1, 100)
    check.duration("short", second / 2, second, minute)
    check.duration("long", minute + second, second, minute)
    assert _fields(check) == ["low", "high", "short", "long"]


def test_an_optional_id_is_empty_or_a_uuid() -> None:
    check = Violations()
    known = uuid.uuid4()

    assert check.optional_id("keep", "") is None
    assert check.optional_id("keep", str(known)) == known
    check.raise_if_any()

    assert check.optional_id("keep", "nope") is None
    assert _fields(check) == ["keep"]
