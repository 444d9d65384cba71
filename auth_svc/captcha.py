"""CAPTCHA verification for logins: the client solves a widget (Cloudflare Turnstile, hCaptcha)
and sends its token; auth_svc asks the provider's siteverify endpoint whether the token is good.

Verification fails closed: a token the provider rejects is False, and a provider that cannot
give an answer (down, slow, misconfigured, answering nonsense) raises Unavailable with reason
CAPTCHA_UNAVAILABLE, so no login passes unchecked. Neither the secret nor a token is ever logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from meshkit.errors import Unavailable
from meshkit.reasons import Reason

log = logging.getLogger("auth_svc.captcha")

# Turnstile refuses longer tokens; checking here spares the provider a request it would refuse.
MAX_TOKEN_CHARS = 2048
# A siteverify answer is a few hundred bytes; anything much larger is not one.
MAX_ANSWER_BYTES = 64 * 1024
UNAVAILABLE_MESSAGE = "the CAPTCHA check is unavailable, please try again later"

# Codes that blame the client's token (missing, malformed, expired or already used): the answer
# is a plain "no". Any other code (our secret, site key or request is wrong, the provider failed,
# or a code this list does not know) means the provider could not judge the token. The last
# three are hCaptcha's, which shares the protocol.
CLIENT_ERROR_CODES = frozenset(
    {
        "missing-input-response",
        "invalid-input-response",
        "timeout-or-duplicate",
        "invalid-or-already-seen-response",
        "already-seen-response",
        "expired-input-response",
    }
)

# Requests to the provider share a few connections: enough for a burst of logins, while a slow
# provider makes logins wait for a connection (within the timeout) rather than open hundreds.
_MAX_CONNECTIONS = 20
_MAX_KEEPALIVE_CONNECTIONS = 10


class CaptchaVerifier(Protocol):
    """What auth_svc needs of a CAPTCHA: whether one is asked for, the widget's key, a check."""

    @property
    def enabled(self) -> bool:
        """False: no CAPTCHA is ever asked for."""
        ...

    @property
    def site_key(self) -> str:
        """The public key the client's widget needs ("" when disabled)."""
        ...

    async def verify(self, token: str, client_ip: str) -> bool:
        """Whether the token proves a solved CAPTCHA; raises Unavailable when that cannot be
        told."""
        ...

    async def aclose(self) -> None:
        """Release the connections held; the verifier is not used afterwards."""
        ...


class NoCaptcha:
    """The verifier when no provider is configured: never asks, accepts everything."""

    @property
    def enabled(self) -> bool:
        """Always False."""
        return False

    @property
    def site_key(self) -> str:
        """Always ""."""
        return ""

    async def verify(self, token: str, client_ip: str) -> bool:
        """Always True (nothing to check)."""
        return True

    async def aclose(self) -> None:
        """Nothing to release."""


class SiteverifyCaptcha:
    """A provider speaking siteverify (Turnstile, hCaptcha), asked over one shared HTTP client
    with a timeout per check, no redirects followed and a bounded number of connections."""

    def __init__(
        self,
        url: str,
        secret: str,
        site_key: str,
        timeout_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the CAPTCHA verify URL must be an http(s) URL with a host")
        if not secret:
            raise ValueError("a CAPTCHA verify URL needs a secret")
        if not timeout_seconds > 0:
            raise ValueError("the CAPTCHA timeout must be positive")
        self._url = url
        self._secret = secret
        self._site_key = site_key
        self._timeout_seconds = timeout_seconds
        # Logs name the provider by host only: a URL could carry credentials.
        self._provider = parts.netloc.rpartition("@")[2]
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            # A redirect is not an answer; following it could send the secret elsewhere.
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=_MAX_CONNECTIONS,
                max_keepalive_connections=_MAX_KEEPALIVE_CONNECTIONS,
            ),
            headers={"Accept": "application/json"},
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"SiteverifyCaptcha(provider={self._provider!r})"

    @property
    def enabled(self) -> bool:
        """Always True."""
        return True

    @property
    def site_key(self) -> str:
        """The site key given at construction."""
        return self._site_key

    async def verify(self, token: str, client_ip: str) -> bool:
        """True when the provider accepts the token, False when it rejects it (or it is empty
        or too long, without asking); raises Unavailable when the provider gives no usable
        answer. client_ip is passed on as remoteip when it is an IP address."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return False
        form = {"secret": self._secret, "response": token}
        # hCaptcha refuses a malformed remoteip with an error that would fail every check;
        # the field is optional, so one that is not an address is left out.
        if _is_ip_address(client_ip):
            form["remoteip"] = client_ip
        status, body = await self._ask(form)
        if status != 200:
            raise self._unavailable(f"the provider answered HTTP {status}")
        success, codes = self._parse(body)
        if success:
            return True
        if not CLIENT_ERROR_CODES.issuperset(codes):
            raise self._unavailable(f"the provider could not check the token: {_shown(codes)}")
        log.info("the CAPTCHA provider %s rejected a token: %s", self._provider, _shown(codes))
        return False

    async def aclose(self) -> None:
        """Close the shared HTTP client."""
        await self._client.aclose()

    async def _ask(self, form: dict[str, str]) -> tuple[int, bytes]:
        """POST the form; return the status and the body (at most MAX_ANSWER_BYTES + 1 bytes)."""
        try:
            # httpx's timeout applies to each phase; this bounds the whole exchange, so that a
            # provider trickling its answer cannot hold a login for longer.
            async with asyncio.timeout(self._timeout_seconds):
                async with self._client.stream("POST", self._url, data=form) as response:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_ANSWER_BYTES:
                            break
                    return response.status_code, bytes(body)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise self._unavailable(
                f"no answer within {self._timeout_seconds:g} s ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            # The exception's text names the failure (refused, reset, DNS); it never holds the
            # form, so neither the secret nor the token.
            raise self._unavailable(f"the request failed: {type(exc).__name__}: {exc}") from exc

    def _parse(self, body: bytes) -> tuple[bool, list[str]]:
        """The answer's success flag and error codes; Unavailable when it is not a siteverify
        answer."""
        if len(body) > MAX_ANSWER_BYTES:
            raise self._unavailable(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise self._unavailable("the answer is not JSON") from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("success"), bool):
            raise self._unavailable('the answer has no boolean "success"')
        codes = answer.get("error-codes", [])
        if not isinstance(codes, list) or not all(isinstance(code, str) for code in codes):
            raise self._unavailable('the answer\'s "error-codes" is not a list of strings')
        return answer["success"], codes

    def _unavailable(self, what: str) -> Unavailable:
        """Log what went wrong (never the secret or the token) and build the error to raise."""
        log.warning("CAPTCHA check unavailable (provider %s): %s", self._provider, what)
        return Unavailable(message=UNAVAILABLE_MESSAGE, reason=Reason.CAPTCHA_UNAVAILABLE)


def _shown(codes: list[str]) -> str:
    """Error codes as a log shows them: a few, each cut short (they come from outside)."""
    return ", ".join(repr(code[:64]) for code in codes[:8]) or "no error code"


def _is_ip_address(value: str) -> bool:
    """Whether value is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def build_captcha(
    verify_url: str, secret: str, site_key: str, timeout_seconds: float
) -> CaptchaVerifier:
    """NoCaptcha when verify_url is empty, else a SiteverifyCaptcha; ValueError when a URL comes
    without a secret (or the URL or timeout is unusable)."""
    if not verify_url:
        return NoCaptcha()
    return SiteverifyCaptcha(verify_url, secret, site_key, timeout_seconds)
