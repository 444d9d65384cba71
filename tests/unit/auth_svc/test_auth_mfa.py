"""TOTP codes, recovery codes, sealed secrets and the caller's own MFA settings (enrol, confirm,
turn off, new recovery codes) over an in-memory security store, on a clock the tests move."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from auth_svc.accounts import Account, Device, MailKind
from auth_svc.mfa import (
    RECOVERY_CODE_COUNT,
    ChallengeBox,
    LoginChallenge,
    MfaSettings,
    SecondFactor,
    SecretBox,
    SecretSealError,
    code_at,
    code_fields,
    current_step,
    new_recovery_codes,
    new_secret,
    normal_code,
    qr_forms,
    recovery_code_hash,
)
from auth_svc.security_store import EventKind, MfaState, UsedCode
from meshkit.access_tokens import Principal
from meshkit.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from meshkit.reasons import Reason
from tests.unit.auth_svc.memory_stores import (
    PEPPER,
    FakeClock,
    MemoryAccountStore,
    MemoryMailer,
    MemorySecurityStore,
    settings_over,
)

# A fixed secret and time: every code below is known in advance, none by chance equal to another.
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_800_000_010.0
HERE = current_step(NOW)
EMAIL = "ann@example.com"
PHONE = Device(user_agent="MeshPhone/1.0", client_ip="198.51.100.7")
WINDOW = 600
ENROLLMENT_TTL = 900


def test_the_fixed_codes_are_distinct() -> None:
    codes = [code_at(SECRET, HERE + steps) for steps in range(-3, 4)]
    assert len(set(codes)) == len(codes)
    assert all(re.fullmatch(r"[0-9]{6}", code) for code in codes)


def factor(last_used_step: int = 0) -> MfaState:
    return MfaState(
        secret_sealed=SecretBox(PEPPER).seal(SECRET),
        last_used_step=last_used_step,
        enabled_at=None,
        recovery_codes_left=10,
    )


def second_factor() -> SecondFactor:
    return SecondFactor(SecretBox(PEPPER), clock=lambda: NOW)


@pytest.mark.parametrize("steps", [-1, 0, 1])
def test_a_code_of_now_or_of_the_step_either_side_is_accepted(steps: int) -> None:
    used = second_factor().check(factor(), code_at(SECRET, HERE + steps), "")
    assert used == UsedCode(step=HERE + steps)


@pytest.mark.parametrize("steps", [-3, -2, 2, 3])
def test_a_code_two_steps_away_or_more_is_refused(steps: int) -> None:
    assert second_factor().check(factor(), code_at(SECRET, HERE + steps), "") is None


def test_a_code_typed_with_a_space_or_dash_is_accepted() -> None:
    code = code_at(SECRET, HERE)
    for typed in (f"{code[:3]} {code[3:]}", f"{code[:3]}-{code[3:]}", f" {code} "):
        assert second_factor().check(factor(), typed, "") == UsedCode(step=HERE)


@pytest.mark.parametrize(("steps", "accepted"), [(-1, False), (0, False), (1, True)])
def test_after_a_step_is_used_neither_it_nor_an_older_code_works(
    steps: int, accepted: bool
) -> None:
    used = second_factor().check(factor(last_used_step=HERE), code_at(SECRET, HERE + steps), "")
    assert (used is not None) is accepted


def test_a_factor_that_is_off_accepts_no_code() -> None:
    off = MfaState(secret_sealed=None, last_used_step=0, enabled_at=None, recovery_codes_left=0)
    assert second_factor().check(off, code_at(SECRET, HERE), "") is None


@pytest.mark.parametrize(
    ("typed", "normal"),
    [
        ("123456", "123456"),
        ("123 456", "123456"),
        ("123-456", "123456"),
        (" 12 34 56 ", "123456"),
        ("12345", None),
        ("1234567", None),
        ("", None),
        ("12345a", None),
        ("\u0661\u0662\u0663\u0664\u0665\u0666", None),  # Arabic-Indic digits
        ("\uff11\uff12\uff13\uff14\uff15\uff16", None),  # full-width digits
        ("\u00b9\u00b2\u00b3456", None),  # superscripts, which str.isdigit accepts
        ("123\t456", None),
    ],
)
def test_normal_code_keeps_six_ascii_digits_only(typed: str, normal: str | None) -> None:
    assert normal_code(typed) == normal


def test_ten_unique_recovery_codes_of_unambiguous_characters() -> None:
    codes = new_recovery_codes()
    assert len(codes) == RECOVERY_CODE_COUNT == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert re.fullmatch(r"[a-z2-9]{5}-[a-z2-9]{5}", code), code
        # Nothing a reader could take for another character.
        assert not set(code) & set("01ilo"), code
    assert set(new_recovery_codes()).isdisjoint(codes)


def test_a_recovery_code_hashes_alike_whatever_its_case_dashes_or_spaces() -> None:
    code = "abcde-fghjk"
    stored = recovery_code_hash(code)
    for typed in ("ABCDE-FGHJK", "abcdefghjk", " abcde fghjk ", "AbCdE - fGhJk"):
        assert recovery_code_hash(typed) == stored
    assert recovery_code_hash("abcde-fghjm") != stored
    assert re.fullmatch(r"[0-9a-f]{64}", stored)
    assert "abcde" not in stored


@pytest.mark.parametrize(
    ("code", "recovery", "field"),
    [
        ("", "", "code"),
        ("  ", " ", "code"),
        ("123456", "abcde-fghjk", "recovery_code"),
        ("12345", "", "code"),
        ("one two", "", "code"),
    ],
)
def test_a_request_must_name_exactly_one_well_formed_factor(
    code: str, recovery: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        code_fields(code, recovery)
    assert [v.field for v in caught.value.violations] == [field]


def test_code_fields_returns_the_typed_code_or_the_recovery_code_hash() -> None:
    assert code_fields("123 456", "") == "123456"
    assert code_fields("", "ABCDE-FGHJK") == UsedCode(
        recovery_code_hash=recovery_code_hash("abcde-fghjk")
    )


def test_a_sealed_secret_opens_with_its_pepper_only() -> None:
    sealed = SecretBox(PEPPER).seal(SECRET)
    assert SECRET.encode() not in sealed
    assert SecretBox(PEPPER).open(sealed) == SECRET
    with pytest.raises(SecretSealError):
        SecretBox("another-pepper").open(sealed)
    altered = sealed[:-2] + bytes([sealed[-2] ^ 1]) + sealed[-1:]
    with pytest.raises(SecretSealError):
        SecretBox(PEPPER).open(altered)


def test_a_new_secret_is_160_random_bits_in_base32() -> None:
    secrets = {new_secret() for _ in range(5)}
    assert len(secrets) == 5
    assert all(re.fullmatch(r"[A-Z2-7]{32}", s) for s in secrets)


def test_qr_forms_give_an_svg_a_png_and_terminal_text() -> None:
    svg, png, text = qr_forms(f"otpauth://totp/meshgram:{EMAIL}?secret={SECRET}")
    assert svg.lstrip().startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(text.strip().splitlines()) > 10


# The caller's own settings.


@pytest.fixture
def ann(store: MemoryAccountStore) -> Account:
    return store.add(EMAIL, "ann")


@pytest.fixture
def settings(
    store: MemoryAccountStore, security: MemorySecurityStore, mailer: MemoryMailer
) -> MfaSettings:
    return settings_over(
        store,
        security,
        mailer,
        enrollment_ttl_seconds=ENROLLMENT_TTL,
        reauthentication_window_seconds=WINDOW,
    )


def signed_in(account: Account, clock: FakeClock, age: float = 0) -> Principal:
    """The principal of a token whose login is age seconds old."""
    return Principal(
        account_id=account.id,
        username=account.username,
        session_id="4f2c5f7e-6c53-4a39-9f0e-2a8d0f1f4b11",
        auth_time=clock() - age,
    )


def code_now(secret: str, clock: FakeClock) -> str:
    return code_at(secret, current_step(clock()))


async def enabled(settings: MfaSettings, ann: Account, clock: FakeClock) -> tuple[str, list[str]]:
    """Turn MFA on for ann: the secret and the recovery codes."""
    principal = signed_in(ann, clock)
    enrollment = await settings.start_enrollment(principal)
    codes = await settings.confirm(principal, code_now(enrollment.secret, clock), PHONE)
    return enrollment.secret, codes


async def test_an_enrolment_gives_the_secret_for_an_authenticator_app(
    settings: MfaSettings, security: MemorySecurityStore, ann: Account, clock: FakeClock
) -> None:
    enrollment = await settings.start_enrollment(signed_in(ann, clock))
    uri = urlsplit(enrollment.otpauth_uri)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == f"/meshgram:{EMAIL}"
    query = {name: values[0] for name, values in parse_qs(uri.query).items()}
    assert query["secret"] == enrollment.secret
    assert query["issuer"] == "meshgram"
    # What apps assume when the URI says nothing: SHA-1, six digits, 30-second steps.
    assert query.get("algorithm", "SHA1") == "SHA1"
    assert query.get("digits", "6") == "6"
    assert query.get("period", "30") == "30"
    assert enrollment.qr_svg.lstrip().startswith("<svg")
    assert enrollment.qr_png.startswith(b"\x89PNG")
    assert enrollment.qr_text.strip()
    assert enrollment.expires_in == ENROLLMENT_TTL
    state = await settings.state(signed_in(ann, clock))
    assert not state.enabled
    assert state.pending_secret_sealed is not None
    assert enrollment.secret.encode() not in state.pending_secret_sealed
    assert security.mails == []


@pytest.mark.parametrize("age", [WINDOW + 1, None])
async def test_every_change_needs_a_recent_login(
    settings: MfaSettings, ann: Account, clock: FakeClock, age: float | None
) -> None:
    principal = signed_in(ann, clock, WINDOW + 1)
    if age is None:
        # A token from before logins carried a time.
        principal = Principal(account_id=ann.id, username=ann.username, session_id="s")
    changes: list[Callable[[], Awaitable[object]]] = [
        lambda: settings.start_enrollment(principal),
        lambda: settings.confirm(principal, "123456", PHONE),
        lambda: settings.disable(principal, "123456", "", PHONE),
        lambda: settings.regenerate_recovery_codes(principal, PHONE),
    ]
    for change in changes:
        with pytest.raises(FailedPrecondition) as caught:
            await change()
        assert caught.value.reason == Reason.REAUTHENTICATION_REQUIRED


async def test_a_login_within_the_window_is_recent_enough(
    settings: MfaSettings, ann: Account, clock: FakeClock
) -> None:
    await settings.start_enrollment(signed_in(ann, clock, WINDOW - 1))


async def test_confirming_with_a_wrong_code_leaves_mfa_off(
    settings: MfaSettings, ann: Account, clock: FakeClock, security: MemorySecurityStore
) -> None:
    principal = signed_in(ann, clock)
    enrollment = await settings.start_enrollment(principal)
    wrong = next(
        c for c in ("000000", "111111") if c != code_at(enrollment.secret, current_step(clock()))
    )
    with pytest.raises(Unauthenticated) as caught:
        await settings.confirm(principal, wrong, PHONE)
    assert caught.value.reason == Reason.MFA_CODE_INVALID
    with pytest.raises(InvalidArgument) as malformed:
        await settings.confirm(principal, "12 34", PHONE)
    assert [v.field for v in malformed.value.violations] == ["code"]
    assert not (await settings.state(principal)).enabled
    assert security.events == []


async def test_confirming_after_the_enrolment_expired_asks_to_start_again(
    settings: MfaSettings, ann: Account, clock: FakeClock
) -> None:
    enrollment = await settings.start_enrollment(signed_in(ann, clock))
    clock.advance(ENROLLMENT_TTL + 1)
    with pytest.raises(NotFound) as caught:
        # Signed in again meanwhile: only the enrolment is too old.
        await settings.confirm(signed_in(ann, clock), code_now(enrollment.secret, clock), PHONE)
    assert caught.value.reason == Reason.MFA_ENROLLMENT_NOT_FOUND


async def test_confirming_without_an_enrolment_is_not_found(
    settings: MfaSettings, ann: Account, clock: FakeClock
) -> None:
    with pytest.raises(NotFound) as caught:
        await settings.confirm(signed_in(ann, clock), "123456", PHONE)
    assert caught.value.reason == Reason.MFA_ENROLLMENT_NOT_FOUND


async def test_only_the_latest_enrolment_can_be_confirmed(
    settings: MfaSettings, ann: Account, clock: FakeClock
) -> None:
    principal = signed_in(ann, clock)
    first = await settings.start_enrollment(principal)
    second = await settings.start_enrollment(principal)
    assert first.secret != second.secret
    with pytest.raises(Unauthenticated):
        await settings.confirm(principal, code_now(first.secret, clock), PHONE)
    await settings.confirm(principal, code_now(second.secret, clock), PHONE)


async def test_confirming_turns_mfa_on_returns_ten_codes_and_mails_the_owner(
    settings: MfaSettings,
    ann: Account,
    clock: FakeClock,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    secret, codes = await enabled(settings, ann, clock)
    assert len(codes) == len(set(codes)) == 10
    state = await settings.state(signed_in(ann, clock))
    assert state.enabled
    assert state.recovery_codes_left == 10
    assert state.pending_secret_sealed is None
    assert state.enabled_at == clock.at()
    # The confirming code is used: it cannot sign anyone in afterwards.
    assert state.last_used_step == current_step(clock())
    assert [(m.kind, m.to) for m in mailer.composed] == [(MailKind.MFA_ENABLED, EMAIL)]
    assert [m.kind for m in security.mails] == ["mfa_enabled"]
    assert mailer.wakes == 1
    [event] = security.events_of(ann.id)
    assert (event.kind, event.device, event.session_id) == (
        EventKind.MFA_ENABLED,
        PHONE,
        signed_in(ann, clock).session_id,
    )
    # Every code is one the store will take, once.
    for code in codes:
        assert (
            await security.use_mfa_code(
                ann.id, UsedCode(recovery_code_hash=recovery_code_hash(code))
            )
            >= 0
        )
    assert (await settings.state(signed_in(ann, clock))).recovery_codes_left == 0
    assert secret not in str(security.factors)


async def test_enrolling_again_while_on_is_refused(
    settings: MfaSettings, ann: Account, clock: FakeClock
) -> None:
    await enabled(settings, ann, clock)
    with pytest.raises(FailedPrecondition) as caught:
        await settings.start_enrollment(signed_in(ann, clock))
    assert caught.value.reason == Reason.MFA_ALREADY_ENABLED


async def test_turning_mfa_off_mails_the_owner_and_drops_the_codes(
    settings: MfaSettings,
    ann: Account,
    clock: FakeClock,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    _, codes = await enabled(settings, ann, clock)
    # A stolen access token alone cannot turn MFA off: it takes a current factor, and wrong
    # ones are refused without using anything up.
    for code, recovery in (("", ""), ("000000", "x"), ("000000", "")):
        with pytest.raises((InvalidArgument, Unauthenticated)):
            await settings.disable(signed_in(ann, clock), code, recovery, PHONE)
    assert (await settings.state(signed_in(ann, clock))).enabled
    await settings.disable(signed_in(ann, clock), "", codes[1], PHONE)
    state = await settings.state(signed_in(ann, clock))
    assert (state.enabled, state.recovery_codes_left) == (False, 0)
    assert mailer.kinds()[-1] is MailKind.MFA_DISABLED
    assert [m.kind for m in security.mails] == ["mfa_enabled", "mfa_disabled"]
    assert security.kinds_of(ann.id) == [EventKind.MFA_ENABLED, EventKind.MFA_DISABLED]
    with pytest.raises(FailedPrecondition) as used:
        await security.use_mfa_code(
            ann.id, UsedCode(recovery_code_hash=recovery_code_hash(codes[0]))
        )
    assert used.value.reason == Reason.MFA_NOT_ENABLED
    with pytest.raises(FailedPrecondition) as again:
        await settings.disable(signed_in(ann, clock), "", codes[2], PHONE)
    assert again.value.reason == Reason.MFA_NOT_ENABLED


async def test_new_recovery_codes_replace_the_old_ones(
    settings: MfaSettings, ann: Account, clock: FakeClock, security: MemorySecurityStore
) -> None:
    _, old = await enabled(settings, ann, clock)
    new = await settings.regenerate_recovery_codes(signed_in(ann, clock), PHONE)
    assert len(new) == 10
    assert set(new).isdisjoint(old)
    with pytest.raises(FailedPrecondition) as refused:
        await security.use_mfa_code(ann.id, UsedCode(recovery_code_hash=recovery_code_hash(old[0])))
    assert refused.value.reason == Reason.MFA_CODE_INVALID
    left = await security.use_mfa_code(
        ann.id, UsedCode(recovery_code_hash=recovery_code_hash(new[0]))
    )
    assert left == 9
    assert security.kinds_of(ann.id)[-1] is EventKind.RECOVERY_CODES_REGENERATED


async def test_new_recovery_codes_need_mfa_on(
    settings: MfaSettings, ann: Account, clock: FakeClock
) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        await settings.regenerate_recovery_codes(signed_in(ann, clock), PHONE)
    assert caught.value.reason == Reason.MFA_NOT_ENABLED


# -- Login challenges --------------------------------------------------------------------------

ANN = Account(id="7c9e6679-7425-40de-944b-e07fc1f90ae7", email="ann@example.com", username="ann")


def test_a_sealed_challenge_opens_to_what_was_sealed_until_it_expires(clock: FakeClock) -> None:
    box = ChallengeBox("challenge-pepper-" + "x" * 32, 300, clock=clock)
    issued = box.seal(LoginChallenge(account=ANN, remembered=True, secret_sealed=b"\x00sealed"))
    assert issued.expires_in == 300
    assert b"sealed" not in issued.token.encode()
    assert ANN.email not in issued.token

    opened = box.open(issued.token)
    assert opened is not None
    challenge, expires_at = opened
    assert (challenge.account, challenge.remembered) == (ANN, True)
    assert challenge.secret_sealed == b"\x00sealed"
    assert expires_at.timestamp() <= clock() + 300

    clock.advance(300)
    assert box.open(issued.token) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:],
        lambda token: token[:20] + token[40:],
        lambda token: "",
        lambda token: "not a challenge at all",
        lambda token: "é" * 40,
    ],
)
def test_an_altered_or_foreign_challenge_opens_to_nothing(
    clock: FakeClock, tamper: Callable[[str], str]
) -> None:
    box = ChallengeBox("challenge-pepper-" + "x" * 32, 300, clock=clock)
    issued = box.seal(LoginChallenge(account=ANN, remembered=False, secret_sealed=b"s"))
    assert box.open(tamper(issued.token)) is None
    other = ChallengeBox("another-pepper-" + "y" * 32, 300, clock=clock)
    assert other.open(issued.token) is None
