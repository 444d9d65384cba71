"""Names someone may take (sign-up and renames): the username rule plus the reserved names.

The shape rule itself (characters, length, dots) is covered in tests/unit/auth_svc.
"""

from __future__ import annotations

import pytest

from meshkit.usernames import RESERVED, new_username, normalise_username


@pytest.mark.parametrize("raw", ["admin", "api", "auth", "www", "static"])
def test_reserved_names_cannot_be_taken(raw: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        new_username(raw)


@pytest.mark.parametrize("raw", ["ADMIN", "Api", "aUtH", "WWW", "Static", "sTATIc"])
def test_reserved_names_are_refused_in_any_case(raw: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        new_username(raw)


@pytest.mark.parametrize("raw", [" ADMIN ", "\tapi\n", "  Www  "])
def test_reserved_check_applies_to_the_normalised_name(raw: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        new_username(raw)


@pytest.mark.parametrize("raw", ["me", "ME", "mE", " Me "])
def test_me_can_never_be_taken(raw: str) -> None:
    # "me" aliases the caller's own profile in list requests (and is shorter than the rule
    # allows): whatever the reason given, nobody may hold it.
    assert "me" in RESERVED
    with pytest.raises(ValueError, match=r".+"):
        new_username(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ada", "ada"),
        ("  Grace.Hopper ", "grace.hopper"),
        ("admin_ada", "admin_ada"),
        ("mee", "mee"),
    ],
)
def test_names_that_are_not_reserved_are_taken_in_lower_case(raw: str, expected: str) -> None:
    assert expected not in RESERVED
    assert new_username(raw) == expected


def test_names_breaking_the_rule_are_refused_for_the_rule_not_as_reserved() -> None:
    with pytest.raises(ValueError, match="a-z") as caught:
        new_username("ad min")
    assert "reserved" not in str(caught.value)


def test_existing_reserved_names_can_still_be_looked_up() -> None:
    # Reading a profile only normalises: a name reserved after someone took it stays reachable.
    assert normalise_username("Admin") == "admin"


def test_every_reserved_name_is_stored_in_lower_case() -> None:
    assert all(name == name.lower() for name in RESERVED)
