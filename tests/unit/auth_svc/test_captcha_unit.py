"""auth_svc.captcha without a network: how each kind of siteverify answer is read (through
httpx's in-memory transport, which runs the whole client but no socket), what is sent, and which
configurations are refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from auth_svc.captcha import MAX_ANSWER_BYTES, NoCaptcha, SiteverifyCaptcha, build_captcha
from meshkit.errors import Unavailable
from meshkit.reasons import Reason

URL = "https://captcha.example/siteverify"
SECRET = "unit-secret-value"
TOKEN = "unit-token-value"


def verifier_answering(
    handler: Callable[[httpx.Request], httpx.Response],
) -> tuple[SiteverifyCaptcha, list[httpx.Request]]:
    """A verifier whose provider is handler; and the list of requests it gets."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    verifier = SiteverifyCaptcha(URL, SECRET, "site", 1.0, transport=httpx.MockTransport(record))
    return verifier, seen


def answering(answer: Any) -> Callable[[httpx.Request], httpx.Response]:
    """A provider answering 200 with this JSON."""
    body = json.dumps(answer).encode()
    return lambda request: httpx.Response(
        200, content=body, headers={"Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    ("answer", "passes"),
    [
        ({"success": True}, True),
        ({"success": True, "error-codes": []}, True),
        ({"success": False, "error-codes": ["invalid-input-response"]}, False),
        ({"success": False, "error-codes": ["timeout-or-duplicate"]}, False),
        ({"success": False, "error-codes": ["missing-input-response"]}, False),
        ({"success": False, "error-codes": ["invalid-or-already-seen-response"]}, False),
        ({"success": False}, False),
    ],
)
async def test_the_answer_decides(answer: dict[str, Any], passes: bool) -> None:
    verifier, _ = verifier_answering(answering(answer))
    try:
        assert await verifier.verify(TOKEN, "198.51.100.1") is passes
    finally:
        await verifier.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        {"success": False, "error-codes": ["invalid-input-secret"]},
        {"success": False, "error-codes": ["missing-input-secret"]},
        {"success": False, "error-codes": ["internal-error"]},
        {"success": False, "error-codes": ["invalid-input-response", "internal-error"]},
        {"success": False, "error-codes": ["sitekey-secret-mismatch"]},
        {"success": False, "error-codes": ["bad-request"]},
        {"success": False, "error-codes": "invalid-input-response"},
        {"success": "true"},
        {"error-codes": []},
        [True],
        None,
    ],
)
async def test_an_answer_that_does_not_judge_the_token_makes_the_check_unavailable(
    answer: Any,
) -> None:
    verifier, _ = verifier_answering(answering(answer))
    try:
        with pytest.raises(Unavailable) as caught:
            await verifier.verify(TOKEN, "198.51.100.1")
    finally:
        await verifier.aclose()
    assert caught.value.reason is Reason.CAPTCHA_UNAVAILABLE


async def test_an_oversized_answer_makes_the_check_unavailable() -> None:
    padding = "x" * MAX_ANSWER_BYTES
    verifier, _ = verifier_answering(answering({"success": True, "padding": padding}))
    try:
        with pytest.raises(Unavailable):
            await verifier.verify(TOKEN, "198.51.100.1")
    finally:
        await verifier.aclose()


async def test_a_redirect_is_not_followed() -> None:
    # Following it would hand the secret to whatever the redirect names.
    def redirect(request: httpx.Request) -> httpx.Response:
        if request.url.host == "captcha.example":
            return httpx.Response(302, headers={"Location": "https://elsewhere.example/verify"})
        return httpx.Response(200, json={"success": True})

    verifier, seen = verifier_answering(redirect)
    try:
        with pytest.raises(Unavailable):
            await verifier.verify(TOKEN, "198.51.100.1")
    finally:
        await verifier.aclose()
    assert [r.url.host for r in seen] == ["captcha.example"]


@pytest.mark.parametrize(
    ("client_ip", "remoteip"),
    [("198.51.100.1", ["198.51.100.1"]), ("::1", ["::1"]), ("", None), ("ipv4:1.2.3.4:5", None)],
)
async def test_the_form_carries_secret_token_and_an_address_only(
    client_ip: str, remoteip: list[str] | None
) -> None:
    verifier, seen = verifier_answering(answering({"success": True}))
    try:
        assert await verifier.verify(TOKEN, client_ip) is True
    finally:
        await verifier.aclose()
    (request,) = seen
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.content.decode())
    assert form.get("secret") == [SECRET]
    assert form.get("response") == [TOKEN]
    assert form.get("remoteip") == remoteip


async def test_no_captcha_never_asks_and_accepts_everything() -> None:
    verifier = NoCaptcha()
    assert verifier.enabled is False
    assert verifier.site_key == ""
    assert await verifier.verify("", "") is True
    assert await verifier.verify("anything", "198.51.100.1") is True
    await verifier.aclose()


def test_build_captcha_without_url_is_no_captcha() -> None:
    assert isinstance(build_captcha("", "ignored", "ignored", 5.0), NoCaptcha)


@pytest.mark.parametrize(
    ("url", "secret", "timeout", "complaint"),
    [
        (URL, "", 5.0, "secret"),
        ("captcha.example/siteverify", SECRET, 5.0, "URL"),
        ("ftp://captcha.example/siteverify", SECRET, 5.0, "URL"),
        (URL, SECRET, 0.0, "timeout"),
    ],
)
def test_build_captcha_refuses_an_unusable_configuration(
    url: str, secret: str, timeout: float, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        build_captcha(url, secret, "site", timeout)


async def test_the_verifier_does_not_show_its_secret() -> None:
    verifier = build_captcha(URL, SECRET, "site", 5.0)
    try:
        assert verifier.enabled is True
        assert verifier.site_key == "site"
        assert SECRET not in repr(verifier)
    finally:
        await verifier.aclose()
