"""Account defences through the real edge: the login lockout per address and client, the CAPTCHA
(a siteverify provider served here), the throttle of one client, TOTP two-step login with its
recovery codes, re-authentication before MFA changes, the security activity log, and answers
and timings that do not tell registered addresses apart.

Runs its own mesh with short waits and low thresholds (see DEFENCE_ENV), against a database of
its own, so that its deliberate failures cannot slow down any other test and its mail lands in
its own mailbox. Each test connects from loopback addresses of its own (127.0.0.x, 127.0.1.x for
the timing test): the edge sees them as the client's address, so the counters of one test never
reach another.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import jwt
import pyotp
import pytest

from auth_svc.accounts import MailKind
from auth_svc.mail.messages import SUBJECTS
from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.e2e.defences_support import (
    PNG_SIGNATURE,
    AuthenticatorApp,
    challenge_of,
    client_from,
    error_metadata,
    grpc_retry_delay_seconds,
    is_png,
    login,
    mails_with_subject,
    retry_delay_seconds,
    verify_mfa,
)
from tests.e2e.support import NewUser, new_user, wait_for_request
from tests.e2e.test_accounts import (
    COOKIE,
    TIMING_ABSOLUTE_BOUND_SECONDS,
    TIMING_RELATIVE_BOUND,
    TIMING_TRIES,
    SetCookie,
    assert_error,
    instant,
    tokens_of,
    web_auth,
)
from tests.e2e.test_grpc_web import ORIGIN
from tests.e2e.test_rest import bearer, field_violations, register
from tests.helpers import error_info, failure_of, migrated_database
from tools.mesh import Mesh, MeshPorts
from tools.siteverify import DUMMY_TOKEN, Mode, SiteverifyServer

if TYPE_CHECKING:
    from meshgram.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub

CAPTCHA_SECRET = "e2e-siteverify-secret"
SITE_KEY = "site-key-e2e"
LOCK_AFTER = 3
LOCK_BASE_SECONDS = 2
LOCK_MAX_SECONDS = 8
CAPTCHA_AFTER = 6
CLIENT_CAPTCHA_AFTER = 8
CLIENT_LOCK_AFTER = 12
CHALLENGE_TTL_SECONDS = 3
CHALLENGE_MAX_ATTEMPTS = 5
REAUTHENTICATION_WINDOW_SECONDS = 4
CAPTCHA_TIMEOUT_SECONDS = 1
RECOVERY_CODES = 10
DEFENCE_ENV = {
    "MESHGRAM_ENV": "development",
    "AUTH_BCRYPT_ROUNDS": "8",
    "AUTH_CAPTCHA_SECRET": CAPTCHA_SECRET,
    "AUTH_CAPTCHA_SITE_KEY": SITE_KEY,
    "AUTH_CAPTCHA_TIMEOUT_SECONDS": str(CAPTCHA_TIMEOUT_SECONDS),
    "AUTH_LOCKOUT_AFTER_FAILURES": str(LOCK_AFTER),
    "AUTH_LOCKOUT_BASE_SECONDS": str(LOCK_BASE_SECONDS),
    "AUTH_LOCKOUT_MAX_SECONDS": str(LOCK_MAX_SECONDS),
    "AUTH_CAPTCHA_AFTER_FAILURES": str(CAPTCHA_AFTER),
    "AUTH_CAPTCHA_AFTER_CLIENT_FAILURES": str(CLIENT_CAPTCHA_AFTER),
    "AUTH_CLIENT_LOCKOUT_AFTER_FAILURES": str(CLIENT_LOCK_AFTER),
    "AUTH_MFA_CHALLENGE_TTL_SECONDS": str(CHALLENGE_TTL_SECONDS),
    "AUTH_MFA_CHALLENGE_MAX_ATTEMPTS": str(CHALLENGE_MAX_ATTEMPTS),
    "AUTH_REAUTHENTICATION_WINDOW_SECONDS": str(REAUTHENTICATION_WINDOW_SECONDS),
    # auth_svc's own defences, alone: the edge's shared limiter adds a database round trip to
    # every login and registration, the same for known and unknown addresses, whose jitter on a
    # loaded machine blurs the timing comparison (test_edge_rate_limits covers the limits).
    "MESHGRAM_RATE_LIMITS": "off",
}
WRONG_PASSWORD = "not the password at all"
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]


# -- The mesh --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def siteverify() -> Iterator[SiteverifyServer]:
    """The CAPTCHA provider of the defended mesh; the dummy token passes, again and again."""
    with SiteverifyServer(CAPTCHA_SECRET) as server:
        yield server


@pytest.fixture(scope="module")
async def defences_database_url(database_url: str) -> AsyncIterator[str]:
    """A migrated database of the defended mesh's own, on the session's server: its auth_svc
    then sends the mail of this database, to its own mailbox, while the session mesh keeps
    sending that of the shared one."""
    async with migrated_database(database_url, "meshgram_defences") as url:
        yield url


@pytest.fixture(scope="module")
def defended(
    defences_database_url: str,
    siteverify: SiteverifyServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    """A private mesh with the defences' thresholds and waits made short, asking siteverify."""
    state: Path = tmp_path_factory.mktemp("defences")
    mesh = Mesh(
        database_url=defences_database_url,
        ports=MeshPorts.free(),
        state_dir=state,
        cors_origins=(ORIGIN,),
        extra_env={**DEFENCE_ENV, "AUTH_CAPTCHA_VERIFY_URL": siteverify.url},
        log_dir=state / "logs",
    )
    mesh.start(timeout=90)
    yield mesh
    mesh.stop()


@pytest.fixture(scope="module")
def edge(defended: Mesh) -> str:
    """Base URL of the defended mesh's edge."""
    return f"http://{defended.edge_address}"


@pytest.fixture
def http(edge: str) -> Iterator[httpx.Client]:
    """An HTTP client to the defended edge from 127.0.0.1 (used for sign-ups, which the
    defences do not count)."""
    with httpx.Client(base_url=edge, timeout=30) as client:
        yield client


# -- Helpers ---------------------------------------------------------------------------------


def signed_up(http: httpx.Client) -> NewUser:
    """A freshly registered user."""
    user = new_user()
    registered = register(http, user)
    assert registered.status_code == 200, registered.text
    return user


def unknown_address() -> str:
    """An address no account has."""
    return f"nobody.{uuid.uuid4().hex[:12]}@example.com"


def retry_after(reply: httpx.Response) -> int:
    """The Retry-After header of a refusal (whole seconds), equal to its RetryInfo delay."""
    seconds = int(reply.headers["retry-after"])
    assert retry_delay_seconds(reply) == seconds, reply.text
    return seconds


def claims_of(access_token: str) -> dict[str, Any]:
    """The claims of an access token, as any client can read them."""
    return dict(jwt.decode(access_token, options={"verify_signature": False}))


def enrol(http: httpx.Client, tokens: dict[str, Any]) -> tuple[AuthenticatorApp, list[str]]:
    """Turn MFA on for the owner of tokens (a login of the last few seconds): the app that
    scanned the secret, and the recovery codes."""
    started = http.post("/v1/auth/mfa:startEnrollment", headers=bearer(tokens), json={})
    assert started.status_code == 200, started.text
    app = AuthenticatorApp(started.json()["secret"])
    confirmed = http.post(
        "/v1/auth/mfa:confirmEnrollment", headers=bearer(tokens), json={"code": app.fresh()}
    )
    assert confirmed.status_code == 200, confirmed.text
    codes = list(confirmed.json()["recoveryCodes"])
    assert len(set(codes)) == RECOVERY_CODES
    return app, codes


def mfa_state(http: httpx.Client, tokens: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/auth/mfa, with the fields JSON leaves out at their defaults filled in."""
    reply = http.get("/v1/auth/mfa", headers=bearer(tokens))
    assert reply.status_code == 200, reply.text
    return {
        "enabled": False,
        "recoveryCodesLeft": 0,
        "enrollmentPending": False,
        **reply.json()["mfa"],
    }


def events_of(http: httpx.Client, tokens: dict[str, Any], page_size: int = 100) -> list[Any]:
    """Every event of the owner's security log, newest first, following the pages."""
    events: list[Any] = []
    token = ""
    while True:
        params: dict[str, str | int] = {"pageSize": page_size}
        if token:
            params["pageToken"] = token
        page = http.get("/v1/auth/securityEvents", headers=bearer(tokens), params=params)
        assert page.status_code == 200, page.text
        events += page.json().get("events", [])
        token = page.json().get("nextPageToken", "")
        if not token:
            return events


def events_until(
    http: httpx.Client,
    tokens: dict[str, Any],
    done: Callable[[list[Any]], bool],
    seconds: float = 5.0,
) -> list[Any]:
    """The owner's events once done(events) holds (failed logins are logged off the reply's
    path, a moment later), or after seconds."""
    deadline = time.monotonic() + seconds
    while True:
        events = events_of(http, tokens)
        if done(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def kinds(events: Sequence[Any]) -> list[str]:
    """The kinds of events, without the KIND_ prefix."""
    return [str(event["kind"]).removeprefix("KIND_") for event in events]


# -- Lockout -----------------------------------------------------------------------------------


def test_a_lockout_holds_back_one_client_and_never_the_owner(http: httpx.Client, edge: str) -> None:
    victim = signed_up(http)
    stranger = unknown_address()
    with (
        client_from(edge, "127.0.0.10") as attacker,
        client_from(edge, "127.0.0.11") as owner,
        client_from(edge, "127.0.0.12") as prober,
    ):

        def both(password: str) -> tuple[httpx.Response, httpx.Response]:
            """The same attempt on the victim (from the attacker) and on an address of no
            account (from a prober): the answers must not tell them apart."""
            on_victim = login(attacker, victim.email, password)
            on_stranger = login(prober, stranger, password)
            assert on_victim.status_code == on_stranger.status_code, on_stranger.text
            assert on_victim.content == on_stranger.content
            assert on_victim.headers.get("retry-after") == on_stranger.headers.get("retry-after")
            return on_victim, on_stranger

        for _ in range(LOCK_AFTER):
            wrong, _ = both(WRONG_PASSWORD)
            assert_error(wrong, 401, "INVALID_CREDENTIALS")

        # Locked: the next attempt is not even checked, the right password neither.
        locked, _ = both(WRONG_PASSWORD)
        assert_error(locked, 429, "LOGIN_LOCKED")
        assert locked.json()["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        wait = retry_after(locked)
        assert 1 <= wait <= LOCK_BASE_SECONDS
        right, _ = both(victim.password)
        assert_error(right, 429, "LOGIN_LOCKED")
        assert "tokens" not in right.json()

        # The owner, from elsewhere, signs in meanwhile; the attacker's client stays locked.
        assert tokens_of(login(owner, victim.email, victim.password))["accessToken"]
        assert_error(login(attacker, victim.email, victim.password), 429, "LOGIN_LOCKED")

        # After the wait the attacker may guess again, once: the next wait is twice as long.
        time.sleep(wait + 0.3)
        again, _ = both(WRONG_PASSWORD)
        assert_error(again, 401, "INVALID_CREDENTIALS")
        relocked, _ = both(victim.password)
        assert_error(relocked, 429, "LOGIN_LOCKED")
        longer = retry_after(relocked)
        assert LOCK_BASE_SECONDS < longer <= 2 * LOCK_BASE_SECONDS

        # Once that wait passes too, the right password signs in from there as well.
        time.sleep(longer + 0.3)
        back = tokens_of(login(attacker, victim.email, victim.password))

    # The owner's activity log shows the failures and the lockout, with the attacker's address.
    events = events_until(http, back, lambda found: "LOGIN_LOCKED" in kinds(found))
    locked_events = [e for e in events if e["kind"] == "KIND_LOGIN_LOCKED"]
    assert [e["clientIp"] for e in locked_events] == ["127.0.0.10"]
    failed = [e for e in events if e["kind"] == "KIND_LOGIN_FAILED"]
    assert {e["clientIp"] for e in failed} == {"127.0.0.10"}


async def test_a_locked_client_over_native_grpc_is_resource_exhausted(defended: Mesh) -> None:
    user = new_user()
    async with grpc.aio.insecure_channel(defended.edge_address) as channel:
        auth: AuthServiceAsyncStub = auth_pb2_grpc.AuthServiceStub(channel)
        await auth.Register(
            auth_pb2.RegisterRequest(
                email=user.email, username=user.username, password=user.password
            )
        )
        for _ in range(LOCK_AFTER):
            wrong = await failure_of(
                auth.Login(auth_pb2.LoginRequest(email=user.email, password=WRONG_PASSWORD))
            )
            assert (wrong.code, wrong.reason) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "INVALID_CREDENTIALS",
            )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.Login(auth_pb2.LoginRequest(email=user.email, password=user.password))
    locked = caught.value
    assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(locked).reason == "LOGIN_LOCKED"
    wait = grpc_retry_delay_seconds(locked)
    assert 1 <= wait <= LOCK_BASE_SECONDS
    trailers = dict(locked.trailing_metadata() or ())
    assert trailers.get("retry-after") == str(wait)


# -- CAPTCHA -----------------------------------------------------------------------------------


def test_failures_from_several_clients_make_the_address_need_a_captcha(
    http: httpx.Client, edge: str, siteverify: SiteverifyServer
) -> None:
    victim = signed_up(http)
    failing = ("127.0.0.13", "127.0.0.14", "127.0.0.15")
    for address in failing:
        with client_from(edge, address) as client:
            for _ in range(CAPTCHA_AFTER // len(failing)):
                assert_error(
                    login(client, victim.email, WRONG_PASSWORD), 401, "INVALID_CREDENTIALS"
                )

    solver_address = "127.0.0.16"
    with client_from(edge, solver_address) as solver:
        # From any client, even a new one and with the right password: solve a CAPTCHA first.
        required = login(solver, victim.email, victim.password)
        assert_error(required, 400, "CAPTCHA_REQUIRED")
        assert required.json()["code"] == FAILED_PRECONDITION
        assert error_metadata(required) == {"site_key": SITE_KEY}
        assert "tokens" not in required.json()
        with client_from(edge, failing[0]) as attacker:
            assert_error(login(attacker, victim.email, victim.password), 400, "CAPTCHA_REQUIRED")

        asked_before = len(siteverify.requests)
        refused = login(solver, victim.email, victim.password, captcha_token="made-up-token")
        assert_error(refused, 400, "CAPTCHA_INVALID")
        assert list(field_violations(refused)) == ["captcha_token"]

        # A provider that fails or does not answer: no login, a retryable 503, in bounded time.
        failing_modes: tuple[Mode, ...] = ("http-500", "not-json", "hang")
        try:
            for mode in failing_modes:
                siteverify.mode = mode
                started = time.monotonic()
                reply = login(solver, victim.email, victim.password, captcha_token=DUMMY_TOKEN)
                took = time.monotonic() - started
                assert_error(reply, 503, "CAPTCHA_UNAVAILABLE")
                assert "tokens" not in reply.json()
                assert took < CAPTCHA_TIMEOUT_SECONDS + 1.5, (mode, took)
                if mode == "hang":
                    assert took >= CAPTCHA_TIMEOUT_SECONDS * 0.9, took
        finally:
            siteverify.mode = "normal"

        # Solved: signed in, and the address's failures are forgotten.
        passed = tokens_of(login(solver, victim.email, victim.password, DUMMY_TOKEN))
        assert passed["accessToken"]
        asked = siteverify.requests[asked_before:]
        assert [r["response"] for r in asked] == ["made-up-token", *[DUMMY_TOKEN] * 4]
        assert {r["remoteip"] for r in asked} == {solver_address}
        assert "secret" not in asked[0]
        assert tokens_of(login(solver, victim.email, victim.password))["accessToken"]
    with client_from(edge, failing[1]) as other:
        assert tokens_of(login(other, victim.email, victim.password))["accessToken"]


def test_one_client_failing_across_addresses_needs_a_captcha_then_waits(
    http: httpx.Client, edge: str
) -> None:
    user = signed_up(http)
    with (
        client_from(edge, "127.0.0.17") as guesser,
        client_from(edge, "127.0.0.18") as elsewhere,
    ):
        for _ in range(CLIENT_CAPTCHA_AFTER):
            wrong = login(guesser, unknown_address(), WRONG_PASSWORD)
            assert_error(wrong, 401, "INVALID_CREDENTIALS")
        # Every further login from that client needs a CAPTCHA, to any address.
        for email, password in ((unknown_address(), WRONG_PASSWORD), (user.email, user.password)):
            required = login(guesser, email, password)
            assert_error(required, 400, "CAPTCHA_REQUIRED")
            assert error_metadata(required) == {"site_key": SITE_KEY}
        # Solved, it goes on: a right password signs in, a wrong one is told so.
        assert tokens_of(login(guesser, user.email, user.password, DUMMY_TOKEN))["accessToken"]
        for _ in range(CLIENT_LOCK_AFTER - CLIENT_CAPTCHA_AFTER):
            wrong = login(guesser, unknown_address(), WRONG_PASSWORD, DUMMY_TOKEN)
            assert_error(wrong, 401, "INVALID_CREDENTIALS")
        # At the client threshold it waits, whatever it sends.
        for email, password in ((unknown_address(), WRONG_PASSWORD), (user.email, user.password)):
            throttled = login(guesser, email, password, DUMMY_TOKEN)
            assert_error(throttled, 429, "TOO_MANY_ATTEMPTS")
            assert 1 <= retry_after(throttled) <= LOCK_BASE_SECONDS
        # Another client is neither throttled nor asked for a CAPTCHA.
        assert tokens_of(login(elsewhere, user.email, user.password))["accessToken"]


# -- MFA -----------------------------------------------------------------------------------------


def test_two_step_login_walk_through_over_rest(
    http: httpx.Client, edge: str, defended: Mesh
) -> None:
    user = signed_up(http)
    address = user.email.lower()
    # Wrong second factors count as failed logins: each comes from a client of its own, so
    # that none of them locks a client out (AUTH_LOCKOUT_AFTER_FAILURES is 3 here).
    strangers = iter(f"127.0.0.{host}" for host in range(21, 30))

    def from_elsewhere(challenge: str, code: str = "", recovery_code: str = "") -> httpx.Response:
        """VerifyMfa from a client address not used before."""
        with client_from(edge, next(strangers)) as client:
            return verify_mfa(client, challenge, code, recovery_code)

    with client_from(edge, "127.0.0.20") as home:
        tokens = tokens_of(login(home, user.email, user.password))
        assert mfa_state(home, tokens) == {
            "enabled": False,
            "recoveryCodesLeft": 0,
            "enrollmentPending": False,
        }

        # Enrolment: the secret in every form an authenticator app reads.
        started = home.post("/v1/auth/mfa:startEnrollment", headers=bearer(tokens), json={})
        assert started.status_code == 200, started.text
        enrollment = started.json()
        uri = enrollment["otpauthUri"]
        assert urlsplit(uri).scheme == "otpauth"
        assert parse_qs(urlsplit(uri).query)["issuer"] == ["meshgram"]
        scanned = pyotp.parse_uri(uri)
        assert isinstance(scanned, pyotp.TOTP)
        assert (scanned.secret, scanned.issuer, scanned.name) == (
            enrollment["secret"],
            "meshgram",
            address,
        )
        assert (scanned.digits, scanned.interval) == (6, 30)
        assert enrollment["qrCodeSvg"].startswith("<svg")
        assert is_png(enrollment["qrCodePng"])
        assert enrollment["qrCodeText"].strip()
        assert enrollment["expiresIn"] > 0
        assert mfa_state(home, tokens)["enrollmentPending"] is True
        app = AuthenticatorApp(enrollment["secret"])
        mistyped = home.post(
            "/v1/auth/mfa:confirmEnrollment", headers=bearer(tokens), json={"code": app.wrong()}
        )
        assert_error(mistyped, 401, "MFA_CODE_INVALID")
        confirmed = home.post(
            "/v1/auth/mfa:confirmEnrollment", headers=bearer(tokens), json={"code": app.fresh()}
        )
        assert confirmed.status_code == 200, confirmed.text
        codes = confirmed.json()["recoveryCodes"]
        assert len(set(codes)) == RECOVERY_CODES
        state = mfa_state(home, tokens)
        assert (state["enabled"], state["recoveryCodesLeft"]) == (True, RECOVERY_CODES)
        assert state["enrollmentPending"] is False
        assert mails_with_subject(defended, address, SUBJECTS[MailKind.MFA_ENABLED])

        # The password alone gives a challenge, no tokens; the code finishes the login.
        challenge = challenge_of(login(home, user.email, user.password))
        done = verify_mfa(home, challenge, code=app.fresh())
        second = tokens_of(done)
        assert done.json().get("recoveryCodeUsed", False) is False
        assert http.get("/v1/profiles/me", headers=bearer(second)).status_code == 200
        assert_error(verify_mfa(home, challenge, code=app.replayed()), 404, "MFA_CHALLENGE_INVALID")

        # A code works once, and an older one never: neither can be replayed by an onlooker.
        challenge = challenge_of(login(home, user.email, user.password))
        for old in (app.replayed(), app.older()):
            refused = from_elsewhere(challenge, code=old)
            assert_error(refused, 401, "MFA_CODE_INVALID")
        # A recovery code finishes the same login (as typed by hand: upper case).
        recovered = verify_mfa(home, challenge, recovery_code=codes[0].upper())
        assert tokens_of(recovered)["accessToken"]
        assert recovered.json()["recoveryCodeUsed"] is True
        assert recovered.json()["recoveryCodesLeft"] == RECOVERY_CODES - 1

        # A used or made-up recovery code is refused; naming two factors is a client error.
        challenge = challenge_of(login(home, user.email, user.password))
        for bad in (codes[0], "aaaaa-bbbbb"):
            refused = from_elsewhere(challenge, recovery_code=bad)
            assert_error(refused, 401, "MFA_CODE_INVALID")
        both = verify_mfa(home, challenge, code=app.wrong(), recovery_code=codes[1])
        assert_error(both, 400, "INVALID_FIELD")
        assert list(field_violations(both)) == ["recovery_code"]
        recovered = verify_mfa(home, challenge, recovery_code=codes[1])
        assert recovered.json()["recoveryCodesLeft"] == RECOVERY_CODES - 2

        # A challenge waits at most AUTH_MFA_CHALLENGE_TTL_SECONDS.
        challenge = challenge_of(login(home, user.email, user.password))
        time.sleep(CHALLENGE_TTL_SECONDS + 0.5)
        expired = verify_mfa(home, challenge, recovery_code=codes[2])
        assert_error(expired, 404, "MFA_CHALLENGE_INVALID")

        # Five wrong codes use a challenge up: then even a right factor (an unused recovery
        # code; the app's next code would need the clock to move on) is refused.
        challenge = challenge_of(login(home, user.email, user.password))
        for _ in range(CHALLENGE_MAX_ATTEMPTS):
            refused = from_elsewhere(challenge, code=app.wrong())
            assert_error(refused, 401, "MFA_CODE_INVALID")
        used_up = verify_mfa(home, challenge, recovery_code=codes[2])
        assert_error(used_up, 404, "MFA_CHALLENGE_INVALID")
        # Neither refusal used the recovery code up.
        challenge = challenge_of(login(home, user.email, user.password))
        recovered = verify_mfa(home, challenge, recovery_code=codes[2])
        assert recovered.json()["recoveryCodesLeft"] == RECOVERY_CODES - 3
        assert mfa_state(home, tokens_of(recovered))["recoveryCodesLeft"] == RECOVERY_CODES - 3


def test_wrong_codes_lock_the_client_out_even_between_right_passwords(
    http: httpx.Client, edge: str
) -> None:
    user = signed_up(http)
    with client_from(edge, "127.0.0.37") as guesser:
        app, _ = enrol(guesser, tokens_of(login(guesser, user.email, user.password)))
        # Someone who knows the password guesses codes, asking for a new challenge each time.
        for _ in range(LOCK_AFTER - 1):
            challenge = challenge_of(login(guesser, user.email, user.password))
            assert_error(verify_mfa(guesser, challenge, app.wrong()), 401, "MFA_CODE_INVALID")
        challenge = challenge_of(login(guesser, user.email, user.password))
        assert_error(verify_mfa(guesser, challenge, app.wrong()), 401, "MFA_CODE_INVALID")
        # Wrong codes count as failed logins: three of them lock this client out of the
        # password step, so no new challenge (and no new allowance of guesses) comes its way.
        assert_error(login(guesser, user.email, user.password), 429, "LOGIN_LOCKED")


def test_changing_mfa_needs_a_recent_authentication(
    http: httpx.Client, edge: str, defended: Mesh
) -> None:
    user = signed_up(http)
    address = user.email.lower()
    with client_from(edge, "127.0.0.30") as owner:
        tokens = tokens_of(login(owner, user.email, user.password))
        app, old_codes = enrol(owner, tokens)
        signed_in_at = claims_of(tokens["accessToken"])["auth_time"]

        # Past the window, the login is too old to change MFA.
        time.sleep(max(0.0, signed_in_at + REAUTHENTICATION_WINDOW_SECONDS + 1.2 - time.time()))
        for path in ("/v1/auth/mfa:disable", "/v1/auth/mfa:regenerateRecoveryCodes"):
            stale = owner.post(path, headers=bearer(tokens), json={})
            assert_error(stale, 400, "REAUTHENTICATION_REQUIRED")
            assert stale.json()["code"] == FAILED_PRECONDITION
            assert f"{REAUTHENTICATION_WINDOW_SECONDS} seconds" in stale.json()["message"]
        assert mfa_state(owner, tokens)["enabled"] is True

        # With MFA on the password alone is not enough: the request lacks its code (400).
        reauthenticate = "/v1/auth:reauthenticate"
        password_only = owner.post(
            reauthenticate, headers=bearer(tokens), json={"password": user.password}
        )
        assert_error(password_only, 400, "INVALID_FIELD")
        assert password_only.json()["code"] == INVALID_ARGUMENT
        assert list(field_violations(password_only)) == ["code"]
        wrong_password = owner.post(
            reauthenticate,
            headers=bearer(tokens),
            json={"password": WRONG_PASSWORD, "code": app.wrong()},
        )
        assert_error(wrong_password, 401, "INVALID_CREDENTIALS")
        wrong_code = owner.post(
            reauthenticate,
            headers=bearer(tokens),
            json={"password": user.password, "code": app.wrong()},
        )
        assert_error(wrong_code, 401, "MFA_CODE_INVALID")

        proved_at = int(time.time())
        fresh = owner.post(
            reauthenticate,
            headers=bearer(tokens),
            json={"password": user.password, "code": app.fresh()},
        )
        assert fresh.status_code == 200, fresh.text
        renewed = {"accessToken": fresh.json()["accessToken"]}
        claims = claims_of(renewed["accessToken"])
        assert proved_at <= claims["auth_time"] <= int(time.time())
        assert claims["auth_time"] > signed_in_at
        assert claims["sid"] == claims_of(tokens["accessToken"])["sid"]
        assert int(instant(fresh.json()["authTime"]).timestamp()) == claims["auth_time"]
        assert fresh.json()["expiresIn"] > 0

        # New recovery codes replace the old ones, which stop working.
        regenerated = owner.post(
            "/v1/auth/mfa:regenerateRecoveryCodes", headers=bearer(renewed), json={}
        )
        assert regenerated.status_code == 200, regenerated.text
        new_codes = regenerated.json()["recoveryCodes"]
        assert len(set(new_codes)) == RECOVERY_CODES
        assert not set(new_codes) & set(old_codes)
        challenge = challenge_of(login(owner, user.email, user.password))
        old = verify_mfa(owner, challenge, recovery_code=old_codes[0])
        assert_error(old, 401, "MFA_CODE_INVALID")
        recovered = verify_mfa(owner, challenge, recovery_code=new_codes[0])
        assert recovered.json()["recoveryCodesLeft"] == RECOVERY_CODES - 1

        # Turning MFA off takes a current factor (a token alone is not enough); then a mail
        # says so, and the password alone signs in again.
        bare = owner.post("/v1/auth/mfa:disable", headers=bearer(renewed), json={})
        assert_error(bare, 400, "INVALID_FIELD")
        wrong = owner.post(
            "/v1/auth/mfa:disable", headers=bearer(renewed), json={"code": app.wrong()}
        )
        assert_error(wrong, 401, "MFA_CODE_INVALID")
        disabled = owner.post(
            "/v1/auth/mfa:disable",
            headers=bearer(renewed),
            json={"recoveryCode": new_codes[1]},
        )
        assert (disabled.status_code, disabled.json()) == (200, {}), disabled.text
        again = owner.post(
            "/v1/auth/mfa:disable", headers=bearer(renewed), json={"recoveryCode": new_codes[2]}
        )
        assert_error(again, 400, "MFA_NOT_ENABLED")
        assert mails_with_subject(defended, address, SUBJECTS[MailKind.MFA_DISABLED])
        single = login(owner, user.email, user.password)
        assert "mfaChallenge" not in single.json()
        assert mfa_state(owner, tokens_of(single)) == {
            "enabled": False,
            "recoveryCodesLeft": 0,
            "enrollmentPending": False,
        }


async def test_two_step_login_over_native_grpc(defended: Mesh) -> None:
    user = new_user()
    async with grpc.aio.insecure_channel(defended.edge_address) as channel:
        auth: AuthServiceAsyncStub = auth_pb2_grpc.AuthServiceStub(channel)
        await auth.Register(
            auth_pb2.RegisterRequest(
                email=user.email, username=user.username, password=user.password
            )
        )
        credentials = auth_pb2.LoginRequest(email=user.email, password=user.password)
        first = await auth.Login(credentials)
        owner = (("authorization", f"Bearer {first.tokens.access_token}"),)
        started = await auth.StartMfaEnrollment(
            auth_pb2.StartMfaEnrollmentRequest(), metadata=owner
        )
        assert started.qr_code_png.startswith(PNG_SIGNATURE)
        assert started.qr_code_svg.startswith("<svg")
        app = AuthenticatorApp(started.secret)
        confirmed = await auth.ConfirmMfaEnrollment(
            auth_pb2.ConfirmMfaEnrollmentRequest(code=app.fresh()), metadata=owner
        )
        assert len(confirmed.recovery_codes) == RECOVERY_CODES

        second = await auth.Login(credentials)
        assert not second.HasField("tokens")
        challenge = second.mfa_challenge.challenge
        assert challenge
        wrong = await failure_of(
            auth.VerifyMfa(auth_pb2.VerifyMfaRequest(challenge=challenge, code=app.wrong()))
        )
        assert (wrong.code, wrong.reason) == (grpc.StatusCode.UNAUTHENTICATED, "MFA_CODE_INVALID")
        done = await auth.VerifyMfa(
            auth_pb2.VerifyMfaRequest(challenge=challenge, code=app.fresh())
        )
        assert done.tokens.access_token
        assert done.tokens.refresh_token
        assert (done.recovery_code_used, done.recovery_codes_left) == (False, RECOVERY_CODES)
        state = await auth.GetMfa(
            auth_pb2.GetMfaRequest(),
            metadata=(("authorization", f"Bearer {done.tokens.access_token}"),),
        )
        assert (state.mfa.enabled, state.mfa.recovery_codes_left) == (True, RECOVERY_CODES)


def test_two_step_login_over_grpc_web(edge: str) -> None:
    user = new_user()
    with client_from(edge, "127.0.0.32") as http:
        registered = web_auth(
            http,
            "Register",
            auth_pb2.RegisterRequest(
                email=user.email, username=user.username, password=user.password
            ),
        )
        assert registered.status == 0
        credentials = auth_pb2.LoginRequest(email=user.email, password=user.password)
        first = web_auth(http, "Login", credentials)
        assert first.status == 0
        pair = auth_pb2.LoginResponse.FromString(first.messages[0]).tokens
        owner = {"authorization": f"Bearer {pair.access_token}"}
        started = web_auth(http, "StartMfaEnrollment", auth_pb2.StartMfaEnrollmentRequest(), owner)
        assert started.status == 0
        enrollment = auth_pb2.StartMfaEnrollmentResponse.FromString(started.messages[0])
        app = AuthenticatorApp(enrollment.secret)
        confirmed = web_auth(
            http,
            "ConfirmMfaEnrollment",
            auth_pb2.ConfirmMfaEnrollmentRequest(code=app.fresh()),
            owner,
        )
        assert confirmed.status == 0

        # The password step starts no session: no tokens, no cookie.
        second = web_auth(http, "Login", credentials)
        assert second.status == 0
        answer = auth_pb2.LoginResponse.FromString(second.messages[0])
        assert not answer.HasField("tokens")
        assert "set-cookie" not in second.reply.headers
        challenge = answer.mfa_challenge.challenge
        wrong = web_auth(
            http, "VerifyMfa", auth_pb2.VerifyMfaRequest(challenge=challenge, code=app.wrong())
        )
        assert (wrong.status, wrong.reason) == (UNAUTHENTICATED, "MFA_CODE_INVALID")
        done = web_auth(
            http, "VerifyMfa", auth_pb2.VerifyMfaRequest(challenge=challenge, code=app.fresh())
        )
        assert done.status == 0
        finished = auth_pb2.VerifyMfaResponse.FromString(done.messages[0])
        # A browser's second step sets the refresh cookie, as a one-step login does.
        assert finished.tokens.access_token
        assert (finished.tokens.refresh_token, finished.tokens.refresh_token_in_cookie) == (
            "",
            True,
        )
        assert SetCookie.of(done.reply).name == COOKIE


# -- Activity ------------------------------------------------------------------------------------


def test_the_security_log_shows_the_accounts_activity_page_by_page(
    http: httpx.Client, edge: str, defended: Mesh
) -> None:
    user = signed_up(http)
    address = user.email.lower()
    laptop, phone, stranger = "e2e-laptop/1.0", "e2e-phone/2.0", "e2e-stranger/6.6"
    with (
        client_from(edge, "127.0.0.33", laptop) as at_home,
        client_from(edge, "127.0.0.34", stranger) as attacker,
        client_from(edge, "127.0.0.35", phone) as on_the_road,
    ):
        first = tokens_of(login(at_home, user.email, user.password))
        assert_error(login(attacker, user.email, WRONG_PASSWORD), 401, "INVALID_CREDENTIALS")
        # The failure is logged a moment after the answer: wait, so that the order is known.
        events_until(at_home, first, lambda found: "LOGIN_FAILED" in kinds(found))
        tokens_of(login(on_the_road, user.email, user.password))
        latest = tokens_of(login(at_home, user.email, user.password))
        _, codes = enrol(at_home, latest)
        challenge = challenge_of(login(at_home, user.email, user.password))
        recovered = tokens_of(verify_mfa(at_home, challenge, recovery_code=codes[0]))

        # Newest first, two at a time, until the token runs out.
        pages: list[list[Any]] = []
        token = ""
        while True:
            params: dict[str, str | int] = {"pageSize": 2}
            if token:
                params["pageToken"] = token
            page = at_home.get("/v1/auth/securityEvents", headers=bearer(recovered), params=params)
            assert page.status_code == 200, page.text
            pages.append(page.json()["events"])
            token = page.json().get("nextPageToken", "")
            if not token:
                break
        assert [len(p) for p in pages] == [2, 2, 2, 1]
        events = [event for p in pages for event in p]
        assert kinds(events) == [
            "RECOVERY_CODE_USED",
            "LOGIN_SUCCEEDED",
            "MFA_ENABLED",
            "LOGIN_SUCCEEDED",
            "LOGIN_SUCCEEDED",
            "LOGIN_FAILED",
            "LOGIN_SUCCEEDED",
        ]
        ids = [int(event["id"]) for event in events]
        assert ids == sorted(set(ids), reverse=True)
        times = [instant(event["createTime"]) for event in events]
        assert times == sorted(times, reverse=True)
        seen = [(e["clientIp"], e["userAgent"]) for e in events]
        assert seen == [
            *[("127.0.0.33", laptop)] * 4,
            ("127.0.0.35", phone),
            ("127.0.0.34", stranger),
            ("127.0.0.33", laptop),
        ]
        assert events[0]["detail"] == f"{RECOVERY_CODES - 1} recovery codes left"
        assert events[0]["sessionId"] == recovered["sessionId"]
        assert events[1]["sessionId"] == recovered["sessionId"]
        assert events[6]["sessionId"] == first["sessionId"]
        assert events[5].get("sessionId", "") == ""  # a failed login has no session

        # Tokens this service did not make, and callers without a token, are refused.
        for garbage in ("not-a-token", "ZTE6LTE", "ZTE6MA"):
            refused = at_home.get(
                "/v1/auth/securityEvents", headers=bearer(recovered), params={"pageToken": garbage}
            )
            assert refused.status_code == 400, refused.text
            assert list(field_violations(refused)) == ["page_token"]
        anonymous = at_home.get("/v1/auth/securityEvents")
        assert anonymous.status_code == 401
        assert anonymous.json()["code"] == UNAUTHENTICATED

    # One mail for the phone's sign-in; none for the first sign-in after sign-up, nor for the
    # laptop's second.
    assert mails_with_subject(defended, address, SUBJECTS[MailKind.MFA_ENABLED])
    new_device = mails_with_subject(defended, address, SUBJECTS[MailKind.NEW_DEVICE_LOGIN], 2, 1)
    assert len(new_device) == 1
    assert phone in new_device[0].text()


# -- No enumeration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One kind of request whose answer and timing must not tell a registered address apart
    from an unknown one."""

    path: str
    body: Callable[[str], dict[str, str]]
    """The JSON body about an address."""
    status: int
    same_body: bool = True
    """Whether both answers are byte-identical (a sign-up's names the account it describes)."""


PROBES = {
    "login": Probe(
        "/v1/auth:login", lambda email: {"email": email, "password": WRONG_PASSWORD}, 401
    ),
    "register": Probe(
        "/v1/auth:register",
        lambda email: {
            "email": email,
            "username": f"e2e_{uuid.uuid4().hex[:10]}",
            "password": new_user().password,
        },
        200,
        same_body=False,
    ),
    "requestPasswordReset": Probe(
        "/v1/auth:requestPasswordReset",
        lambda email: {"email": email},
        200,
    ),
    "resendVerificationEmail": Probe(
        "/v1/auth:resendVerificationEmail", lambda email: {"email": email}, 200
    ),
}


@pytest.fixture(scope="module")
def timing_users(edge: str) -> list[NewUser]:
    """Registered (unverified) users, one per timed try: each address is used once per probe."""
    with httpx.Client(base_url=edge, timeout=30) as client:
        return [signed_up(client) for _ in range(TIMING_TRIES)]


@pytest.fixture(scope="module")
def timing_clients(edge: str) -> Iterator[list[httpx.Client]]:
    """One client address per timed try (127.0.1.1, ...), connected: no address-and-client
    pair fails twice and no client more than twice, so neither the lockout nor a CAPTCHA comes
    into play."""
    with ExitStack() as stack:
        clients = [
            stack.enter_context(client_from(edge, f"127.0.1.{n}"))
            for n in range(1, TIMING_TRIES + 1)
        ]
        for client in clients:
            assert client.get("/.well-known/jwks.json").status_code == 200
        yield clients


def timed(client: httpx.Client, path: str, body: dict[str, str]) -> tuple[float, httpx.Response]:
    """How long one request took, and its answer."""
    started = time.perf_counter()
    reply = client.post(path, json=body)
    return time.perf_counter() - started, reply


@pytest.mark.parametrize("probe", list(PROBES))
def test_answers_and_their_timing_do_not_tell_registered_addresses_apart(
    probe: str, timing_users: list[NewUser], timing_clients: list[httpx.Client]
) -> None:
    spec = PROBES[probe]
    durations: tuple[list[float], list[float]] = ([], [])
    # A fresh address on both sides of every try, in alternating order so that drift in the
    # machine's load hits both alike.
    for index, (client, user) in enumerate(zip(timing_clients, timing_users, strict=True)):
        bodies = (spec.body(user.email), spec.body(unknown_address()))
        order = (1, 0) if index % 2 else (0, 1)
        replies: dict[int, httpx.Response] = {}
        for side in order:
            spent, replies[side] = timed(client, spec.path, bodies[side])
            durations[side].append(spent)
        known, unknown = replies[0], replies[1]
        for reply in (known, unknown):
            assert reply.status_code == spec.status, (probe, reply.text)
        assert known.headers["content-type"] == unknown.headers["content-type"]
        if spec.same_body:
            assert known.content == unknown.content, probe
        else:
            described = known.json()["account"], unknown.json()["account"]
            assert described[0].keys() == described[1].keys()
            assert {a.get("emailVerified", False) for a in described} == {False}
            assert uuid.UUID(described[0]["id"]) != uuid.UUID(described[1]["id"])

    registered, stranger = (statistics.median(each) for each in durations)
    bound = max(TIMING_RELATIVE_BOUND * max(registered, stranger), TIMING_ABSOLUTE_BOUND_SECONDS)
    assert abs(registered - stranger) < bound, (probe, registered, stranger, bound)


# -- Logs ----------------------------------------------------------------------------------------


def test_second_factors_challenges_and_captcha_secrets_never_reach_the_logs(
    defended: Mesh, edge: str
) -> None:
    user = new_user()
    secrets_seen: list[str] = [CAPTCHA_SECRET, user.password]
    with client_from(edge, "127.0.0.40") as client:
        assert register(client, user).status_code == 200
        tokens = tokens_of(login(client, user.email, user.password))
        started = client.post("/v1/auth/mfa:startEnrollment", headers=bearer(tokens), json={})
        app = AuthenticatorApp(started.json()["secret"])
        secrets_seen.append(app.secret)
        confirmed = client.post(
            "/v1/auth/mfa:confirmEnrollment", headers=bearer(tokens), json={"code": app.fresh()}
        )
        codes = confirmed.json()["recoveryCodes"]
        secrets_seen += codes
        # A wrong code, a right one, a recovery code; each challenge is a secret too.
        for code, recovery in ((app.wrong(), ""), (app.fresh(), ""), ("", codes[0])):
            challenge = challenge_of(login(client, user.email, user.password))
            secrets_seen.append(challenge)
            reply = verify_mfa(client, challenge, code, recovery)
            if recovery:
                secrets_seen.append(tokens_of(reply)["refreshToken"])
        reauthenticated = client.post(
            "/v1/auth:reauthenticate",
            headers=bearer(tokens),
            json={"password": user.password, "recoveryCode": codes[1]},
        )
        assert reauthenticated.status_code == 200, reauthenticated.text
        secrets_seen += [codes[1], reauthenticated.json()["accessToken"]]
        last = client.post(
            "/v1/auth:login",
            json={"email": user.email, "password": "wrong", "captchaToken": DUMMY_TOKEN},
        )
    assert wait_for_request(defended, "envoy", last.headers["x-request-id"])
    assert defended.log_dir is not None
    everything = "\n".join(path.read_text() for path in Path(defended.log_dir).glob("*.log"))
    for secret in secrets_seen:
        assert secret not in everything
    assert DUMMY_TOKEN not in everything
    assert "Traceback" not in everything
