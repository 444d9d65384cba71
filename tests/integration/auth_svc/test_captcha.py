"""auth_svc's CAPTCHA check (auth_svc.captcha) against the development siteverify server
(tools.siteverify) over real HTTP on loopback: what passes, what fails, and that a provider which
cannot answer makes the check unavailable (CAPTCHA_UNAVAILABLE) instead of letting a login in."""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Iterator

import pytest

from auth_svc.captcha import NoCaptcha, SiteverifyCaptcha, build_captcha
from meshkit.errors import Unavailable
from meshkit.reasons import Reason
from tools.siteverify import DUMMY_TOKEN, Mode, SiteverifyServer

pytestmark = pytest.mark.integration

# Random, so that finding one in a log can only mean it leaked there.
SECRET = f"secret-{secrets.token_urlsafe(24)}"
PASSING = f"passing.{secrets.token_urlsafe(24)}"
WRONG = f"wrong.{secrets.token_urlsafe(24)}"
SITE_KEY = "0x4AAAAAAADevSiteKey"
CLIENT_IP = "203.0.113.7"
TIMEOUT = 0.5


@pytest.fixture
def siteverify() -> Iterator[SiteverifyServer]:
    """A siteverify server accepting SECRET, where PASSING passes once."""
    with SiteverifyServer(SECRET, tokens=(PASSING,), single_use=True) as server:
        yield server


@pytest.fixture
async def captcha(siteverify: SiteverifyServer) -> AsyncIterator[SiteverifyCaptcha]:
    """The verifier asking `siteverify`, with a short timeout."""
    verifier = SiteverifyCaptcha(siteverify.url, SECRET, SITE_KEY, timeout_seconds=TIMEOUT)
    yield verifier
    await verifier.aclose()


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After each test: no log line holds the secret or a token."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        for secret in (SECRET, PASSING, WRONG):
            assert secret not in text, f"{record.name} logged a secret: {text}"


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def assert_unavailable(check: Awaitable[bool], caplog: pytest.LogCaptureFixture) -> str:
    """Assert that the check raises CAPTCHA_UNAVAILABLE with the message a user sees, and that a
    warning says why; return the warning."""
    with pytest.raises(Unavailable) as caught:
        await check
    assert caught.value.reason is Reason.CAPTCHA_UNAVAILABLE
    assert caught.value.message == "the CAPTCHA check is unavailable, please try again later"
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "auth_svc.captcha" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    return warnings[0]


async def test_a_passing_token_passes_and_the_client_address_reaches_the_provider(
    captcha: SiteverifyCaptcha, siteverify: SiteverifyServer
) -> None:
    assert captcha.enabled
    assert captcha.site_key == SITE_KEY

    assert await captcha.verify(PASSING, CLIENT_IP) is True

    assert siteverify.requests == [{"response": PASSING, "remoteip": CLIENT_IP}]


@pytest.mark.parametrize("client_ip", ["2001:db8::7", ""])
async def test_remoteip_is_an_address_or_left_out(
    siteverify: SiteverifyServer, client_ip: str
) -> None:
    # An empty client address (unknown) is not sent: the field is optional.
    verifier = SiteverifyCaptcha(siteverify.url, SECRET, SITE_KEY, timeout_seconds=TIMEOUT)
    try:
        assert await verifier.verify(PASSING, client_ip) is True
    finally:
        await verifier.aclose()

    expected = {"response": PASSING, "remoteip": client_ip} if client_ip else {"response": PASSING}
    assert siteverify.requests == [expected]


async def test_a_wrong_token_fails(
    captcha: SiteverifyCaptcha, siteverify: SiteverifyServer
) -> None:
    assert await captcha.verify(WRONG, CLIENT_IP) is False
    assert [r["response"] for r in siteverify.requests] == [WRONG]


async def test_a_single_use_token_passes_only_once(captcha: SiteverifyCaptcha) -> None:
    assert await captcha.verify(PASSING, CLIENT_IP) is True
    assert await captcha.verify(PASSING, CLIENT_IP) is False


async def test_the_development_default_lets_the_dummy_token_pass_again_and_again() -> None:
    with SiteverifyServer(SECRET) as server:
        verifier = SiteverifyCaptcha(server.url, SECRET, SITE_KEY, timeout_seconds=TIMEOUT)
        try:
            assert await verifier.verify(DUMMY_TOKEN, CLIENT_IP) is True
            assert await verifier.verify(DUMMY_TOKEN, CLIENT_IP) is True
            assert await verifier.verify(WRONG, CLIENT_IP) is False
        finally:
            await verifier.aclose()


@pytest.mark.parametrize("token", ["", "x" * 2049], ids=["empty", "longer-than-2048"])
async def test_an_empty_or_oversized_token_fails_without_asking_the_provider(
    captcha: SiteverifyCaptcha, siteverify: SiteverifyServer, token: str
) -> None:
    assert await captcha.verify(token, CLIENT_IP) is False
    assert siteverify.requests == []


async def test_a_token_of_2048_characters_is_still_asked_about(
    captcha: SiteverifyCaptcha, siteverify: SiteverifyServer
) -> None:
    assert await captcha.verify("x" * 2048, CLIENT_IP) is False
    assert len(siteverify.requests) == 1


async def test_a_wrong_secret_makes_the_check_unavailable(
    siteverify: SiteverifyServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A misconfiguration must not read as "the user failed the CAPTCHA" (they could never pass).
    verifier = SiteverifyCaptcha(siteverify.url, "not-the-secret", SITE_KEY, TIMEOUT)
    try:
        warning = await assert_unavailable(verifier.verify(PASSING, CLIENT_IP), caplog)
    finally:
        await verifier.aclose()
    assert "invalid-input-secret" in warning
    assert "not-the-secret" not in caplog.text


@pytest.mark.parametrize(
    ("mode", "explained"),
    [("http-500", "HTTP 500"), ("not-json", "not JSON")],
)
async def test_a_provider_answering_nonsense_makes_the_check_unavailable(
    captcha: SiteverifyCaptcha,
    siteverify: SiteverifyServer,
    caplog: pytest.LogCaptureFixture,
    mode: Mode,
    explained: str,
) -> None:
    siteverify.mode = mode
    warning = await assert_unavailable(captcha.verify(PASSING, CLIENT_IP), caplog)
    assert explained in warning


async def test_a_hanging_provider_makes_the_check_unavailable_within_the_timeout(
    captcha: SiteverifyCaptcha, siteverify: SiteverifyServer, caplog: pytest.LogCaptureFixture
) -> None:
    siteverify.mode = "hang"
    started = time.monotonic()
    warning = await assert_unavailable(captcha.verify(PASSING, CLIENT_IP), caplog)
    elapsed = time.monotonic() - started
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 0.5
    assert "no answer within 0.5 s" in warning
    assert len(siteverify.requests) == 1, "the request did reach the provider"


async def test_a_provider_not_listening_makes_the_check_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/siteverify"
    verifier = SiteverifyCaptcha(url, SECRET, SITE_KEY, timeout_seconds=TIMEOUT)
    try:
        warning = await assert_unavailable(verifier.verify(PASSING, CLIENT_IP), caplog)
    finally:
        await verifier.aclose()
    assert "ConnectError" in warning


async def test_without_a_verify_url_no_captcha_is_asked_for() -> None:
    verifier = build_captcha("", "", "", 5.0)
    assert isinstance(verifier, NoCaptcha)
    assert verifier.enabled is False
    assert verifier.site_key == ""
    assert await verifier.verify("", CLIENT_IP) is True
    await verifier.aclose()


async def test_a_verify_url_builds_a_working_verifier(siteverify: SiteverifyServer) -> None:
    verifier = build_captcha(siteverify.url, SECRET, SITE_KEY, TIMEOUT)
    try:
        assert verifier.enabled is True
        assert verifier.site_key == SITE_KEY
        assert await verifier.verify(PASSING, CLIENT_IP) is True
    finally:
        await verifier.aclose()


def test_a_verify_url_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        build_captcha("https://challenges.cloudflare.com/turnstile/v0/siteverify", "", "k", 5.0)
