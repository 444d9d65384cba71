"""Password policy and peppered bcrypt hashing."""

from __future__ import annotations

import threading

import bcrypt
import pytest

from auth_svc import passwords
from auth_svc.passwords import PasswordHasher
from meshkit.errors import InvalidArgument, invalid


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    """A fast hasher (cost 4) with a test pepper."""
    return PasswordHasher("test-pepper", rounds=4)


def check_length(password: str) -> None:
    """Apply the length rules alone (the strength estimate off)."""
    violations = passwords.policy_violations(password, min_score=0)
    if violations:
        raise invalid(violations)


def test_seven_characters_are_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_length("a" * 7)
    assert [v.field for v in caught.value.violations] == ["password"]
    assert "at least 8" in caught.value.violations[0].description


def test_eight_characters_are_accepted() -> None:
    check_length("a" * 8)


def test_1024_characters_are_accepted_and_1025_refused() -> None:
    check_length("p" * 1024)
    with pytest.raises(InvalidArgument) as caught:
        check_length("p" * 1025)
    assert caught.value.violations[0].field == "password"
    assert "at most 1024" in caught.value.violations[0].description


def test_length_is_measured_after_nfkc() -> None:
    # U+FB03 (the "ffi" ligature) is one character that NFKC expands to three.
    assert passwords.policy_violations("\ufb03" * 3, min_score=0) == []
    assert passwords.policy_violations("\ufb03" * 2, min_score=0) != []


@pytest.mark.parametrize(
    "password",
    ["password123", "P@ssw0rd1", "qwertyuiop", "iloveyou2024", "aaaaaaaaaaaaaaaa", "12345678"],
)
def test_common_and_patterned_passwords_are_refused_and_told_why(password: str) -> None:
    [violation] = passwords.policy_violations(password)
    assert violation.field == "password"
    assert violation.description.startswith("is too easy to guess")
    assert len(violation.description) > len("is too easy to guess")


def test_a_password_made_of_the_accounts_own_words_is_refused() -> None:
    strong_alone = "quibbleton.xylophor"
    assert passwords.policy_violations(strong_alone) == []
    inputs = ("quibbleton.xylophor@example.com", "q_xylophor")
    assert passwords.policy_violations(strong_alone, user_inputs=inputs) != []
    assert passwords.policy_violations("xylophor2024", user_inputs=inputs) != []


@pytest.mark.parametrize(
    "password", ["correct horse battery staple", "maple quartz lantern orbit", "Tr0ub4dor&3-xk!q"]
)
def test_passphrases_pass_without_composition_rules(password: str) -> None:
    assert passwords.policy_violations(password, user_inputs=("ann@example.com", "ann")) == []


def test_the_estimate_of_a_long_password_stays_bounded() -> None:
    # zxcvbn refuses input over 72 characters; the estimate reads the first 72 of them.
    assert passwords.policy_violations("a" * 1024) != []
    assert passwords.policy_violations("maple quartz lantern orbit " * 30) == []


def test_oversized_raw_input_is_too_long_without_being_normalised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    normalised: list[str] = []
    monkeypatch.setattr(passwords, "normalise", lambda password: normalised.append(password))
    # U+FDFA expands 18-fold under NFKC: the input the raw limit exists for.
    violations = passwords.policy_violations("\ufdfa" * (passwords.MAX_RAW_LENGTH + 1), min_score=0)
    assert [v.field for v in violations] == ["password"]
    assert "at most 1024" in violations[0].description
    assert normalised == []


def test_raw_length_beyond_the_limit_may_still_normalise_within_it() -> None:
    # Decomposed accents compose under NFKC: 2048 raw characters, 1024 once normalised.
    assert passwords.policy_violations("e\u0301" * 1024, min_score=0) == []


@pytest.mark.parametrize("length", [8, 100, 1024])
async def test_hash_and_verify(hasher: PasswordHasher, length: int) -> None:
    password = ("correct horse battery staple " * 40)[:length]
    stored = await hasher.hash(password)
    assert stored.startswith("$2b$04$")
    assert password not in stored
    assert await hasher.verify(password, stored)
    assert not await hasher.verify(password[:-1] + "!", stored)


async def test_multibyte_password_beyond_72_bytes(hasher: PasswordHasher) -> None:
    password = "пароль-密码-🔐" * 10  # far more than bcrypt's 72 bytes once UTF-8 encoded
    assert len(password.encode()) > 72
    check_length(password)
    stored = await hasher.hash(password)
    assert await hasher.verify(password, stored)
    # Passwords sharing the first 72 bytes must still differ (no silent truncation).
    assert not await hasher.verify(password + "x", stored)


async def test_equivalent_unicode_forms_verify(hasher: PasswordHasher) -> None:
    composed = "caf\u00e9-latte-42"
    decomposed = "cafe\u0301-latte-42"
    stored = await hasher.hash(composed)
    assert await hasher.verify(decomposed, stored)


async def test_pepper_is_part_of_the_hash(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("a long enough password")
    other = PasswordHasher("another-pepper", rounds=4)
    assert not await other.verify("a long enough password", stored)


async def test_unknown_account_and_corrupt_hash_do_not_verify(hasher: PasswordHasher) -> None:
    assert not await hasher.verify("whatever password", None)
    assert not await hasher.verify("whatever password", "not-a-bcrypt-hash")
    assert not await hasher.verify("whatever password", "")


def test_empty_pepper_is_refused() -> None:
    with pytest.raises(ValueError, match="pepper"):
        PasswordHasher("", rounds=4)


async def test_oversized_password_costs_a_dummy_check_and_never_matches(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    oversized = "p" * (passwords.MAX_RAW_LENGTH + 1)
    stored = await hasher.hash(oversized)  # hash() leaves the policy to its caller
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(passwords.bcrypt, "checkpw", spy)
    assert not await hasher.verify(oversized, stored)
    assert checked == [hasher._dummy_hash]


async def test_normalising_runs_off_the_event_loop(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real_normalise = passwords.normalise

    def spy(password: str) -> str:
        threads.append(threading.current_thread())
        return real_normalise(password)

    monkeypatch.setattr(passwords, "normalise", spy)
    stored = await hasher.hash("a long enough password")
    assert await hasher.verify("a long enough password", stored)
    assert not await hasher.verify("a long enough password", None)
    assert len(threads) == 3
    assert threading.main_thread() not in threads
