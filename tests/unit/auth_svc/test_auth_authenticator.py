"""The AuthService flows against an in-memory account store (no network, no database)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_svc.accounts import Account, Device, MailKind
from auth_svc.activity import SecurityLog
from auth_svc.authenticator import (
    INVALID_CREDENTIALS_MESSAGE,
    Authenticator,
    LoginGuards,
    MfaRequired,
    SessionPolicy,
    TokenPair,
)
from auth_svc.captcha import CaptchaVerifier
from auth_svc.login_defence import DefencePolicy
from auth_svc.mail.messages import MailRenderer
from auth_svc.mfa import code_at, current_step
from auth_svc.passwords import PasswordHasher
from auth_svc.security_store import EventKind
from auth_svc.tokens import AccessTokenSigner, successor_refresh_token
from auth_svc.verification import EmailVerification
from meshkit.access_tokens import Principal
from meshkit.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from meshkit.reasons import Reason
from meshkit.settings import UnverifiedEmailMay
from tests.unit.auth_svc.memory_stores import (
    FakeClock,
    MemoryAccountStore,
    MemoryMailer,
    MemorySecurityStore,
    guards_over,
    settings_over,
)

PASSWORD = "a fine password"


def authenticator(
    store: MemoryAccountStore,
    mailer: MemoryMailer | None = None,
    *,
    security: MemorySecurityStore | None = None,
    guards: LoginGuards | None = None,
    captcha: CaptchaVerifier | None = None,
    policy: DefencePolicy | None = None,
    challenge_max_attempts: int = 5,
    rounds: int = 4,
    reuse_window_seconds: float = 0.0,
    unverified_email_may: UnverifiedEmailMay = "edit_profile",
    min_score: int = 0,
) -> Authenticator:
    """An Authenticator over the in-memory stores with cheap hashing, on the store's clock."""
    mailer = mailer or MemoryMailer()
    security = security or MemorySecurityStore(store)
    return Authenticator(
        store,  # type: ignore[arg-type]  # implements only what these flows call
        PasswordHasher("unit-pepper", rounds=rounds),
        AccessTokenSigner(Ed25519PrivateKey.generate(), ttl_seconds=900, clock=store.clock),
        sessions=SessionPolicy(
            idle_seconds=3600,
            successor_key=b"unit-successor-key",
            reuse_window_seconds=reuse_window_seconds,
            short_seconds=1800,
            max_seconds=7200,
        ),
        verification=EmailVerification(
            store,  # type: ignore[arg-type]
            mailer,
            SecurityLog(security),
            ttl_seconds=86_400,
            cooldown_seconds=60,
        ),
        guards=guards
        or guards_over(
            security,
            mailer,
            captcha=captcha,
            policy=policy,
            challenge_max_attempts=challenge_max_attempts,
        ),
        unverified_email_may=unverified_email_may,
        password_min_score=min_score,
        clock=store.clock,
    )


async def signed_in(
    auth: Authenticator,
    email: str,
    password: str,
    *,
    remember_me: bool = False,
    device: Device | None = None,
) -> TokenPair:
    """Log in to an account without MFA: the token pair."""
    outcome = await auth.login(email, password, remember_me=remember_me, device=device)
    assert isinstance(outcome, TokenPair)
    return outcome


@pytest.fixture
def auth(
    store: MemoryAccountStore, mailer: MemoryMailer, security: MemorySecurityStore
) -> Authenticator:
    return authenticator(store, mailer, security=security)


async def test_register_queues_a_verification_mail_whose_token_is_stored_hashed(
    auth: Authenticator, store: MemoryAccountStore, mailer: MemoryMailer
) -> None:
    await auth.register("Ann@Example.com", "Ann", "a fine password")
    # The notice for a registered email is made too (and dropped): both outcomes cost the same.
    assert mailer.kinds() == [MailKind.VERIFY_EMAIL, MailKind.SIGNUP_ATTEMPT]
    [verify] = [m for m in mailer.composed if m.kind is MailKind.VERIFY_EMAIL]
    assert (verify.to, mailer.wakes) == ("ann@example.com", 1)
    assert store.verification_hashes == [hashlib.sha256(verify.token.encode()).hexdigest()]


async def test_a_guessable_password_is_refused_with_the_reason(store: MemoryAccountStore) -> None:
    auth = authenticator(store, min_score=3)
    with pytest.raises(InvalidArgument) as caught:
        await auth.register("ann@example.com", "annabel", "annabel1990")
    [violation] = caught.value.violations
    assert violation.field == "password"
    assert violation.description.startswith("is too easy to guess")
    assert store.accounts == {}
    await auth.register("ann@example.com", "annabel", "maple quartz lantern orbit")


async def test_remember_me_decides_the_session_lifetime(
    auth: Authenticator, store: MemoryAccountStore
) -> None:
    await auth.register("ann@example.com", "ann", "a fine password")
    short = await signed_in(auth, "ann@example.com", "a fine password")
    long = await signed_in(auth, "ann@example.com", "a fine password", remember_me=True)
    assert (short.remembered, long.remembered) == (False, True)
    lives = {
        pair.session_id: store.sessions[pair.session_id].ends_at
        - store.sessions[pair.session_id].started_at
        for pair in (short, long)
    }
    assert round(lives[short.session_id].total_seconds()) == 1800
    assert round(lives[long.session_id].total_seconds()) == 7200
    # A short session's refresh token never outlives the session itself.
    assert (short.refresh_expires_in, long.refresh_expires_in) == (1800, 3600)


async def test_unverified_accounts_cannot_sign_in_when_the_deployment_says_so(
    store: MemoryAccountStore,
) -> None:
    auth = authenticator(store, unverified_email_may="nothing")
    await auth.register("ann@example.com", "ann", "a fine password")
    with pytest.raises(FailedPrecondition) as caught:
        await auth.login("ann@example.com", "a fine password")
    assert caught.value.reason == Reason.EMAIL_NOT_VERIFIED
    # A wrong password still gets the answer every stranger gets.
    with pytest.raises(Unauthenticated):
        await auth.login("ann@example.com", "not the password")


async def test_access_tokens_name_their_session(auth: Authenticator) -> None:
    await auth.register("ann@example.com", "ann", "a fine password")
    pair = await signed_in(auth, "ann@example.com", "a fine password")
    claims = jwt.decode(pair.access_token, options={"verify_signature": False})
    assert claims["sid"] == pair.session_id
    assert claims["email_verified"] is False
    refreshed = await auth.refresh(pair.refresh_token)
    again = jwt.decode(refreshed.access_token, options={"verify_signature": False})
    assert (again["sid"], again["auth_time"]) == (pair.session_id, claims["auth_time"])


async def test_register_stores_normalised_account_and_a_hash(
    auth: Authenticator, store: MemoryAccountStore
) -> None:
    account = await auth.register("Ann@Example.com", "Ann", "a fine password")
    assert (account.email, account.username) == ("ann@example.com", "ann")
    stored = store.accounts["ann@example.com"].password_hash
    assert stored.startswith("$2b$")
    assert "a fine password" not in stored


async def test_register_reports_all_violations_before_touching_the_store(
    auth: Authenticator, store: MemoryAccountStore
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await auth.register("bad", "x", "short")
    assert {v.field for v in caught.value.violations} == {"email", "username", "password"}
    assert store.accounts == {}


async def test_login_refresh_reuse_logout(auth: Authenticator, store: MemoryAccountStore) -> None:
    await auth.register("ann@example.com", "ann", "a fine password")
    first = await signed_in(auth, "ANN@example.com", "a fine password")
    assert first.token_type == "Bearer"
    assert (first.expires_in, first.refresh_expires_in) == (900, 1800)
    assert hashlib.sha256(first.refresh_token.encode()).hexdigest() in store.tokens

    second = await auth.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token

    with pytest.raises(Unauthenticated) as reused:
        await auth.refresh(first.refresh_token)
    assert reused.value.reason == Reason.REFRESH_TOKEN_REUSED
    with pytest.raises(Unauthenticated) as revoked:
        await auth.refresh(second.refresh_token)
    assert revoked.value.reason == Reason.REFRESH_TOKEN_INVALID

    third = await signed_in(auth, "ann@example.com", "a fine password")
    await auth.logout(third.refresh_token)
    await auth.logout(third.refresh_token)
    with pytest.raises(Unauthenticated) as after_logout:
        await auth.refresh(third.refresh_token)
    assert after_logout.value.reason == Reason.REFRESH_TOKEN_INVALID


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("ann@example.com", "the wrong password"),
        ("nobody@example.com", "a fine password"),
        ("", "a fine password"),
        ("not an email", "a fine password"),
        ("ann@example.com", ""),
        ("ann@example.com", "a fine password" * 10_000),
        ("nobody@example.com", "\ufdfa" * 1_000_000),
    ],
)
async def test_login_failures_are_indistinguishable(
    auth: Authenticator, email: str, password: str
) -> None:
    await auth.register("ann@example.com", "ann", "a fine password")
    with pytest.raises(Unauthenticated) as caught:
        await auth.login(email, password)
    assert caught.value.reason == Reason.INVALID_CREDENTIALS
    assert caught.value.message == INVALID_CREDENTIALS_MESSAGE


async def test_refresh_with_empty_or_unknown_token(auth: Authenticator) -> None:
    for token in ("", "never-issued"):
        with pytest.raises(Unauthenticated) as caught:
            await auth.refresh(token)
        assert caught.value.reason == Reason.REFRESH_TOKEN_INVALID


async def test_logout_of_unknown_or_empty_token_succeeds(auth: Authenticator) -> None:
    await auth.logout("")
    await auth.logout("never-issued")


async def test_a_refresh_repeated_within_the_window_gets_the_same_refresh_token(
    store: MemoryAccountStore,
) -> None:
    auth = authenticator(store, reuse_window_seconds=5)
    await auth.register("ann@example.com", "ann", "a fine password")
    first = await signed_in(auth, "ann@example.com", "a fine password")
    tab_one = await auth.refresh(first.refresh_token)
    tab_two = await auth.refresh(first.refresh_token)
    # Both tabs hold the same successor, and it works: the session lives on.
    assert tab_one.refresh_token == tab_two.refresh_token != first.refresh_token
    assert (await auth.refresh(tab_two.refresh_token)).refresh_token != tab_two.refresh_token


def test_successors_depend_on_the_token_and_the_key_alone() -> None:
    one = successor_refresh_token("token-a", b"key-1", 60, clock=lambda: 0.0)
    assert one.token == successor_refresh_token("token-a", b"key-1", 600, clock=lambda: 9.0).token
    assert one.token != successor_refresh_token("token-b", b"key-1", 60, clock=lambda: 0.0).token
    assert one.token != successor_refresh_token("token-a", b"key-2", 60, clock=lambda: 0.0).token
    assert len(one.token) == 43  # 256 bits in base64url, like a token issued at login


async def test_login_rehashes_a_password_hashed_at_an_older_cost(store: MemoryAccountStore) -> None:
    def at_cost(rounds: int) -> Authenticator:
        return authenticator(store, rounds=rounds)

    await at_cost(4).register("ann@example.com", "ann", "a fine password")
    assert store.accounts["ann@example.com"].password_hash.startswith("$2b$04$")
    # The cost setting was raised: the next login stores a hash at the new cost.
    await at_cost(5).login("ann@example.com", "a fine password")
    rehashed = store.accounts["ann@example.com"].password_hash
    assert rehashed.startswith("$2b$05$")
    await at_cost(5).login("ann@example.com", "a fine password")
    assert store.accounts["ann@example.com"].password_hash == rehashed
    # A wrong password changes nothing.
    with pytest.raises(Unauthenticated):
        await at_cost(6).login("ann@example.com", "not the password")
    assert store.accounts["ann@example.com"].password_hash == rehashed


async def test_a_registered_email_gets_a_new_accounts_answer_and_its_owner_a_notice(
    auth: Authenticator, store: MemoryAccountStore
) -> None:
    first = await auth.register("ann@example.com", "ann", "a fine password")
    again = await auth.register("ANN@example.com", "annie", "another fine password")
    assert (again.email, again.username, again.email_verified) == (
        "ann@example.com",
        "annie",
        False,
    )
    assert again.id != first.id
    assert store.notices == ["ann@example.com"]
    assert [c.account.username for c in store.accounts.values()] == ["ann"]
    with pytest.raises(AlreadyExists) as taken:
        await auth.register("bob@example.com", "ann", "a fine password")
    assert taken.value.reason == Reason.USERNAME_TAKEN


# Logins guarded by a second factor and the brute-force defence.

EMAIL = "ann@example.com"
PHONE = Device(user_agent="MeshPhone/1.0", client_ip="198.51.100.7")
LAPTOP = Device(user_agent="MeshLaptop/2.0", client_ip="203.0.113.9")


def principal_of(access_token: str) -> Principal:
    """The principal a verifier would read from an access token (its signature not checked)."""
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return Principal(
        account_id=claims["sub"],
        username=claims["name"],
        session_id=claims.get("sid", ""),
        email_verified=claims.get("email_verified") is True,
        auth_time=float(claims.get("auth_time", 0)),
    )


def code_now(secret: str, clock: FakeClock, steps: int = 0) -> str:
    """The code an authenticator app shows now (or steps of 30 s away)."""
    return code_at(secret, current_step(clock()) + steps)


def not_a_code(secret: str, clock: FakeClock) -> str:
    """Six digits that no step near now accepts."""
    valid = {code_now(secret, clock, steps) for steps in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


@dataclass
class MfaAccount:
    account: Account
    secret: str
    recovery_codes: list[str]


async def with_mfa(
    auth: Authenticator,
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> MfaAccount:
    """Register ann, sign in and turn MFA on as a user would; the clock then moves on a step
    (the confirming code's step is used)."""
    account = await auth.register(EMAIL, "ann", PASSWORD)
    pair = await signed_in(auth, EMAIL, PASSWORD, device=PHONE)
    settings = settings_over(store, security, mailer)
    principal = principal_of(pair.access_token)
    enrollment = await settings.start_enrollment(principal)
    codes = await settings.confirm(principal, code_now(enrollment.secret, store.clock), PHONE)
    store.clock.advance(30)
    return MfaAccount(account, enrollment.secret, codes)


async def challenged(
    auth: Authenticator, *, remember_me: bool = False, device: Device = PHONE
) -> str:
    """Log in with the right password to an account with MFA on: the challenge."""
    outcome = await auth.login(EMAIL, PASSWORD, remember_me=remember_me, device=device)
    assert isinstance(outcome, MfaRequired)
    return outcome.challenge


async def test_with_mfa_on_the_password_alone_gives_a_challenge_and_no_tokens(
    auth: Authenticator,
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    await with_mfa(auth, store, security, mailer)
    sessions = set(store.sessions)
    outcome = await auth.login(EMAIL, PASSWORD, device=PHONE)
    assert isinstance(outcome, MfaRequired)
    assert outcome.expires_in == 300
    assert len(outcome.challenge) >= 43
    assert set(store.sessions) == sessions, "no session before the second factor"
    assert security.challenges == {}, "the password step stores nothing"
    # The challenge is sealed: neither the secret nor the account shows through.
    ann = security.factors[next(iter(security.factors))]
    assert ann.secret_sealed is not None
    assert ann.secret_sealed.decode() not in outcome.challenge
    assert EMAIL not in outcome.challenge


async def test_the_right_code_finishes_the_login_with_a_working_token_pair(
    auth: Authenticator,
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    ann = await with_mfa(auth, store, security, mailer)
    challenge = await challenged(auth, remember_me=True)
    done = await auth.verify_mfa(challenge, code_now(ann.secret, store.clock), "", device=PHONE)
    assert (done.recovery_code_used, done.recovery_codes_left) == (False, 10)
    pair = done.tokens
    assert pair.remembered is True
    assert pair.refresh_expires_in == 3600
    claims = jwt.decode(pair.access_token, options={"verify_signature": False})
    assert (claims["sub"], claims["sid"]) == (ann.account.id, pair.session_id)
    assert claims["auth_time"] == int(store.clock())
    assert store.sessions[pair.session_id].device == PHONE
    refreshed = await auth.refresh(pair.refresh_token)
    assert refreshed.session_id == pair.session_id
    assert security.kinds_of(ann.account.id)[-1] is EventKind.LOGIN_SUCCEEDED


async def test_a_code_works_once_and_an_older_one_not_at_all(
    auth: Authenticator,
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    ann = await with_mfa(auth, store, security, mailer)
    code = code_now(ann.secret, store.clock)
    await auth.verify_mfa(await challenged(auth), code, "")
    # Someone who saw the code over the shoulder logs in with the password, within the step.
    for stale in (code, code_now(ann.secret, store.clock, -1)):
        with pytest.raises(Unauthenticated) as caught:
            await auth.verify_mfa(await challenged(auth), stale, "")
        assert caught.value.reason == Reason.MFA_CODE_INVALID
    store.clock.advance(30)
    await auth.verify_mfa(await challenged(auth), code_now(ann.secret, store.clock), "")


async def test_an_expired_challenge_is_refused_even_with_the_right_code(
    auth: Authenticator,
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    ann = await with_mfa(auth, store, security, mailer)
    challenge = await challenged(auth)
    store.clock.advance(301)
    with pytest.raises(NotFound) as caught:
        await auth.verify_mfa(challenge, code_now(ann.secret, store.clock), "")
    assert caught.value.reason == Reason.MFA_CHALLENGE_INVALID
    with pytest.raises(NotFound) as unknown:
        await auth.verify_mfa("never-issued", code_now(ann.secret, store.clock), "")
    assert unknown.value.reason == Reason.MFA_CHALLENGE_INVALID
    with pytest.raises(InvalidArgument) as empty:
        await auth.verify_mfa("  ", code_now(ann.secret, store.clock), "")
    assert [v.field for v in empty.value.violations] == ["challenge"]


async def test_a_challenge_is_used_up_after_its_wrong_codes(
    store: MemoryAccountStore, security: MemorySecurityStore, mailer: MemoryMailer
) -> None:
    auth = authenticator(store, mailer, security=security, challenge_max_attempts=3)
    ann = await with_mfa(auth, store, security, mailer)
    challenge = await challenged(auth)
    for _ in range(3):
        with pytest.raises(Unauthenticated) as wrong:
            await auth.verify_mfa(challenge, not_a_code(ann.secret, store.clock), "")
        assert wrong.value.reason == Reason.MFA_CODE_INVALID
    with pytest.raises(NotFound) as used_up:
        await auth.verify_mfa(challenge, code_now(ann.secret, store.clock), "")
    assert used_up.value.reason == Reason.MFA_CHALLENGE_INVALID
    # Logging in again gives a new challenge, which the right code finishes.
    await auth.verify_mfa(await challenged(auth), code_now(ann.secret, store.clock), "")


async def test_a_request_naming_no_factor_or_two_is_refused_without_spending_an_attempt(
    store: MemoryAccountStore, security: MemorySecurityStore, mailer: MemoryMailer
) -> None:
    auth = authenticator(store, mailer, security=security, challenge_max_attempts=1)
    ann = await with_mfa(auth, store, security, mailer)
    challenge = await challenged(auth)
    code = code_now(ann.secret, store.clock)
    for typed, recovery, field in (
        ("", "", "code"),
        (code, ann.recovery_codes[0], "recovery_code"),
        ("12345", "", "code"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            await auth.verify_mfa(challenge, typed, recovery)
        assert [v.field for v in caught.value.violations] == [field]
    await auth.verify_mfa(challenge, code, "")


async def test_a_recovery_code_works_once_and_says_how_many_are_left(
    auth: Authenticator,
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    ann = await with_mfa(auth, store, security, mailer)
    # Typed from paper: upper case, without its dash.
    typed = ann.recovery_codes[0].upper().replace("-", "")
    done = await auth.verify_mfa(await challenged(auth), "", typed, device=LAPTOP)
    assert (done.recovery_code_used, done.recovery_codes_left) == (True, 9)
    [used] = [
        e for e in security.events_of(ann.account.id) if e.kind is EventKind.RECOVERY_CODE_USED
    ]
    assert (used.session_id, used.device, used.detail) == (
        done.tokens.session_id,
        LAPTOP,
        "9 recovery codes left",
    )
    with pytest.raises(Unauthenticated) as again:
        await auth.verify_mfa(await challenged(auth), "", ann.recovery_codes[0])
    assert again.value.reason == Reason.MFA_CODE_INVALID
    done = await auth.verify_mfa(await challenged(auth), "", ann.recovery_codes[1])
    assert done.recovery_codes_left == 8


async def test_a_wrong_password_answers_alike_for_known_and_unknown_addresses(
    auth: Authenticator,
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    await with_mfa(auth, store, security, mailer)

    async def answers(email: str) -> list[tuple[type[Exception], str, str, int]]:
        seen: list[tuple[type[Exception], str, str, int]] = []
        for _ in range(6):
            with pytest.raises((Unauthenticated, ResourceExhausted)) as caught:
                await auth.login(email, "not the password", device=LAPTOP)
            error = caught.value
            assert isinstance(error, Unauthenticated | ResourceExhausted)
            wait = error.retry_after_seconds if isinstance(error, ResourceExhausted) else 0
            seen.append((type(error), error.reason, error.message, wait))
        return seen

    known = await answers(EMAIL)
    unknown = await answers("nobody@example.com")
    assert known == unknown
    assert known[0] == (
        Unauthenticated,
        Reason.INVALID_CREDENTIALS,
        INVALID_CREDENTIALS_MESSAGE,
        0,
    )
    # Both are locked alike from that client after five failures.
    assert known[-1][:2] == (ResourceExhausted, Reason.LOGIN_LOCKED)


async def test_a_locked_address_still_signs_in_from_another_network(
    store: MemoryAccountStore, security: MemorySecurityStore, mailer: MemoryMailer
) -> None:
    guards = guards_over(security, mailer)
    auth = authenticator(store, mailer, guards=guards)
    account = await auth.register(EMAIL, "ann", PASSWORD)
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await auth.login(EMAIL, "a guess", device=LAPTOP)
    with pytest.raises(ResourceExhausted) as locked:
        await auth.login(EMAIL, PASSWORD, device=LAPTOP)
    assert (locked.value.reason, locked.value.retry_after_seconds) == (Reason.LOGIN_LOCKED, 30)
    await signed_in(auth, EMAIL, PASSWORD, device=PHONE)
    await guards.log.drain()
    kinds = security.kinds_of(account.id)
    assert kinds.count(EventKind.LOGIN_FAILED) == 5
    assert kinds.count(EventKind.LOGIN_LOCKED) == 1
    assert kinds[-1] is EventKind.LOGIN_SUCCEEDED


async def test_the_owner_is_mailed_about_a_login_from_a_new_device_only(
    store: MemoryAccountStore, security: MemorySecurityStore, mailer: MemoryMailer
) -> None:
    auth = authenticator(store, mailer, security=security)
    await auth.register(EMAIL, "ann", PASSWORD)
    wakes = mailer.wakes
    await signed_in(auth, EMAIL, PASSWORD, device=PHONE)
    await signed_in(auth, EMAIL, PASSWORD, device=PHONE)
    assert (security.mails, mailer.wakes) == ([], wakes)
    await signed_in(auth, EMAIL, PASSWORD, device=LAPTOP)
    assert [m.kind for m in security.mails] == ["new_device_login"]
    assert mailer.wakes == wakes + 1
    composed = mailer.composed[-1]
    assert (composed.kind, composed.to) == (MailKind.NEW_DEVICE_LOGIN, EMAIL)
    assert composed.device == "MeshLaptop/2.0 (203.0.113.9)"


async def test_a_long_user_agent_does_not_hide_the_address_from_the_owner(
    store: MemoryAccountStore, security: MemorySecurityStore, mailer: MemoryMailer
) -> None:
    auth = authenticator(store, mailer, security=security)
    await auth.register(EMAIL, "ann", PASSWORD)
    await signed_in(auth, EMAIL, PASSWORD, device=PHONE)
    # A browser's User-Agent may be this long (web_clients.USER_AGENT_MAX is 512).
    stranger = Device(user_agent="Agent/" + "x" * 300, client_ip="192.0.2.66")
    await signed_in(auth, EMAIL, PASSWORD, device=stranger)
    composed = mailer.composed[-1]
    assert composed.kind is MailKind.NEW_DEVICE_LOGIN
    renderer = MailRenderer(public_url="https://app.example.test", sender="m@example.test")
    message = renderer.render(
        composed.kind, to=composed.to, changed_at=store.clock.at(), device=composed.device
    )
    plain = message.get_body(("plain",))
    assert plain is not None
    assert "192.0.2.66" in plain.get_content()


async def test_reauthenticating_renews_the_login_time_that_mfa_settings_ask_for(
    auth: Authenticator,
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    account = await auth.register(EMAIL, "ann", PASSWORD)
    pair = await signed_in(auth, EMAIL, PASSWORD, device=PHONE)
    old = principal_of(pair.access_token)
    settings = settings_over(store, security, mailer)
    store.clock.advance(601)
    with pytest.raises(FailedPrecondition) as stale:
        await settings.start_enrollment(old)
    assert stale.value.reason == Reason.REAUTHENTICATION_REQUIRED

    done = await auth.reauthenticate(old, PASSWORD, device=PHONE)
    assert done.auth_time == store.clock.at()
    fresh = principal_of(done.access_token)
    assert (fresh.session_id, fresh.auth_time) == (old.session_id, int(store.clock()))
    await settings.start_enrollment(fresh)
    # The session's later tokens carry the new time too.
    refreshed = principal_of((await auth.refresh(pair.refresh_token)).access_token)
    assert refreshed.auth_time == fresh.auth_time
    [event] = [e for e in security.events_of(account.id) if e.kind is EventKind.REAUTHENTICATED]
    assert (event.session_id, event.device) == (old.session_id, PHONE)


async def test_reauthenticating_refuses_a_wrong_password_or_code(
    auth: Authenticator,
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    ann = await with_mfa(auth, store, security, mailer)
    done = await auth.verify_mfa(await challenged(auth), code_now(ann.secret, store.clock), "")
    principal = principal_of(done.tokens.access_token)
    store.clock.advance(30)
    code = code_now(ann.secret, store.clock)

    with pytest.raises(Unauthenticated) as password:
        await auth.reauthenticate(principal, "not the password", code)
    assert password.value.reason == Reason.INVALID_CREDENTIALS
    with pytest.raises(InvalidArgument) as missing:
        await auth.reauthenticate(principal, PASSWORD)
    assert [v.field for v in missing.value.violations] == ["code"]
    with pytest.raises(Unauthenticated) as wrong:
        await auth.reauthenticate(principal, PASSWORD, not_a_code(ann.secret, store.clock))
    assert wrong.value.reason == Reason.MFA_CODE_INVALID
    assert EventKind.REAUTHENTICATED not in security.kinds_of(ann.account.id)

    store.clock.advance(5)
    renewed = await auth.reauthenticate(principal, PASSWORD, code)
    assert renewed.auth_time == store.clock.at()
    with pytest.raises(Unauthenticated) as replayed:
        await auth.reauthenticate(principal, PASSWORD, code)
    assert replayed.value.reason == Reason.MFA_CODE_INVALID
    # A recovery code does instead, once.
    await auth.reauthenticate(principal, PASSWORD, recovery_code=ann.recovery_codes[0])
    assert (await security.mfa(ann.account.id)).recovery_codes_left == 9


async def test_wrong_second_factors_keep_counting_after_the_password_is_typed_again(
    auth: Authenticator,
    store: MemoryAccountStore,
    security: MemorySecurityStore,
    mailer: MemoryMailer,
) -> None:
    ann = await with_mfa(auth, store, security, mailer)
    # Someone who has the password guesses codes: five wrong ones lock them out for 30 s.
    challenge = await challenged(auth, device=LAPTOP)
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await auth.verify_mfa(challenge, not_a_code(ann.secret, store.clock), "", device=LAPTOP)
    store.clock.advance(30)
    challenge = await challenged(auth, device=LAPTOP)
    with pytest.raises(Unauthenticated):
        await auth.verify_mfa(challenge, not_a_code(ann.secret, store.clock), "", device=LAPTOP)
    # The sixth wrong code doubles the wait, whatever the password step did meanwhile: the
    # next password step from this client is refused for 60 s (a challenge in hand still
    # takes at most its own few codes).
    with pytest.raises(ResourceExhausted) as locked:
        await challenged(auth, device=LAPTOP)
    assert locked.value.retry_after_seconds == 60
