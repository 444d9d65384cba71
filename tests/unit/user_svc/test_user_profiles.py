"""Profile rules: username shape, update masks, the limits on each editable field, renames."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import NoReturn, cast

import pytest

from meshkit.errors import InvalidArgument, NotFound
from meshkit.reasons import Reason
from user_svc.graph import GraphStore, SocialService
from user_svc.profiles import (
    BIO_MAX_CHARS,
    DISPLAY_NAME_MAX_CHARS,
    PRONOUNS_MAX_CHARS,
    WEBSITE_MAX_CHARS,
    Profile,
    ProfileChanges,
    ProfileInput,
    ProfileService,
    changes_from_mask,
    normalise_username,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
COOLDOWN = 30 * 24 * 3600.0


def fields(error: InvalidArgument) -> list[str]:
    """The field paths an InvalidArgument names."""
    return [violation.field for violation in error.violations]


def refused(paths: list[str], values: ProfileInput) -> list[str]:
    """Apply a mask expected to be refused and return the fields the error names."""
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(paths, values)
    assert caught.value.reason is Reason.INVALID_FIELD
    return fields(caught.value)


def website(raw: str) -> str | None:
    """The website a masked update of raw would store."""
    return changes_from_mask(["website"], ProfileInput(website=raw)).website


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("ada", "ada"), ("Ada_Lovelace", "ada_lovelace"), ("A.B", "a.b"), ("x" * 30, "x" * 30)],
)
def test_usernames_are_compared_in_lower_case(raw: str, expected: str) -> None:
    assert normalise_username(raw) == expected


@pytest.mark.parametrize("raw", [" ada", "ADA\n", "\tAda "])
def test_surrounding_whitespace_of_usernames_is_ignored(raw: str) -> None:
    assert normalise_username(raw) == "ada"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ab",
        "x" * 31,
        "ada lovelace",
        "ada!",
        "../etc",
        "ada\nlovelace",
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
    changes = changes_from_mask([], ProfileInput(display_name="Ada", bio="Counting machines."))
    assert changes == ProfileChanges(display_name="Ada", bio="Counting machines.")


def test_empty_mask_keeps_the_fields_left_empty() -> None:
    # What REST sends for PATCH {"bio": "new"}: profile is set, display_name is empty.
    assert changes_from_mask([], ProfileInput(bio="new")) == ProfileChanges(bio="new")
    assert changes_from_mask([], ProfileInput(display_name="Ada")) == ProfileChanges(
        display_name="Ada"
    )
    assert changes_from_mask([], ProfileInput()) == ProfileChanges()


def test_mask_limits_the_change_to_the_named_fields() -> None:
    values = ProfileInput(display_name="ignored", bio="hi")
    assert changes_from_mask(["bio"], values) == ProfileChanges(bio="hi")
    values = ProfileInput(display_name="Ada", bio="x")
    assert changes_from_mask(["display_name"], values) == ProfileChanges(display_name="Ada")


def test_fields_outside_the_mask_are_not_validated() -> None:
    values = ProfileInput(
        display_name="\x00" * 500, bio="fine", website="ftp://x", pronouns="\x07" * 99
    )
    assert changes_from_mask(["bio"], values) == ProfileChanges(bio="fine")


@pytest.mark.parametrize(
    "paths",
    [["username"], ["avatar_image_id"], ["profile.bio"], ["bio", "account_id"], ["*"], [""]],
)
def test_other_mask_paths_are_invalid_on_field_update_mask(paths: list[str]) -> None:
    assert set(refused(paths, ProfileInput(display_name="Ada"))) == {"update_mask"}


@pytest.mark.parametrize("paths", [["email"], ["follower_count"], ["private", "post_count"]])
def test_output_only_fields_cannot_be_masked(paths: list[str]) -> None:
    assert set(refused(paths, ProfileInput(private=True))) == {"update_mask"}


def test_errors_name_few_unknown_mask_paths_and_shortened() -> None:
    # Found by fuzzing: every path in full made the error as large as a 256 KiB request.
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(["0" * 200_000, *map(str, range(10_000))], ProfileInput())
    assert len(caught.value.violations) == 4
    assert "(200000 characters)" in caught.value.message
    assert "and 9998 more unsupported paths" in caught.value.message
    assert len(caught.value.message) < 1_000


def test_surrounding_whitespace_is_trimmed() -> None:
    values = ProfileInput(
        display_name="  Ada \t", bio="\n  line one\nline two \n", pronouns=" she/her  "
    )
    assert changes_from_mask([], values) == ProfileChanges(
        display_name="Ada", bio="line one\nline two", pronouns="she/her"
    )


def test_empty_values_named_in_the_mask_clear_the_fields() -> None:
    paths = ["display_name", "bio", "website", "pronouns"]
    assert changes_from_mask(paths, ProfileInput(display_name="   ", website="  ")) == (
        ProfileChanges(display_name="", bio="", website="", pronouns="")
    )


def test_hugely_oversized_values_are_refused_before_any_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_cleaning(value: str) -> str:
        raise AssertionError("cleaned an oversized value")

    monkeypatch.setattr("user_svc.profiles._clean", no_cleaning)
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask([], ProfileInput(display_name="\x00" * 1_000_000, bio="\x07" * 1_000_000))
    assert fields(caught.value) == ["profile.display_name", "profile.bio"]
    assert all("at most" in violation.description for violation in caught.value.violations)


def test_values_trimmed_down_to_the_limit_are_accepted() -> None:
    changes = changes_from_mask(["bio"], ProfileInput(bio=" " * 600 + "b" * BIO_MAX_CHARS))
    assert changes.bio == "b" * BIO_MAX_CHARS


def test_length_limits_are_inclusive() -> None:
    values = ProfileInput(
        display_name="d" * DISPLAY_NAME_MAX_CHARS,
        bio="b" * BIO_MAX_CHARS,
        pronouns="p" * PRONOUNS_MAX_CHARS,
    )
    changes = changes_from_mask([], values)
    assert changes.display_name is not None
    assert len(changes.display_name) == DISPLAY_NAME_MAX_CHARS
    assert changes.bio == "b" * BIO_MAX_CHARS
    assert changes.pronouns == "p" * PRONOUNS_MAX_CHARS


def test_too_long_display_name_names_its_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(["display_name"], ProfileInput(display_name="d" * 65))
    assert fields(caught.value) == ["profile.display_name"]
    assert "64" in caught.value.violations[0].description


def test_too_long_bio_names_its_field() -> None:
    assert refused([], ProfileInput(display_name="Ada", bio="b" * 301)) == ["profile.bio"]


def test_limits_count_characters_not_bytes_and_compose_accents() -> None:
    # "e" + combining acute is one visible character; NFC stores it as one code point.
    values = ProfileInput(display_name="e\u0301" * 64, bio="😀" * 300, pronouns="é" * 30)
    changes = changes_from_mask([], values)
    assert changes.display_name == "\u00e9" * 64
    assert changes.pronouns == "\u00e9" * 30


def test_both_violations_are_reported_together() -> None:
    values = ProfileInput(display_name="d" * 65, bio="b" * 301, website="ftp://example.com")
    assert refused([], values) == ["profile.display_name", "profile.bio", "profile.website"]


@pytest.mark.parametrize(
    "display_name",
    ["Ada\nLovelace", "Ada\x00", "Ada\x1b[31m", "Ada\x7f", "Ada\u202eecalevol", "a\u2028b"],
)
def test_control_characters_are_refused_in_display_names(display_name: str) -> None:
    values = ProfileInput(display_name=display_name)
    assert refused(["display_name"], values) == ["profile.display_name"]


def test_bio_keeps_newlines_and_normalises_crlf() -> None:
    changes = changes_from_mask(["bio"], ProfileInput(bio="one\r\ntwo\rthree\nfour"))
    assert changes.bio == "one\ntwo\nthree\nfour"


@pytest.mark.parametrize("bio", ["tab\there", "bell\x07", "nul\x00", "rtl\u202e"])
def test_other_control_characters_are_refused_in_bios(bio: str) -> None:
    assert refused(["bio"], ProfileInput(bio=bio)) == ["profile.bio"]


def test_emoji_sequences_are_welcome() -> None:
    family = "\U0001f469\u200d\U0001f469\u200d\U0001f467"  # joined with zero-width joiners
    changes = changes_from_mask([], ProfileInput(display_name=family, bio=family))
    assert changes.display_name == family


# --- website, pronouns and private -------------------------------------------------------------


def test_new_fields_can_be_named_in_the_mask() -> None:
    values = ProfileInput(
        display_name="not applied", website="https://ada.example", pronouns="she/her", private=True
    )
    assert changes_from_mask(["website", "pronouns", "private"], values) == ProfileChanges(
        website="https://ada.example", pronouns="she/her", private=True
    )


def test_empty_mask_applies_set_website_and_pronouns() -> None:
    values = ProfileInput(website="ada.example", pronouns="they/them")
    assert changes_from_mask([], values) == ProfileChanges(
        website="https://ada.example", pronouns="they/them"
    )


def test_empty_mask_makes_an_account_private() -> None:
    assert changes_from_mask([], ProfileInput(private=True)) == ProfileChanges(private=True)


def test_empty_mask_never_makes_an_account_public() -> None:
    # private=false is what every REST PATCH carries when it leaves the field out.
    assert changes_from_mask([], ProfileInput(bio="hi")) == ProfileChanges(bio="hi")
    assert changes_from_mask([], ProfileInput(private=False)).private is None


def test_naming_private_in_the_mask_makes_an_account_public() -> None:
    assert changes_from_mask(["private"], ProfileInput(private=False)) == ProfileChanges(
        private=False
    )


def test_empty_website_and_pronouns_left_out_of_the_mask_keep_the_stored_ones() -> None:
    changes = changes_from_mask([], ProfileInput(display_name="Ada", website="", pronouns=""))
    assert changes == ProfileChanges(display_name="Ada")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "https://example.com"),
        ("  ada.example/about ", "https://ada.example/about"),
        ("http://example.com", "http://example.com"),
        ("https://example.com/a?b=c#d", "https://example.com/a?b=c#d"),
        ("localhost:8080/me", "https://localhost:8080/me"),
    ],
)
def test_websites_are_http_urls_and_bare_hosts_get_https(raw: str, expected: str) -> None:
    assert website(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "ftp://example.com",
        "javascript:alert(1)",
        "javascript://example.com/%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "https://",
        "https://exa mple.com",
    ],
)
def test_websites_other_than_http_and_https_are_refused(raw: str) -> None:
    assert refused(["website"], ProfileInput(website=raw)) == ["profile.website"]


@pytest.mark.parametrize(
    "raw",
    ["https://user:secret@example.com", "https://bank.example@evil.example", "ada@example.com"],
)
def test_websites_with_credentials_are_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(["website"], ProfileInput(website=raw))
    assert fields(caught.value) == ["profile.website"]
    assert "user name or password" in caught.value.violations[0].description


@pytest.mark.parametrize(
    "raw",
    [
        "example.com/a b",
        "https://example.com/a\tb",
        "https://example.com/a\nb",
        "https://example.com/\x00",
        "https://example.com/\u00a0x",
    ],
)
def test_websites_with_spaces_or_control_characters_are_refused(raw: str) -> None:
    assert refused(["website"], ProfileInput(website=raw)) == ["profile.website"]


def test_websites_with_bidirectional_overrides_are_refused() -> None:
    # Renders as ".../exe.png": the trick display names and bios already refuse.
    website_ = "https://example.com/\u202egnp.exe"
    assert refused(["website"], ProfileInput(website=website_)) == ["profile.website"]


def test_websites_up_to_the_limit_are_accepted() -> None:
    url = "https://example.com/" + "a" * (WEBSITE_MAX_CHARS - len("https://example.com/"))
    assert website(url) == url


def test_too_long_websites_are_refused() -> None:
    url = "https://example.com/" + "a" * (WEBSITE_MAX_CHARS + 1 - len("https://example.com/"))
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(["website"], ProfileInput(website=url))
    assert fields(caught.value) == ["profile.website"]
    assert str(WEBSITE_MAX_CHARS) in caught.value.violations[0].description


def test_the_limit_counts_the_https_a_bare_host_gets() -> None:
    host = "a" * (WEBSITE_MAX_CHARS - 3) + ".io"
    assert len(host) == WEBSITE_MAX_CHARS
    assert refused(["website"], ProfileInput(website=host)) == ["profile.website"]


def test_huge_websites_are_refused_as_too_long() -> None:
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask([], ProfileInput(website="https://example.com/" + "a" * 1_000_000))
    assert "at most" in caught.value.violations[0].description


def test_too_long_pronouns_are_refused() -> None:
    values = ProfileInput(pronouns="p" * (PRONOUNS_MAX_CHARS + 1))
    with pytest.raises(InvalidArgument) as caught:
        changes_from_mask(["pronouns"], values)
    assert fields(caught.value) == ["profile.pronouns"]
    assert "30" in caught.value.violations[0].description


@pytest.mark.parametrize("pronouns", ["she\nher", "they\x00", "he\x1b[1m", "\u202eeh", "a\u2029b"])
def test_control_characters_are_refused_in_pronouns(pronouns: str) -> None:
    assert refused([], ProfileInput(pronouns=pronouns)) == ["profile.pronouns"]


# --- the service ---------------------------------------------------------------------------------


class FakeStore:
    """In-memory ProfileStore."""

    def __init__(self, *profiles: Profile) -> None:
        self.by_id = {profile.account_id: profile for profile in profiles}
        self.updates: list[tuple[str, ProfileChanges]] = []
        self.renames: list[tuple[str, str, float]] = []
        self.lookups: list[str] = []

    async def get_by_account_id(self, account_id: str) -> Profile:
        """The profile of account_id, or NotFound."""
        try:
            return self.by_id[account_id]
        except KeyError:
            raise NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND) from None

    async def get_by_username(self, username: str) -> Profile:
        """The profile named username exactly, or NotFound."""
        self.lookups.append(username)
        for profile in self.by_id.values():
            if profile.username == username:
                return profile
        raise NotFound(message="profile not found", reason=Reason.PROFILE_NOT_FOUND)

    async def update(self, account_id: str, changes: ProfileChanges) -> Profile:
        """Apply the fields changes sets."""
        self.updates.append((account_id, changes))
        profile = await self.get_by_account_id(account_id)
        new_values = {
            name: value
            for name in ("display_name", "bio", "website", "pronouns", "private")
            if (value := getattr(changes, name)) is not None
        }
        profile = replace(profile, **new_values)
        self.by_id[account_id] = profile
        return profile

    async def change_username(
        self, account_id: str, username: str, *, cooldown_seconds: float
    ) -> Profile:
        """Rename an account, recording the cooldown it was asked to respect."""
        self.renames.append((account_id, username, cooldown_seconds))
        profile = replace(await self.get_by_account_id(account_id), username=username)
        self.by_id[account_id] = profile
        return profile


class UntouchedGraph:
    """A graph store that fails any test using it: signed-out profile reads need no graph."""

    def __getattr__(self, name: str) -> NoReturn:
        """Fail on any use."""
        raise AssertionError(f"the graph store was used ({name})")


def social(store: FakeStore) -> SocialService:
    """The profile page service over store, with no graph behind it."""
    return SocialService(store, cast(GraphStore, UntouchedGraph()))


def service(store: FakeStore) -> ProfileService:
    """The profile service over store with a month-long username cooldown."""
    return ProfileService(store, username_cooldown_seconds=COOLDOWN)


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
    pages = social(FakeStore(ADA))
    assert (await pages.profile_page("ADA", None)).profile == ADA
    with pytest.raises(NotFound):
        await pages.profile_page("nobody", None)


async def test_service_rejects_malformed_usernames_before_the_store() -> None:
    store = FakeStore(ADA)
    with pytest.raises(InvalidArgument) as caught:
        await social(store).profile_page("<script>", None)
    assert fields(caught.value) == ["username"]
    assert store.lookups == []


async def test_service_updates_only_what_the_mask_names() -> None:
    store = FakeStore(ADA)
    updated = await service(store).update_my_profile(
        "a1", ["bio"], ProfileInput(display_name="not applied", bio=" Counting machines. ")
    )
    assert updated.bio == "Counting machines."
    assert updated.display_name == ""
    assert store.updates == [("a1", ProfileChanges(bio="Counting machines."))]


async def test_service_without_a_mask_keeps_what_the_request_leaves_empty() -> None:
    store = FakeStore(replace(ADA, display_name="Ada Lovelace", website="https://ada.example"))
    updated = await service(store).update_my_profile("a1", [], ProfileInput(bio="new"))
    assert (updated.display_name, updated.bio) == ("Ada Lovelace", "new")
    assert updated.website == "https://ada.example"


async def test_service_does_not_call_the_store_for_invalid_updates() -> None:
    store = FakeStore(ADA)
    with pytest.raises(InvalidArgument):
        await service(store).update_my_profile("a1", ["username"], ProfileInput())
    with pytest.raises(InvalidArgument):
        await service(store).update_my_profile("a1", [], ProfileInput(website="ftp://x.example"))
    assert store.updates == []


async def test_service_makes_an_account_private_and_public_again() -> None:
    store = FakeStore(ADA)
    private = await service(store).update_my_profile("a1", [], ProfileInput(private=True))
    assert private.private
    still = await service(store).update_my_profile("a1", [], ProfileInput(bio="hi"))
    assert still.private
    public = await service(store).update_my_profile("a1", ["private"], ProfileInput())
    assert not public.private


async def test_change_username_takes_the_lower_case_name_with_the_cooldown() -> None:
    store = FakeStore(ADA)
    renamed = await service(store).change_username("a1", "  Ada_Lovelace ")
    assert renamed.username == "ada_lovelace"
    assert store.renames == [("a1", "ada_lovelace", COOLDOWN)]


async def test_change_username_passes_the_configured_cooldown() -> None:
    store = FakeStore(ADA)
    await ProfileService(store, username_cooldown_seconds=0.0).change_username("a1", "countess")
    assert store.renames == [("a1", "countess", 0.0)]


@pytest.mark.parametrize("name", ["admin", "API", " Auth ", "www", "Static", "me", "ME"])
async def test_change_username_refuses_reserved_names_on_field_username(name: str) -> None:
    store = FakeStore(ADA)
    with pytest.raises(InvalidArgument) as caught:
        await service(store).change_username("a1", name)
    assert fields(caught.value) == ["username"]
    assert store.renames == []


@pytest.mark.parametrize("name", ["", "ab", "ada lovelace", "ada..l", ".ada", "adä", "x" * 31])
async def test_change_username_refuses_bad_names_before_the_store(name: str) -> None:
    store = FakeStore(ADA)
    with pytest.raises(InvalidArgument) as caught:
        await service(store).change_username("a1", name)
    assert fields(caught.value) == ["username"]
    assert store.renames == []
