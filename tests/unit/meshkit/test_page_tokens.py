"""Opaque page tokens: what a listing hands out comes back intact, anything else is refused."""

from __future__ import annotations

import base64
import json

import pytest

from meshkit.errors import InvalidArgument
from meshkit.page_tokens import (
    MAX_TOKEN_CHARS,
    Part,
    decode_page_token,
    encode_page_token,
    page_size,
    position_part,
    text_part,
)
from meshkit.reasons import Reason

SCOPE = "followers:8b5a0c1e"


def raw_token(value: object) -> str:
    """A token built by hand from any JSON value, the way a client could forge one."""
    text = json.dumps(value, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def refused_field(token: str, scope: str = SCOPE) -> str:
    """Decode a token expected to be refused and return the field the error names."""
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, scope)
    assert caught.value.reason is Reason.INVALID_FIELD
    [violation] = caught.value.violations
    return violation.field


@pytest.mark.parametrize(
    "parts",
    [(), (1,), (41, "ada"), (2**63 - 1, "", "grace.hopper"), ("ünïcödé 😀",), (0, -5)],
)
def test_tokens_round_trip(parts: tuple[Part, ...]) -> None:
    token = encode_page_token(SCOPE, *parts)
    assert decode_page_token(token, SCOPE) == list(parts)


def test_tokens_are_url_safe_and_opaque() -> None:
    token = encode_page_token("search:a/b+c?", 7, "x" * 40)
    assert token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_token_of_another_scope_is_refused() -> None:
    token = encode_page_token("followers:account-a", 10)
    assert refused_field(token, "followers:account-b") == "page_token"
    assert refused_field(token, "following:account-a") == "page_token"


def test_the_field_named_can_be_chosen() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token("garbage!", SCOPE, field="cursor")
    assert [v.field for v in caught.value.violations] == ["cursor"]


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "a",  # not a whole base64 quantum
        "////",  # decodes to bytes that are not ASCII
        base64.urlsafe_b64encode(b"not json").decode(),
        raw_token({"scope": SCOPE}),
        raw_token([]),
        raw_token(SCOPE),
        raw_token([None, 1]),
        raw_token([[SCOPE], 1]),
    ],
)
def test_garbage_is_refused_on_field_page_token(token: str) -> None:
    assert refused_field(token) == "page_token"


def test_tokens_longer_than_the_limit_are_refused_before_decoding() -> None:
    long_text = "x" * MAX_TOKEN_CHARS
    fits = encode_page_token(SCOPE, long_text[: MAX_TOKEN_CHARS // 2])
    assert len(fits) <= MAX_TOKEN_CHARS
    assert decode_page_token(fits, SCOPE) == [long_text[: MAX_TOKEN_CHARS // 2]]
    oversized = encode_page_token(SCOPE, long_text)
    assert len(oversized) > MAX_TOKEN_CHARS
    assert refused_field(oversized) == "page_token"


def test_a_tampered_token_is_refused() -> None:
    token = encode_page_token(SCOPE, 123)
    # Flip one character of the encoded scope: it no longer names this listing.
    tampered = ("B" if token[2] != "B" else "C").join((token[:2], token[3:]))
    assert tampered != token
    assert refused_field(tampered) == "page_token"


@pytest.mark.parametrize(
    "parts", [[True], [False], [1, True], [1.5], [None], [[1]], [{"position": 1}], ["a", 1e3]]
)
def test_parts_other_than_strings_and_integers_are_refused(parts: list[object]) -> None:
    assert refused_field(raw_token([SCOPE, *parts])) == "page_token"


@pytest.mark.parametrize("value", [1, 2, 10**12, 2**63 - 1])
def test_positions_are_positive_64_bit_integers(value: int) -> None:
    parts = decode_page_token(encode_page_token(SCOPE, value), SCOPE)
    assert position_part(parts, 0) == value


@pytest.mark.parametrize("value", [0, -1, -(2**63), 2**63, 2**64])
def test_positions_out_of_range_are_refused(value: int) -> None:
    parts = decode_page_token(encode_page_token(SCOPE, value), SCOPE)
    with pytest.raises(InvalidArgument) as caught:
        position_part(parts, 0)
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_a_missing_or_textual_position_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        position_part([], 0)
    with pytest.raises(InvalidArgument):
        position_part(["12"], 0)
    with pytest.raises(InvalidArgument):
        position_part([12], 1)


def test_text_parts_must_be_strings() -> None:
    assert text_part([3, "ada"], 1) == "ada"
    assert text_part([""], 0) == ""
    with pytest.raises(InvalidArgument) as caught:
        text_part([3, "ada"], 0)
    assert [v.field for v in caught.value.violations] == ["page_token"]
    with pytest.raises(InvalidArgument):
        text_part([3], 1)


@pytest.mark.parametrize(
    ("requested", "expected"), [(0, 50), (1, 1), (50, 50), (99, 99), (100, 100), (101, 100)]
)
def test_page_size_defaults_and_clamps(requested: int, expected: int) -> None:
    assert page_size(requested, default=50, maximum=100) == expected


def test_huge_page_sizes_are_clamped_to_the_maximum() -> None:
    assert page_size(2**31 - 1, default=20, maximum=100) == 100


@pytest.mark.parametrize("requested", [-1, -100, -(2**31)])
def test_negative_page_sizes_are_refused_on_field_page_size(requested: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_size(requested, default=50, maximum=100)
    assert [v.field for v in caught.value.violations] == ["page_size"]
