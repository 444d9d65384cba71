"""Profile rules: username shape, update masks and the limits on display name and bio."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from meshkit.errors import InvalidArgument, NotFound
from meshkit.reasons import Reason
from user_svc.profiles import (
    BIO_MAX_CHARS,
    DISPLAY_NAME_MAX_CHARS,
    Profile,
    ProfileChanges,
    ProfileService,
    changes_from_mask,
    normalise_username,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def fields(error: InvalidArgument) -> list[str]:
    """The field paths an InvalidArgument names."""
    return [violation.field for violation in error.violations]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("ada", "ada"), ("Ada_Lovelace", "ada_lovelace"), ("A.B", "a.b"), ("x" * 30, "x" * 30)],
)
def test_usernames_are_compared_in_lower_case(raw: str, expected: str) -> None:
    assert normalise_username(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ab",
        "x" * 31,
        "ada lovelace",
        "ada!",
        "../etc",
        "ada\n",
        "\u212aate",  # Kelvin sign: lower() would turn it into an ASCII "k"
        "adä",
    ],
)
def test_malformed_usernames_are_invalid_on_field_username(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalise_username(raw)
    assert fields(caught.value) == ["username"]
    assert caught.value.reason is Reason.INVALID_FIELD


def test_empty_mask_updates_the_fields_that_are_set() -> None:
    changes = changes_from_mask([], display_name="Ada", bio="Counting machines.")
    assert changes == ProfileChanges(display_name="Ada", bio="Counting machines.")


def test_empty_mask_keeps_the_fields_left_empty() -> None:
    # What REST sends for PATCH {"bio": "new"}: profile is set, display_name is empty.
    assert changes_from_mask([], display_name="", bio="new") == ProfileChanges(bio="new")
    assert changes_from_mask([], display_name="Ada", bio="") == ProfileChanges(display_name="Ada")
    assert changes_from_mask([], display_name="", bio="") == ProfileChanges()


def test_mask_limits_the_change_to_the_named_fields() -> None:
    assert changes_from_mask(["bio"], display_name="ignored", bio="hi") == ProfileChanges(bio="hi")
    assert changes_from_mask(["display_name"], display_name="Ada", bio="x") == ProfileChanges(
        display_name="Ada"
    )


def test_fields_outside_the_mask_are_not_validated() -> None:
    changes = changes_from_mask(["bio"], display_name="\x00" * 500, bio="fine")
    assert changes == ProfileChanges(bio="fine")


@pytest.mark.parametrize(
    "paths",
    [["username"], ["avatar_image_id"], ["profile.bio"], ["bio", "account_id"], ["*"], [""]],
)
def test_other_mask_paths_are_invalid_on_field_update_mask(paths: list[str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(paths, display_name="Ada", bio="")
    assert set(fields(caught.value)) == {"update_mask"}


def test_errors_name_few_unknown_mask_paths_and_shortened() -> None:
    # Found by fuzzing: every path in full made the error as large as a 256 KiB request.
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(["0" * 200_000, *map(str, range(10_000))], display_name="", bio="")
    assert len(caught.value.violations) == 4
    assert "(200000 characters)" in caught.value.message
    assert "and 9998 more unsupported paths" in caught.value.message
    assert len(caught.value.message) < 1_000


def test_surrounding_whitespace_is_trimmed() -> None:
    changes = changes_from_mask([], display_name="  Ada \t", bio="\n  line one\nline two \n")
    assert changes == ProfileChanges(display_name="Ada", bio="line one\nline two")


def test_empty_values_named_in_the_mask_clear_the_fields() -> None:
    assert changes_from_mask(["display_name", "bio"], display_name="   ", bio="") == (
        ProfileChanges(display_name="", bio="")
    )


def test_hugely_oversized_values_are_refused_before_any_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_cleaning(value: str) -> str:
        raise AssertionError("cleaned an oversized value")

    monkeypatch.setattr("user_svc.profiles._clean", no_cleaning)
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask([], display_name="\x00" * 1_000_000, bio="\x07" * 1_000_000)
    assert fields(caught.value) == ["profile.display_name", "profile.bio"]
    assert all("at most" in violation.description for violation in caught.value.violations)


def test_values_trimmed_down_to_the_limit_are_accepted() -> None:
    changes = changes_from_mask(["bio"], display_name="", bio=" " * 600 + "b" * BIO_MAX_CHARS)
    assert changes.bio == "b" * BIO_MAX_CHARS


def test_length_limits_are_inclusive() -> None:
    changes = changes_from_mask(
        [], display_name="d" * DISPLAY_NAME_MAX_CHARS, bio="b" * BIO_MAX_CHARS
    )
    assert changes.display_name is not None
    assert len(changes.display_name) == DISPLAY_NAME_MAX_CHARS


def test_too_long_display_name_names_its_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(["display_name"], display_name="d" * 65, bio="")
    assert fields(caught.value) == ["profile.display_name"]
    assert "64" in caught.value.violations[0].description


def test_too_long_bio_names_its_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask([], display_name="Ada", bio="b" * 301)
    assert fields(caught.value) == ["profile.bio"]


def test_limits_count_characters_not_bytes_and_compose_accents() -> None:
    # "e" + combining acute is one visible character; NFC stores it as one code point.
    changes = changes_from_mask([], display_name="e\u0301" * 64, bio="😀" * 300)
    assert changes.display_name == "\u00e9" * 64


def test_both_violations_are_reported_together() -> None:
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask([], display_name="d" * 65, bio="b" * 301)
    assert fields(caught.value) == ["profile.display_name", "profile.bio"]


@pytest.mark.parametrize(
    "display_name",
    ["Ada\nLovelace", "Ada\x00", "Ada\x1b[31m", "Ada\x7f", "Ada\u202eecalevol", "a\u2028b"],
)
def test_control_characters_are_refused_in_display_names(display_name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(["display_name"], display_name=display_name, bio="")
    assert fields(caught.value) == ["profile.display_name"]


def test_bio_keeps_newlines_and_normalises_crlf() -> None:
    changes = changes_from_mask(["bio"], display_name="", bio="one\r\ntwo\rthree\nfour")
    assert changes.bio == "one\ntwo\nthree\nfour"


@pytest.mark.parametrize("bio", ["tab\there", "bell\x07", "nul\x00", "rtl\u202e"])
def test_other_control_characters_are_refused_in_bios(bio: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(["bio"], display_name="", bio=bio)
    assert fields(caught.value) == ["profile.bio"]


def test_emoji_sequences_are_welcome() -> None:
    family = "\U0001f469\u200d\U0001f469\u200d\U0001f467"  # joined with zero-width joiners
    assert changes_from_mask([], display_name=family, bio=family).display_name == family


class FakeStore:
    """In-memory ProfileStore."""

    def __init__(self, *profiles: Profile) -> None:
        self.by_id = {profile.account_id: profile for profile in profiles}
        self.updates: list[tuple[str, ProfileChanges]] = []

    async def get_by_account_id(self, account_id: str) -> Profile:
        try:
            return self.by_id[account_id]
        except KeyError:
            raise NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND) from None

    async def get_by_username(self, username: str) -> Profile:
        for profile in self.by_id.values():
            if profile.username == username:
                return profile
        raise NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND)

    async def update(self, account_id: str, changes: ProfileChanges) -> Profile:
        self.updates.append((account_id, changes))
        profile = await self.get_by_account_id(account_id)
        if changes.display_name is not None:
            profile = replace(profile, display_name=changes.display_name)
        if changes.bio is not None:
            profile = replace(profile, bio=changes.bio)
        self.by_id[account_id] = profile
        return profile


ADA = Profile(
    account_id="a1",
    username="ada",
    display_name="",
    bio="",
    avatar_image_id="",
    create_time=NOW,
    update_time=NOW,
)


async def test_service_reads_profiles_by_case_insensitive_username() -> None:
    service = ProfileService(FakeStore(ADA))
    assert await service.profile_by_username("ADA") == ADA
    with pytest.raises(NotFound):
        await service.profile_by_username("nobody")


async def test_service_rejects_malformed_usernames_before_the_store() -> None:
    with pytest.raises(InvalidArgument):
        await ProfileService(FakeStore(ADA)).profile_by_username("<script>")


async def test_service_updates_only_what_the_mask_names() -> None:
    store = FakeStore(ADA)
    updated = await ProfileService(store).update_my_profile(
        "a1", ["bio"], display_name="not applied", bio=" Counting machines. "
    )
    assert updated.bio == "Counting machines."
    assert updated.display_name == ""
    assert store.updates == [("a1", ProfileChanges(bio="Counting machines."))]


async def test_service_without_a_mask_keeps_what_the_request_leaves_empty() -> None:
    store = FakeStore(replace(ADA, display_name="Ada Lovelace"))
    updated = await ProfileService(store).update_my_profile("a1", [], display_name="", bio="new")
    assert (updated.display_name, updated.bio) == ("Ada Lovelace", "new")


async def test_service_does_not_call_the_store_for_invalid_updates() -> None:
    store = FakeStore(ADA)
    with pytest.raises(InvalidArgument):
        await ProfileService(store).update_my_profile("a1", ["username"], display_name="", bio="")
    assert store.updates == []
