"""Account features through the real edge, with real mail: sign-up and email verification,
remember-me logins, sessions and the devices they record, password change and reset, the
refresh-token cookie of browsers, answers that do not tell registered addresses apart, and mail
that waits for the SMTP server to come back.

Over REST/JSON (what a curl user or the web app sees), native gRPC and gRPC-web, every call
through Envoy. Mail is read from the mesh's own mailbox (tools/mailbox.py), where auth_svc's
sender delivers it over SMTP.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import grpc
import httpx
import jwt
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2

from auth_svc.accounts import MailKind
from auth_svc.mail.messages import RESET_PASSWORD_PATH, SUBJECTS, VERIFY_EMAIL_PATH
from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.e2e.support import (
    NewUser,
    grpc_web_unframe,
    link_token,
    mails_to,
    new_user,
)
from tests.e2e.test_grpc_web import ORIGIN, web_call
from tests.e2e.test_rest import bearer, error_reason, field_violations, register
from tests.helpers import failure_of
from tools.mailbox import StoredMail
from tools.mesh import MAILBOX, Mesh

if TYPE_CHECKING:
    from meshgram.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub

COOKIE = "__Host-meshgram-refresh"
COOKIE_ATTRIBUTES = ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"]
FOREIGN_ORIGIN = "http://evil.example.test"
# AUTH_SHORT_SESSION_SECONDS: a login without remember-me ends within it.
SHORT_SESSION = timedelta(hours=12)
# A password zxcvbn rejects (auth_svc asks for a score of 3).
WEAK_PASSWORD = "password1"
# Not an address at all: refused before anything is looked up.
MALFORMED_EMAIL = "not-an-address"


def strong_password() -> str:
    """A new password the strength rules accept, unlike any other."""
    return f"velvet harbor {uuid.uuid4().hex[:8]} lantern"


def nth_mail(mesh: Mesh, address: str, count: int, kind: MailKind | None = None) -> StoredMail:
    """The count-th mail to address (1: the first), of that kind when given, waiting for it to
    arrive (other mail, such as a new device's sign-in notice, may come in between)."""
    subject = None if kind is None else SUBJECTS[kind]
    mails = mails_to(mesh, address, count, subject=subject)
    assert len(mails) >= count, f"{len(mails)} of {count} mails to {address} arrived"
    return mails[count - 1]


def verification_token(mesh: Mesh, address: str) -> str:
    """The token of the verification mail that sign-up sent to address."""
    return link_token(nth_mail(mesh, address, 1), VERIFY_EMAIL_PATH)


def sign_in(
    http: httpx.Client,
    email: str,
    password: str,
    *,
    remember_me: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST /v1/auth:login."""
    return http.post(
        "/v1/auth:login",
        json={"email": email, "password": password, "rememberMe": remember_me},
        headers=headers,
    )


def tokens_of(reply: httpx.Response) -> dict[str, Any]:
    """The token pair of a successful login or refresh."""
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["tokens"])


def refresh(http: httpx.Client, refresh_token: str) -> httpx.Response:
    """POST /v1/auth:refresh with a refresh token in the body."""
    return http.post("/v1/auth:refresh", json={"refreshToken": refresh_token})


def sessions_of(http: httpx.Client, tokens: dict[str, Any]) -> list[dict[str, Any]]:
    """GET /v1/auth/sessions as the owner of tokens."""
    reply = http.get("/v1/auth/sessions", headers=bearer(tokens))
    assert reply.status_code == 200, reply.text
    return list(reply.json()["sessions"])


def instant(text: str) -> datetime:
    """A JSON timestamp of the API as a datetime."""
    stamp = Timestamp()
    stamp.FromJsonString(text)
    return stamp.ToDatetime(tzinfo=UTC)


def email_verified_claim(access_token: str) -> bool:
    """The email_verified claim of an access token, as any client can read it."""
    return bool(jwt.decode(access_token, options={"verify_signature": False})["email_verified"])


def assert_error(reply: httpx.Response, status: int, reason: str) -> None:
    """The reply is a JSON error with that HTTP status and ErrorInfo reason."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert error_reason(reply) == reason, reply.text


# -- REST ------------------------------------------------------------------------------------


def test_weak_password_at_sign_up_is_400_with_the_reason(http: httpx.Client) -> None:
    user = new_user()
    reply = register(http, NewUser(user.email, user.username, WEAK_PASSWORD))
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    violations = field_violations(reply)
    assert list(violations) == ["password"]
    assert violations["password"]  # says why it is weak
    # Nothing was created: the address is still free.
    assert register(http, user).status_code == 200


def test_requests_that_cannot_be_served_are_refused_plainly(http: httpx.Client) -> None:
    listing = http.get("/v1/auth/sessions")
    assert listing.status_code == 401
    assert listing.json()["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    ending = http.post("/v1/auth/sessions:deleteOthers", json={})
    assert ending.status_code == 401
    change = http.post(
        "/v1/auth:changePassword",
        json={"currentPassword": "whatever it was", "newPassword": strong_password()},
    )
    assert change.status_code == 401
    for path in ("/v1/auth:resendVerificationEmail", "/v1/auth:requestPasswordReset"):
        malformed = http.post(path, json={"email": MALFORMED_EMAIL})
        assert malformed.status_code == 400, malformed.text
        assert list(field_violations(malformed)) == ["email"]
    for path in ("/v1/auth:verifyEmail", "/v1/auth:resetPassword"):
        made_up = http.post(path, json={"token": "made-up", "newPassword": strong_password()})
        assert_error(made_up, 404, "ACCOUNT_TOKEN_INVALID")


def test_account_walk_through_over_rest(http: httpx.Client, mesh: Mesh) -> None:
    user = new_user()
    address = user.email.lower()

    # Sign-up: the account exists, unverified, and a verification link is mailed.
    registered = register(http, user)
    assert registered.status_code == 200, registered.text
    account = registered.json()["account"]
    assert (account["email"], account["username"]) == (address, user.username)
    assert account["emailVerified"] is False
    mail = nth_mail(mesh, address, 1)
    assert "confirm" in str(mail.message["Subject"]).lower()
    [link] = [link for link in mail.links() if urlsplit(link).path == VERIFY_EMAIL_PATH]
    assert link.startswith(f"http://localhost:{mesh.ports.edge}{VERIFY_EMAIL_PATH}#token=")
    token = link_token(mail, VERIFY_EMAIL_PATH)
    assert token not in str(mail.message["Subject"])
    unverified = tokens_of(sign_in(http, user.email, user.password))
    assert email_verified_claim(unverified["accessToken"]) is False

    # Verify: once.
    verified = http.post("/v1/auth:verifyEmail", json={"token": token})
    assert verified.status_code == 200, verified.text
    assert verified.json()["account"] == {**account, "emailVerified": True}
    again = http.post("/v1/auth:verifyEmail", json={"token": token})
    assert_error(again, 404, "ACCOUNT_TOKEN_INVALID")
    assert again.json()["code"] == grpc.StatusCode.NOT_FOUND.value[0]

    # Logins with and without remember-me: a short session and a long one.
    laptop_agent = {"user-agent": "e2e-laptop/1.0"}
    laptop = tokens_of(
        sign_in(http, user.email, user.password, remember_me=True, headers=laptop_agent)
    )
    phone = tokens_of(
        sign_in(http, user.email, user.password, headers={"user-agent": "e2e-phone/2.0"})
    )
    for pair in (laptop, phone):
        assert pair["tokenType"] == "Bearer"
        assert pair["refreshToken"]
        assert pair["refreshTokenInCookie"] is False
        assert email_verified_claim(pair["accessToken"]) is True
    assert laptop["refreshExpiresIn"] > SHORT_SESSION.total_seconds()
    assert 0 < phone["refreshExpiresIn"] <= SHORT_SESSION.total_seconds()

    # Two tabs refreshing the phone's token at once both get the same successor.
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: refresh(http, phone["refreshToken"]), range(2)))
    successors = [tokens_of(reply) for reply in both]
    assert successors[0]["refreshToken"] == successors[1]["refreshToken"]
    assert successors[0]["refreshToken"] != phone["refreshToken"]
    assert successors[0]["sessionId"] == phone["sessionId"]
    phone = successors[0]

    # Change the password on the laptop: the phone and the unverified login end, a mail says so.
    new_password = strong_password()
    wrong = http.post(
        "/v1/auth:changePassword",
        headers=bearer(laptop),
        json={"currentPassword": "not the password", "newPassword": new_password},
    )
    assert_error(wrong, 401, "INVALID_CREDENTIALS")
    weak = http.post(
        "/v1/auth:changePassword",
        headers=bearer(laptop),
        json={"currentPassword": user.password, "newPassword": WEAK_PASSWORD},
    )
    assert weak.status_code == 400, weak.text
    assert list(field_violations(weak)) == ["new_password"]
    changed = http.post(
        "/v1/auth:changePassword",
        headers=bearer(laptop),
        json={"currentPassword": user.password, "newPassword": new_password},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"endedSessions": 2}
    for ended in (phone, unverified):
        assert_error(refresh(http, ended["refreshToken"]), 401, "REFRESH_TOKEN_INVALID")
    assert_error(sign_in(http, user.email, user.password), 401, "INVALID_CREDENTIALS")
    nth_mail(mesh, address, 1, MailKind.PASSWORD_CHANGED)  # the owner is told
    laptop = tokens_of(refresh(http, laptop["refreshToken"]))

    # Sessions: the laptop (current, remembered) and a new tablet, with their devices.
    tablet = tokens_of(
        sign_in(http, user.email, new_password, headers={"user-agent": "e2e-tablet/3.0"})
    )
    listed = sessions_of(http, laptop)
    assert [s["id"] for s in listed] == [tablet["sessionId"], laptop["sessionId"]]
    by_id = {s["id"]: s for s in listed}
    here, there = by_id[laptop["sessionId"]], by_id[tablet["sessionId"]]
    assert (here["current"], there["current"]) == (True, False)
    assert (here["remembered"], there["remembered"]) == (True, False)
    # The laptop's agent is the one of its latest refresh (the default client's).
    assert here["userAgent"] == http.headers["user-agent"]
    assert there["userAgent"] == "e2e-tablet/3.0"
    assert here["clientIp"] == there["clientIp"] == "127.0.0.1"
    for session in listed:
        times = [instant(session[name]) for name in ("createTime", "lastUseTime", "expireTime")]
        assert times == sorted(times)
    assert instant(there["expireTime"]) - instant(there["createTime"]) <= SHORT_SESSION
    assert [s["current"] for s in sessions_of(http, tablet)] == [True, False]

    # Someone else's session is not found, nor is one that does not exist.
    stranger = new_user()
    assert register(http, stranger).status_code == 200
    theirs = tokens_of(sign_in(http, stranger.email, stranger.password))
    for missing in (theirs["sessionId"], str(uuid.uuid4())):
        foreign = http.delete(f"/v1/auth/sessions/{missing}", headers=bearer(laptop))
        assert_error(foreign, 404, "SESSION_NOT_FOUND")
    assert tokens_of(refresh(http, theirs["refreshToken"]))

    # End the tablet by id, then every other session at once.
    deleted = http.delete(f"/v1/auth/sessions/{tablet['sessionId']}", headers=bearer(laptop))
    assert (deleted.status_code, deleted.json()) == (200, {})
    assert_error(refresh(http, tablet["refreshToken"]), 401, "REFRESH_TOKEN_INVALID")
    gone = http.delete(f"/v1/auth/sessions/{tablet['sessionId']}", headers=bearer(laptop))
    assert_error(gone, 404, "SESSION_NOT_FOUND")
    others = [tokens_of(sign_in(http, user.email, new_password)) for _ in range(2)]
    swept = http.post("/v1/auth/sessions:deleteOthers", headers=bearer(laptop), json={})
    assert (swept.status_code, swept.json()) == (200, {"endedSessions": 2})
    assert [s["id"] for s in sessions_of(http, laptop)] == [laptop["sessionId"]]
    for pair in others:
        assert_error(refresh(http, pair["refreshToken"]), 401, "REFRESH_TOKEN_INVALID")

    # Forgot the password: a reset link is mailed; the reset ends every session.
    asked = http.post("/v1/auth:requestPasswordReset", json={"email": user.email.upper()})
    assert (asked.status_code, asked.json()) == (200, {})
    reset_mail = nth_mail(mesh, address, 1, MailKind.RESET_PASSWORD)
    reset_token = link_token(reset_mail, RESET_PASSWORD_PATH)
    weak_reset = http.post(
        "/v1/auth:resetPassword", json={"token": reset_token, "newPassword": WEAK_PASSWORD}
    )
    assert weak_reset.status_code == 400, weak_reset.text
    assert list(field_violations(weak_reset)) == ["new_password"]
    final_password = strong_password()
    reset = http.post(
        "/v1/auth:resetPassword", json={"token": reset_token, "newPassword": final_password}
    )
    assert (reset.status_code, reset.json()) == (200, {})
    assert_error(refresh(http, laptop["refreshToken"]), 401, "REFRESH_TOKEN_INVALID")
    used = http.post(
        "/v1/auth:resetPassword", json={"token": reset_token, "newPassword": strong_password()}
    )
    assert_error(used, 404, "ACCOUNT_TOKEN_INVALID")
    assert_error(sign_in(http, user.email, new_password), 401, "INVALID_CREDENTIALS")
    back = tokens_of(sign_in(http, user.email, final_password))
    assert [s["id"] for s in sessions_of(http, back)] == [back["sessionId"]]
    # The reset is announced like a change, and the mail holds no token.
    reset_notice = nth_mail(mesh, address, 2, MailKind.PASSWORD_CHANGED)
    assert reset_token not in reset_notice.text()


def test_twenty_concurrent_verifications_with_one_token_succeed_once(
    http: httpx.Client, mesh: Mesh
) -> None:
    user = new_user()
    assert register(http, user).status_code == 200
    body = {"token": verification_token(mesh, user.email)}
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: http.post("/v1/auth:verifyEmail", json=body), range(20)))
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [200] + [404] * 19, [reply.text for reply in replies]
    [winner] = [reply for reply in replies if reply.status_code == 200]
    assert winner.json()["account"]["emailVerified"] is True
    assert {error_reason(r) for r in replies if r.status_code == 404} == {"ACCOUNT_TOKEN_INVALID"}


# -- The client's address ----------------------------------------------------------------------


SPOOFED_IP = "203.0.113.9"
# Another loopback address of this machine: connecting from it tells the address the edge saw
# apart from the edge's own (127.0.0.1), while staying on loopback.
OTHER_LOOPBACK = "127.0.0.2"


@pytest.fixture
def http_from_other_loopback(edge_url: str) -> Iterator[httpx.Client]:
    """An HTTP client to the edge whose connections come from 127.0.0.2."""
    transport = httpx.HTTPTransport(local_address=OTHER_LOOPBACK)
    with httpx.Client(base_url=edge_url, timeout=30, transport=transport) as client:
        yield client


def test_sessions_record_the_address_the_edge_saw_not_the_one_a_client_states(
    http_from_other_loopback: httpx.Client,
) -> None:
    http = http_from_other_loopback
    user = new_user()
    assert register(http, user).status_code == 200
    honest = tokens_of(sign_in(http, user.email, user.password))
    spoofed = tokens_of(
        sign_in(http, user.email, user.password, headers={"x-meshgram-client-ip": SPOOFED_IP})
    )
    by_id = {s["id"]: s for s in sessions_of(http, honest)}
    assert by_id[honest["sessionId"]]["clientIp"] == OTHER_LOOPBACK
    assert by_id[spoofed["sessionId"]]["clientIp"] == OTHER_LOOPBACK
    # A refresh records the device again, with the same rule.
    spoofed = tokens_of(
        http.post(
            "/v1/auth:refresh",
            json={"refreshToken": spoofed["refreshToken"]},
            headers={"x-meshgram-client-ip": "198.51.100.1"},
        )
    )
    by_id = {s["id"]: s for s in sessions_of(http, honest)}
    assert by_id[spoofed["sessionId"]]["clientIp"] == OTHER_LOOPBACK


def test_a_forwarded_for_header_from_a_client_is_not_its_recorded_address(
    http_from_other_loopback: httpx.Client,
) -> None:
    http = http_from_other_loopback
    user = new_user()
    assert register(http, user).status_code == 200
    forwarded = tokens_of(
        sign_in(http, user.email, user.password, headers={"x-forwarded-for": SPOOFED_IP})
    )
    [session] = sessions_of(http, forwarded)
    assert session["clientIp"] == OTHER_LOOPBACK


# -- Browsers: the refresh-token cookie over REST ---------------------------------------------


@dataclass(frozen=True)
class SetCookie:
    """One Set-Cookie header, split into its name, value and attributes."""

    name: str
    value: str
    attributes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, reply: httpx.Response) -> SetCookie:
        """The one Set-Cookie header of a reply."""
        [header] = reply.headers.get_list("set-cookie")
        pair, *attributes = [part.strip() for part in header.split(";")]
        name, _, value = pair.partition("=")
        return cls(name, value, attributes)


def browser(origin: str = ORIGIN, cookie: str | None = None) -> dict[str, str]:
    """Headers of a browser's fetch from a page of origin, with the refresh cookie if given."""
    headers = {"origin": origin}
    if cookie is not None:
        headers["cookie"] = f"theme=dark; {COOKIE}={cookie}"
    return headers


def test_browsers_keep_the_refresh_token_in_a_host_cookie(http: httpx.Client) -> None:
    user = new_user()
    assert register(http, user).status_code == 200

    # Without remember-me: a browser-session cookie, and no refresh token in the body.
    login = sign_in(http, user.email, user.password, headers=browser())
    tokens = tokens_of(login)
    assert (tokens["refreshToken"], tokens["refreshTokenInCookie"]) == ("", True)
    assert login.headers["access-control-allow-origin"] == ORIGIN
    assert login.headers["access-control-allow-credentials"] == "true"
    cookie = SetCookie.of(login)
    assert (cookie.name, cookie.attributes) == (COOKIE, COOKIE_ATTRIBUTES)
    assert cookie.value

    # With remember-me the cookie outlives the browser, as long as the refresh token.
    lasting = sign_in(http, user.email, user.password, remember_me=True, headers=browser())
    remembered = SetCookie.of(lasting)
    expires_in = tokens_of(lasting)["refreshExpiresIn"]
    assert remembered.attributes == [*COOKIE_ATTRIBUTES, f"Max-Age={expires_in}"]
    assert tokens_of(lasting)["refreshToken"] == ""

    # Another site's page cannot sign the browser in (to an account of its choosing).
    foreign_login = sign_in(http, user.email, user.password, headers=browser(FOREIGN_ORIGIN))
    assert_error(foreign_login, 403, "ORIGIN_NOT_ALLOWED")
    assert "set-cookie" not in foreign_login.headers

    # Refreshing with the cookie from the app's page rotates it.
    refreshed = http.post("/v1/auth:refresh", json={}, headers=browser(cookie=cookie.value))
    rotated_tokens = tokens_of(refreshed)
    assert rotated_tokens["refreshToken"] == ""
    assert rotated_tokens["sessionId"] == tokens["sessionId"]
    rotated = SetCookie.of(refreshed)
    assert (rotated.name, rotated.attributes) == (COOKIE, COOKIE_ATTRIBUTES)
    assert rotated.value not in ("", cookie.value)
    assert http.get("/v1/auth/sessions", headers=bearer(rotated_tokens)).status_code == 200

    # Another site's page cannot use the cookie, nor can a call without an Origin.
    for origin in (FOREIGN_ORIGIN, f"{ORIGIN}.evil.example"):
        forged = http.post("/v1/auth:refresh", json={}, headers=browser(origin, rotated.value))
        assert_error(forged, 403, "ORIGIN_NOT_ALLOWED")
        assert "set-cookie" not in forged.headers
        forged_logout = http.post(
            "/v1/auth:logout", json={}, headers=browser(origin, rotated.value)
        )
        assert_error(forged_logout, 403, "ORIGIN_NOT_ALLOWED")
    no_origin = http.post(
        "/v1/auth:refresh", json={}, headers={"cookie": f"{COOKIE}={rotated.value}"}
    )
    assert_error(no_origin, 403, "ORIGIN_NOT_ALLOWED")

    # Logging out with the cookie clears it and ends the session.
    logout = http.post("/v1/auth:logout", json={}, headers=browser(cookie=rotated.value))
    assert (logout.status_code, logout.json()) == (200, {})
    cleared = SetCookie.of(logout)
    assert (cleared.name, cleared.value) == (COOKIE, "")
    assert cleared.attributes == [*COOKIE_ATTRIBUTES, "Max-Age=0"]
    after = http.post("/v1/auth:refresh", json={}, headers=browser(cookie=rotated.value))
    assert_error(after, 401, "REFRESH_TOKEN_INVALID")
    first = http.post("/v1/auth:refresh", json={}, headers=browser(cookie=cookie.value))
    assert first.status_code == 401, first.text
    # The remembered login is another session: it still refreshes, and its new cookie still
    # outlives the browser.
    still = http.post("/v1/auth:refresh", json={}, headers=browser(cookie=remembered.value))
    renewed = SetCookie.of(still)
    assert renewed.value not in ("", remembered.value)
    expires_in = tokens_of(still)["refreshExpiresIn"]
    assert renewed.attributes == [*COOKIE_ATTRIBUTES, f"Max-Age={expires_in}"]


# -- No enumeration -----------------------------------------------------------------------------


TIMING_TRIES = 40
# The bound on the difference of the medians: 5 %, or 3 ms when that is larger. Through the edge
# these calls take about 10 ms, nearly all of it the work both answers must do alike (composing
# and sealing a mail, the call to data_access and its transaction); a request refused before
# that work (a malformed address) answers in under 2 ms. An address answered without that work
# would therefore be several milliseconds faster, beyond 3 ms. 5 % alone, half a millisecond,
# is within what a shared machine's scheduler moves a median of 40 calls by between runs.
TIMING_RELATIVE_BOUND = 0.05
TIMING_ABSOLUTE_BOUND_SECONDS = 0.003


def median_seconds(http: httpx.Client, path: str, emails: Sequence[str]) -> list[float]:
    """Median duration of POST path for each email, over TIMING_TRIES tries of each, taken in
    alternating order so that drift in the machine's load hits both alike."""
    durations: list[list[float]] = [[] for _ in emails]
    for attempt in range(TIMING_TRIES):
        order = list(range(len(emails)))
        if attempt % 2:
            order.reverse()
        for index in order:
            started = time.perf_counter()
            reply = http.post(path, json={"email": emails[index]})
            durations[index].append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.text
    return [statistics.median(each) for each in durations]


@pytest.mark.parametrize(
    "path", ["/v1/auth:requestPasswordReset", "/v1/auth:resendVerificationEmail"]
)
def test_mail_requests_answer_alike_for_registered_and_unknown_addresses(
    http: httpx.Client, mesh: Mesh, path: str
) -> None:
    user = new_user()
    assert register(http, user).status_code == 200
    verification_token(mesh, user.email)
    unknown = f"nobody.{uuid.uuid4().hex[:10]}@example.com"

    # The same bytes and headers, whether or not the request sends a mail (a reset's first one
    # does; sign-up's mail started the cooldown of verification mails).
    for _ in range(2):
        known_reply = http.post(path, json={"email": user.email})
        unknown_reply = http.post(path, json={"email": unknown})
        assert known_reply.status_code == unknown_reply.status_code == 200
        assert known_reply.content == unknown_reply.content == b"{}"
        assert known_reply.headers["content-type"] == unknown_reply.headers["content-type"]

    # Both sides are past their first request now: the cooldown means the registered address
    # does the same store work as the unknown one from here on.
    known, stranger = median_seconds(http, path, [user.email, unknown])
    bound = max(TIMING_RELATIVE_BOUND * max(known, stranger), TIMING_ABSOLUTE_BOUND_SECONDS)
    assert abs(known - stranger) < bound, (known, stranger)
    assert not mails_to(mesh, unknown, 1, seconds=0)


# -- SMTP outage -------------------------------------------------------------------------------


# The sender retries a failed delivery after about 5 s, then 10 s, 20 s...
MAIL_RETRY_WAIT_SECONDS = 60.0


def test_mail_queued_while_smtp_is_down_arrives_once_it_is_back(
    http: httpx.Client, mesh: Mesh
) -> None:
    user = new_user()
    mesh.supervisor.stop(MAILBOX)
    try:
        assert register(http, user).status_code == 200
        # Sign-up does not wait for the mail: the sender tries, fails and keeps it.
        assert mails_to(mesh, user.email, 1, seconds=3) == []
    finally:
        mesh.start_mailbox(timeout=30)
    [mail] = mails_to(mesh, user.email, 1, seconds=MAIL_RETRY_WAIT_SECONDS)
    # Exactly once: no second copy turns up after the first (the sender polls every second).
    assert len(mails_to(mesh, user.email, 2, seconds=3)) == 1
    verified = http.post(
        "/v1/auth:verifyEmail", json={"token": link_token(mail, VERIFY_EMAIL_PATH)}
    )
    assert verified.status_code == 200, verified.text
    assert verified.json()["account"]["emailVerified"] is True


# -- Native gRPC and gRPC-web through the edge --------------------------------------------------


async def test_account_flows_over_native_grpc(edge_channel: grpc.aio.Channel, mesh: Mesh) -> None:
    auth: AuthServiceAsyncStub = auth_pb2_grpc.AuthServiceStub(edge_channel)
    user = new_user()
    address = user.email.lower()
    await auth.Register(
        auth_pb2.RegisterRequest(email=user.email, username=user.username, password=user.password)
    )
    token = await asyncio.to_thread(verification_token, mesh, address)
    verified = await auth.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token))
    assert (verified.account.email, verified.account.email_verified) == (address, True)
    used = await failure_of(auth.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token)))
    assert (used.code, used.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_TOKEN_INVALID")
    empty = await failure_of(auth.VerifyEmail(auth_pb2.VerifyEmailRequest(token="")))
    assert (empty.code, empty.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["token"])

    async def login(password: str, remember_me: bool = False) -> auth_pb2.TokenPair:
        reply = await auth.Login(
            auth_pb2.LoginRequest(email=user.email, password=password, remember_me=remember_me),
            metadata=(("x-meshgram-client-ip", SPOOFED_IP),),
        )
        return reply.tokens

    def as_owner(pair: auth_pb2.TokenPair) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {pair.access_token}"),)

    here, elsewhere = await login(user.password, remember_me=True), await login(user.password)
    assert (bool(here.refresh_token), here.refresh_token_in_cookie) == (True, False)

    # Change the password: the other session ends.
    new_password = strong_password()
    wrong = await failure_of(
        auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password="nope", new_password=new_password),
            metadata=as_owner(here),
        )
    )
    assert (wrong.code, wrong.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    weak = await failure_of(
        auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=user.password, new_password=WEAK_PASSWORD
            ),
            metadata=as_owner(here),
        )
    )
    assert (weak.code, weak.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["new_password"])
    anonymous = await failure_of(
        auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=user.password, new_password=new_password
            )
        )
    )
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED
    changed = await auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=user.password, new_password=new_password),
        metadata=as_owner(here),
    )
    assert changed.ended_sessions == 1
    gone = await failure_of(
        auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=elsewhere.refresh_token))
    )
    assert (gone.code, gone.reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")

    # Sessions: listed with the device the edge saw, ended one by one or all but this one.
    other = await login(new_password)
    listed = await auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=as_owner(here))
    by_id = {s.id: s for s in listed.sessions}
    assert list(by_id) == [other.session_id, here.session_id]
    assert [s.id for s in listed.sessions if s.current] == [here.session_id]
    assert (by_id[here.session_id].remembered, by_id[other.session_id].remembered) == (True, False)
    for session in listed.sessions:
        assert session.client_ip == "127.0.0.1"
        assert "grpc" in session.user_agent
    stranger_session = str(uuid.uuid4())
    for missing in (stranger_session, "not-a-session"):
        failure = await failure_of(
            auth.DeleteSession(
                auth_pb2.DeleteSessionRequest(session_id=missing), metadata=as_owner(here)
            )
        )
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    await auth.DeleteSession(
        auth_pb2.DeleteSessionRequest(session_id=other.session_id), metadata=as_owner(here)
    )
    ended = await failure_of(
        auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=other.refresh_token))
    )
    assert ended.reason == "REFRESH_TOKEN_INVALID"
    await login(new_password)
    swept = await auth.DeleteOtherSessions(
        auth_pb2.DeleteOtherSessionsRequest(), metadata=as_owner(here)
    )
    assert swept.ended_sessions == 1

    # Reset: every session ends, the token works once, the new password signs in.
    await auth.RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(email=user.email))
    reset_mail = await asyncio.to_thread(nth_mail, mesh, address, 1, MailKind.RESET_PASSWORD)
    reset_token = link_token(reset_mail, RESET_PASSWORD_PATH)
    final_password = strong_password()
    await auth.ResetPassword(
        auth_pb2.ResetPasswordRequest(token=reset_token, new_password=final_password)
    )
    again = await failure_of(
        auth.ResetPassword(
            auth_pb2.ResetPasswordRequest(token=reset_token, new_password=strong_password())
        )
    )
    assert (again.code, again.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_TOKEN_INVALID")
    revoked = await failure_of(
        auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=here.refresh_token))
    )
    assert revoked.reason == "REFRESH_TOKEN_INVALID"
    old = await failure_of(login(new_password))
    assert (old.code, old.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert (await login(final_password)).access_token


@dataclass(frozen=True)
class WebAnswer:
    """What a gRPC-web call answered: its messages, gRPC status, error reason and bad fields."""

    reply: httpx.Response
    messages: list[bytes]
    status: int
    reason: str = ""
    fields: list[str] = field(default_factory=list)


def web_auth(
    http: httpx.Client, method: str, request: Message, headers: dict[str, str] | None = None
) -> WebAnswer:
    """Call an AuthService method over gRPC-web from the app's page (Origin ORIGIN)."""
    reply = web_call(
        http, f"/meshgram.auth.v1.AuthService/{method}", request.SerializeToString(), headers
    )
    assert reply.status_code == 200, reply.text
    messages, trailers = grpc_web_unframe(reply.content)
    # An error comes as a trailers-only answer: its status travels in the headers.
    outcome = {**{key.lower(): value for key, value in reply.headers.items()}, **trailers}
    reason, fields = "", []
    details = outcome.get("grpc-status-details-bin", "")
    if details:
        status = status_pb2.Status.FromString(base64.b64decode(details + "=" * (-len(details) % 4)))
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields = [violation.field for violation in bad.field_violations]
    return WebAnswer(reply, messages, int(outcome["grpc-status"]), reason, fields)


def test_account_flows_over_grpc_web(http: httpx.Client, mesh: Mesh) -> None:
    user = new_user()
    address = user.email.lower()
    register_request = auth_pb2.RegisterRequest(
        email=user.email, username=user.username, password=user.password
    )
    assert web_auth(http, "Register", register_request).status == 0
    token = verification_token(mesh, address)
    verified = web_auth(http, "VerifyEmail", auth_pb2.VerifyEmailRequest(token=token))
    assert verified.status == 0
    account = auth_pb2.VerifyEmailResponse.FromString(verified.messages[0]).account
    assert account.email_verified
    used = web_auth(http, "VerifyEmail", auth_pb2.VerifyEmailRequest(token=token))
    assert (used.status, used.reason) == (
        grpc.StatusCode.NOT_FOUND.value[0],
        "ACCOUNT_TOKEN_INVALID",
    )

    def login(password: str) -> tuple[auth_pb2.TokenPair, str]:
        answer = web_auth(http, "Login", auth_pb2.LoginRequest(email=user.email, password=password))
        assert answer.status == 0, answer.reply.headers
        pair = auth_pb2.LoginResponse.FromString(answer.messages[0]).tokens
        # The page gets no refresh token, only the cookie.
        assert (pair.refresh_token, pair.refresh_token_in_cookie) == ("", True)
        cookie = SetCookie.of(answer.reply)
        assert (cookie.name, cookie.attributes) == (COOKIE, COOKIE_ATTRIBUTES)
        return pair, cookie.value

    def as_owner(pair: auth_pb2.TokenPair) -> dict[str, str]:
        return {"authorization": f"Bearer {pair.access_token}"}

    def refreshes(cookie: str) -> WebAnswer:
        return web_auth(
            http, "RefreshToken", auth_pb2.RefreshTokenRequest(), browser(cookie=cookie)
        )

    (here, _), (elsewhere, elsewhere_cookie) = login(user.password), login(user.password)

    new_password = strong_password()
    weak = web_auth(
        http,
        "ChangePassword",
        auth_pb2.ChangePasswordRequest(current_password=user.password, new_password=WEAK_PASSWORD),
        as_owner(here),
    )
    assert (weak.status, weak.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        ["new_password"],
    )
    changed = web_auth(
        http,
        "ChangePassword",
        auth_pb2.ChangePasswordRequest(current_password=user.password, new_password=new_password),
        as_owner(here),
    )
    assert changed.status == 0
    assert auth_pb2.ChangePasswordResponse.FromString(changed.messages[0]).ended_sessions == 1
    ended = refreshes(elsewhere_cookie)
    assert (ended.status, ended.reason) == (
        grpc.StatusCode.UNAUTHENTICATED.value[0],
        "REFRESH_TOKEN_INVALID",
    )

    other, other_cookie = login(new_password)
    listed = web_auth(http, "ListSessions", auth_pb2.ListSessionsRequest(), as_owner(here))
    sessions = auth_pb2.ListSessionsResponse.FromString(listed.messages[0]).sessions
    assert [(s.id, s.current) for s in sessions] == [
        (other.session_id, False),
        (here.session_id, True),
    ]
    assert {s.client_ip for s in sessions} == {"127.0.0.1"}
    # The session the password change ended is no longer there to end.
    over = web_auth(
        http,
        "DeleteSession",
        auth_pb2.DeleteSessionRequest(session_id=elsewhere.session_id),
        as_owner(here),
    )
    assert (over.status, over.reason) == (grpc.StatusCode.NOT_FOUND.value[0], "SESSION_NOT_FOUND")
    deleted = web_auth(
        http,
        "DeleteSession",
        auth_pb2.DeleteSessionRequest(session_id=other.session_id),
        as_owner(here),
    )
    assert deleted.status == 0
    assert refreshes(other_cookie).reason == "REFRESH_TOKEN_INVALID"
    login(new_password)
    swept = web_auth(
        http, "DeleteOtherSessions", auth_pb2.DeleteOtherSessionsRequest(), as_owner(here)
    )
    assert auth_pb2.DeleteOtherSessionsResponse.FromString(swept.messages[0]).ended_sessions == 1

    asked = web_auth(
        http, "RequestPasswordReset", auth_pb2.RequestPasswordResetRequest(email=user.email)
    )
    assert asked.status == 0
    reset_token = link_token(
        nth_mail(mesh, address, 1, MailKind.RESET_PASSWORD), RESET_PASSWORD_PATH
    )
    final_password = strong_password()
    reset_request = auth_pb2.ResetPasswordRequest(token=reset_token, new_password=final_password)
    assert web_auth(http, "ResetPassword", reset_request).status == 0
    again = web_auth(http, "ResetPassword", reset_request)
    assert (again.status, again.reason) == (
        grpc.StatusCode.NOT_FOUND.value[0],
        "ACCOUNT_TOKEN_INVALID",
    )
    login(final_password)
