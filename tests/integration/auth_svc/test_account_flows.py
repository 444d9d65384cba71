"""Email verification, password change and reset, sessions and browser cookies, end to end
through real stubs: auth_svc -> data_access -> PostgreSQL, and real mail through a real SMTP
server (tools.mailbox) on loopback."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import grpc
import jwt
import pytest

from meshgram.auth.v1 import auth_pb2
from tests.helpers import failure_of
from tests.integration.conftest import BROWSER_ORIGIN
from tools.mailbox import StoredMail, read_mail, stored_mails

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    from meshgram.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub as Stub

MAIL_WAIT_SECONDS = 15.0
COOKIE = "__Host-meshgram-refresh"


@dataclass(frozen=True)
class Person:
    """A registered account and its password."""

    email: str
    username: str
    password: str


async def register(stub: Stub) -> Person:
    """Register a unique account."""
    tag = uuid.uuid4().hex[:10]
    person = Person(f"flow.{tag}@example.com", f"flow_{tag}", f"maple quartz {tag}")
    await stub.Register(
        auth_pb2.RegisterRequest(
            email=person.email, username=person.username, password=person.password
        )
    )
    return person


async def mails_to(mail_dir: Path, address: str, count: int) -> list[StoredMail]:
    """Wait until `count` mails to address are stored (sent by the sender loop); return them."""
    deadline = time.monotonic() + MAIL_WAIT_SECONDS
    while True:
        found = [m for p in stored_mails(mail_dir) if address in (m := read_mail(p)).recipients()]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"{len(found)} of {count} mails to {address} arrived"
            return found
        await asyncio.sleep(0.1)


def token_of(mail: StoredMail, path: str) -> str:
    """The token in the mail's link to the page at path."""
    [link] = [link for link in mail.links() if urlsplit(link).path == path]
    fragment = urlsplit(link).fragment
    assert fragment.startswith("token="), link
    return fragment.removeprefix("token=")


async def login(
    stub: Stub, person: Person, *, remember_me: bool = False, metadata: tuple = ()
) -> auth_pb2.TokenPair:
    """Log in as person."""
    response = await stub.Login(
        auth_pb2.LoginRequest(
            email=person.email, password=person.password, remember_me=remember_me
        ),
        metadata=metadata,
    )
    return response.tokens


def bearer(pair: auth_pb2.TokenPair) -> tuple[tuple[str, str], ...]:
    """Metadata authenticating with the pair's access token."""
    return (("authorization", f"Bearer {pair.access_token}"),)


def claims(pair: auth_pb2.TokenPair) -> dict[str, object]:
    """The (unverified) claims of the pair's access token."""
    return jwt.decode(pair.access_token, options={"verify_signature": False})


async def test_sign_up_mails_a_link_that_verifies_the_address_once(
    auth_stub: Stub, mail_dir: Path
) -> None:
    person = await register(auth_stub)
    [mail] = await mails_to(mail_dir, person.email, 1)
    assert "confirm your email" in str(mail.message["Subject"]).lower()
    assert mail.message.get_body(("html",)) is not None
    token = token_of(mail, "/account/verify-email")
    assert claims(await login(auth_stub, person))["email_verified"] is False

    verified = await auth_stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token))
    assert (verified.account.email, verified.account.email_verified) == (person.email, True)
    assert claims(await login(auth_stub, person))["email_verified"] is True

    again = await failure_of(auth_stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token)))
    assert (again.code, again.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_TOKEN_INVALID")
    # Once verified, asking for another link sends nothing (and says nothing).
    await auth_stub.ResendVerificationEmail(
        auth_pb2.ResendVerificationEmailRequest(email=person.email)
    )
    await asyncio.sleep(1.0)
    assert len(await mails_to(mail_dir, person.email, 1)) == 1


@pytest.mark.parametrize("token", ["", "   ", "not-a-token", "x" * 5000])
async def test_unusable_verification_tokens(auth_stub: Stub, token: str) -> None:
    failure = await failure_of(auth_stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token)))
    if token.strip():
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.NOT_FOUND,
            "ACCOUNT_TOKEN_INVALID",
        )
    else:
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["token"])


async def test_twenty_concurrent_uses_of_one_verification_token_succeed_once(
    auth_stub: Stub, mail_dir: Path
) -> None:
    person = await register(auth_stub)
    token = token_of((await mails_to(mail_dir, person.email, 1))[0], "/account/verify-email")
    request = auth_pb2.VerifyEmailRequest(token=token)
    outcomes = await asyncio.gather(
        *(auth_stub.VerifyEmail(request) for _ in range(20)), return_exceptions=True
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    failures = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert {f.code() for f in failures} == {grpc.StatusCode.NOT_FOUND}
    assert len(failures) == 19


async def test_resend_answers_alike_and_keeps_to_its_cooldown(
    auth_stub: Stub, mail_dir: Path
) -> None:
    person = await register(auth_stub)
    await mails_to(mail_dir, person.email, 1)
    stranger = f"nobody.{uuid.uuid4().hex[:8]}@example.com"
    # Sign-up's mail started the cooldown (2 s here): a resend now sends nothing.
    for email in (person.email, stranger):
        reply = await auth_stub.ResendVerificationEmail(
            auth_pb2.ResendVerificationEmailRequest(email=email)
        )
        assert reply == auth_pb2.ResendVerificationEmailResponse()
    await asyncio.sleep(2.5)
    await auth_stub.ResendVerificationEmail(
        auth_pb2.ResendVerificationEmailRequest(email=person.email.upper())
    )
    first, second = await mails_to(mail_dir, person.email, 2)
    # Both links work until one is used; then the other is used up with it.
    second_token = token_of(second, "/account/verify-email")
    await auth_stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=second_token))
    stale = await failure_of(
        auth_stub.VerifyEmail(
            auth_pb2.VerifyEmailRequest(token=token_of(first, "/account/verify-email"))
        )
    )
    assert stale.code == grpc.StatusCode.NOT_FOUND
    assert all(stranger not in read_mail(p).recipients() for p in stored_mails(mail_dir))
    malformed = await failure_of(
        auth_stub.ResendVerificationEmail(auth_pb2.ResendVerificationEmailRequest(email="nope"))
    )
    assert (malformed.code, malformed.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["email"])


async def test_password_reset_sets_the_password_and_ends_every_session(
    auth_stub: Stub, mail_dir: Path
) -> None:
    person = await register(auth_stub)
    sessions = [await login(auth_stub, person) for _ in range(2)]
    await mails_to(mail_dir, person.email, 1)
    for email in (person.email, f"nobody.{uuid.uuid4().hex[:8]}@example.com"):
        reply = await auth_stub.RequestPasswordReset(
            auth_pb2.RequestPasswordResetRequest(email=email)
        )
        assert reply == auth_pb2.RequestPasswordResetResponse()
    reset_mail = (await mails_to(mail_dir, person.email, 2))[-1]
    token = token_of(reset_mail, "/account/reset-password")

    weak = await failure_of(
        auth_stub.ResetPassword(
            auth_pb2.ResetPasswordRequest(token=token, new_password="password1")
        )
    )
    assert (weak.code, weak.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["new_password"])
    new_password = f"velvet harbor {uuid.uuid4().hex[:6]}"
    await auth_stub.ResetPassword(
        auth_pb2.ResetPasswordRequest(token=token, new_password=new_password)
    )
    for pair in sessions:
        ended = await failure_of(
            auth_stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=pair.refresh_token))
        )
        assert ended.reason == "REFRESH_TOKEN_INVALID"
    old = await failure_of(login(auth_stub, person))
    assert old.reason == "INVALID_CREDENTIALS"
    renewed = await login(auth_stub, Person(person.email, person.username, new_password))
    # The reset proved the mailbox: the address counts as verified.
    assert claims(renewed)["email_verified"] is True
    used = await failure_of(
        auth_stub.ResetPassword(
            auth_pb2.ResetPasswordRequest(token=token, new_password=new_password)
        )
    )
    assert (used.code, used.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_TOKEN_INVALID")
    notice = (await mails_to(mail_dir, person.email, 3))[-1]
    assert "changed" in str(notice.message["Subject"]).lower()
    assert token not in notice.text()


async def test_changing_the_password_keeps_this_session_and_ends_the_others(
    auth_stub: Stub, mail_dir: Path
) -> None:
    person = await register(auth_stub)
    here, elsewhere, third = [await login(auth_stub, person) for _ in range(3)]
    wrong = await failure_of(
        auth_stub.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password="not it", new_password="velvet harbor lantern"
            ),
            metadata=bearer(here),
        )
    )
    assert (wrong.code, wrong.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    weak = await failure_of(
        auth_stub.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=person.password, new_password=person.username
            ),
            metadata=bearer(here),
        )
    )
    assert (weak.code, weak.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["new_password"])
    anonymous = await failure_of(
        auth_stub.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=person.password, new_password="velvet harbor lantern"
            )
        )
    )
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED

    changed = await auth_stub.ChangePassword(
        auth_pb2.ChangePasswordRequest(
            current_password=person.password, new_password="velvet harbor lantern"
        ),
        metadata=bearer(here),
    )
    assert changed.ended_sessions == 2
    for pair in (elsewhere, third):
        ended = await failure_of(
            auth_stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=pair.refresh_token))
        )
        assert ended.reason == "REFRESH_TOKEN_INVALID"
    await auth_stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=here.refresh_token))
    notice = (await mails_to(mail_dir, person.email, 2))[-1]
    assert "changed" in str(notice.message["Subject"]).lower()


async def test_sessions_list_their_devices_and_end_one_or_all_others(auth_stub: Stub) -> None:
    person = await register(auth_stub)
    phone = await login(
        auth_stub,
        person,
        remember_me=True,
        metadata=(("x-meshgram-client-ip", "203.0.113.7"),),
    )
    laptop = await login(auth_stub, person)
    tablet = await login(auth_stub, person)
    listed = (
        await auth_stub.ListSessions(auth_pb2.ListSessionsRequest(), metadata=bearer(laptop))
    ).sessions
    assert {s.id for s in listed} == {phone.session_id, laptop.session_id, tablet.session_id}
    by_id = {s.id: s for s in listed}
    assert [s.id for s in listed if s.current] == [laptop.session_id]
    # The test's peer is loopback, a trusted proxy: the stated client address is recorded.
    assert by_id[phone.session_id].client_ip == "203.0.113.7"
    assert by_id[laptop.session_id].client_ip == "127.0.0.1"
    assert by_id[phone.session_id].remembered
    assert not by_id[laptop.session_id].remembered
    assert "grpc" in by_id[laptop.session_id].user_agent

    await auth_stub.DeleteSession(
        auth_pb2.DeleteSessionRequest(session_id=tablet.session_id), metadata=bearer(laptop)
    )
    gone = await failure_of(
        auth_stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=tablet.refresh_token))
    )
    assert gone.reason == "REFRESH_TOKEN_INVALID"
    for missing in (tablet.session_id, str(uuid.uuid4()), "not-a-session"):
        failure = await failure_of(
            auth_stub.DeleteSession(
                auth_pb2.DeleteSessionRequest(session_id=missing), metadata=bearer(laptop)
            )
        )
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    # Someone else's session is not found either.
    stranger = await login(auth_stub, await register(auth_stub))
    foreign = await failure_of(
        auth_stub.DeleteSession(
            auth_pb2.DeleteSessionRequest(session_id=phone.session_id), metadata=bearer(stranger)
        )
    )
    assert foreign.reason == "SESSION_NOT_FOUND"

    others = await auth_stub.DeleteOtherSessions(
        auth_pb2.DeleteOtherSessionsRequest(), metadata=bearer(laptop)
    )
    assert others.ended_sessions == 1
    left = (
        await auth_stub.ListSessions(auth_pb2.ListSessionsRequest(), metadata=bearer(laptop))
    ).sessions
    assert [s.id for s in left] == [laptop.session_id]


def set_cookie_of(call_metadata: grpc.aio.Metadata | None) -> str:
    """The one set-cookie header of a response."""
    values = [v for k, v in (call_metadata or ()) if k == "set-cookie"]
    assert len(values) == 1, values
    return str(values[0])


async def test_browsers_get_the_refresh_token_only_in_a_host_cookie(auth_stub: Stub) -> None:
    person = await register(auth_stub)
    browser = (("origin", BROWSER_ORIGIN),)
    call = auth_stub.Login(
        auth_pb2.LoginRequest(email=person.email, password=person.password), metadata=browser
    )
    tokens = (await call).tokens
    cookie = set_cookie_of(await call.initial_metadata())
    assert (tokens.refresh_token, tokens.refresh_token_in_cookie) == ("", True)
    name, _, rest = cookie.partition("=")
    value, *attributes = [part.strip() for part in rest.split(";")]
    assert name == COOKIE
    assert value
    assert {"Path=/", "Secure", "HttpOnly", "SameSite=Strict"} <= set(attributes)
    # Without remember-me the cookie ends with the browser session.
    assert not any(a.startswith("Max-Age") for a in attributes)

    with_cookie = (*browser, ("cookie", f"theme=dark; {COOKIE}={value}"))
    call = auth_stub.RefreshToken(auth_pb2.RefreshTokenRequest(), metadata=with_cookie)
    refreshed = (await call).tokens
    successor = set_cookie_of(await call.initial_metadata()).partition("=")[2].split(";")[0]
    assert refreshed.refresh_token == ""
    assert successor not in ("", value)

    forged = await failure_of(
        auth_stub.RefreshToken(
            auth_pb2.RefreshTokenRequest(),
            metadata=(("origin", "https://evil.example"), ("cookie", f"{COOKIE}={successor}")),
        )
    )
    assert (forged.code, forged.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ORIGIN_NOT_ALLOWED")
    no_origin = await failure_of(
        auth_stub.RefreshToken(
            auth_pb2.RefreshTokenRequest(), metadata=(("cookie", f"{COOKIE}={successor}"),)
        )
    )
    assert no_origin.code == grpc.StatusCode.PERMISSION_DENIED

    call = auth_stub.Logout(
        auth_pb2.LogoutRequest(), metadata=(*browser, ("cookie", f"{COOKIE}={successor}"))
    )
    await call
    assert "Max-Age=0" in set_cookie_of(await call.initial_metadata())
    after = await failure_of(
        auth_stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=successor))
    )
    assert after.reason == "REFRESH_TOKEN_INVALID"


async def test_remembered_browser_sessions_get_a_lasting_cookie(auth_stub: Stub) -> None:
    person = await register(auth_stub)
    call = auth_stub.Login(
        auth_pb2.LoginRequest(email=person.email, password=person.password, remember_me=True),
        metadata=(("origin", BROWSER_ORIGIN),),
    )
    tokens = (await call).tokens
    cookie = set_cookie_of(await call.initial_metadata())
    assert f"Max-Age={tokens.refresh_expires_in}" in cookie
    # Native clients (no Origin) keep the token in the body, and no cookie.
    native = auth_stub.Login(auth_pb2.LoginRequest(email=person.email, password=person.password))
    assert (await native).tokens.refresh_token
    assert not [k for k, _ in (await native.initial_metadata() or ()) if k == "set-cookie"]


async def test_signing_up_with_a_registered_email_answers_as_for_a_new_one_and_tells_its_owner(
    auth_stub: Stub, mail_dir: Path
) -> None:
    owner = await register(auth_stub)
    await mails_to(mail_dir, owner.email, 1)
    tag = uuid.uuid4().hex[:10]
    attempt = auth_pb2.RegisterRequest(
        email=owner.email.upper(), username=f"other_{tag}", password=f"maple quartz {tag}"
    )
    reply = await auth_stub.Register(attempt)
    fresh = await auth_stub.Register(
        auth_pb2.RegisterRequest(
            email=f"fresh.{tag}@example.com",
            username=f"fresh_{tag}",
            password=f"maple quartz {tag}",
        )
    )
    # The same shape as a real sign-up: an id (of no account), the email, the username.
    assert len(reply.account.ListFields()) == len(fresh.account.ListFields())
    assert (reply.account.email, reply.account.username) == (owner.email, f"other_{tag}")
    assert reply.account.id != fresh.account.id
    uuid.UUID(reply.account.id)
    notice = (await mails_to(mail_dir, owner.email, 2))[-1]
    assert "tried to create a meshgram account" in notice.text()
    assert "#token=" not in notice.text()
    # The owner's password still works, and no account was made for the attempt's password.
    await login(auth_stub, owner)
    refused = await failure_of(
        login(auth_stub, Person(owner.email, f"other_{tag}", f"maple quartz {tag}"))
    )
    assert refused.reason == "INVALID_CREDENTIALS"
    # Another attempt within the cooldown (2 s here) answers the same and mails nothing more.
    again = await auth_stub.Register(
        auth_pb2.RegisterRequest(
            email=owner.email, username=f"third_{tag}", password=f"maple quartz {tag}"
        )
    )
    assert again.account.email == owner.email
    await asyncio.sleep(1.0)
    assert len(await mails_to(mail_dir, owner.email, 2)) == 2
