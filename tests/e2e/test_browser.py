"""The sign-up page of tests/e2e/web in a real headless Chromium, calling the edge with gRPC-web.

The page is served from another origin than the edge, so the browser does everything a web app's
gRPC-web client lives with: CORS preflights, the allow-list, reading grpc-status from trailer
frames and (for errors without a body) from exposed response headers.

Network traffic is watched in two ways. Playwright's request/response events show the page's
fetches but not CORS preflights, so preflights are read from the Chrome DevTools Protocol. No
test uses page.route: with interception on, Playwright answers preflights itself and would let
any origin through.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import grpc
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    async_playwright,
)

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.e2e.support import NewUser, grpc_web_frame, new_user

CHROMIUM_CANDIDATES = (Path("/usr/bin/chromium"), Path("/usr/lib/chromium/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RPC_PATHS = (
    "/meshgram.auth.v1.AuthService/Register",
    "/meshgram.auth.v1.AuthService/Login",
    "/meshgram.user.v1.UserService/GetMyProfile",
)
REGISTER = RPC_PATHS[0]
# The result element once the page has finished (any state but idle and pending).
SETTLED = '#result:not([data-state="idle"]):not([data-state="pending"])'
# How long network events may trail the page's own update of the result.
SETTLE_SECONDS = 5.0


def chromium_executable() -> Path:
    """The system Chromium; the test fails (never skips) without one."""
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    searched = ", ".join(map(str, CHROMIUM_CANDIDATES))
    pytest.fail(f"no Chromium found at {searched}: apt-get install chromium")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module's tests; each test opens its own context."""
    executable = chromium_executable()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Preflight:
    """A CORS preflight the browser sent to the edge, as DevTools saw its answer."""

    path: str
    status: int
    allow_origin: str | None


@dataclass
class Fetch:
    """A gRPC-web POST that got an HTTP response."""

    path: str
    status: int
    grpc_status_header: str | None


@dataclass
class Traffic:
    """What the page exchanged with the edge, and what it logged as errors."""

    edge: str
    preflights: list[Preflight] = field(default_factory=list)
    fetches: list[Fetch] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """Paths of edge requests that failed without a response."""
    cors_errors: list[tuple[str, str]] = field(default_factory=list)
    """(path, DevTools' corsError) of requests the browser blocked."""
    console_errors: list[str] = field(default_factory=list)
    _urls: dict[str, str] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def edge_path(self, url: str) -> str | None:
        """The path of url when it points at the edge."""
        parts = urlsplit(url)
        return parts.path if f"{parts.scheme}://{parts.netloc}" == self.edge else None

    def on_response(self, response: Response) -> None:
        path = self.edge_path(response.url)
        if path is not None and response.request.method == "POST":
            self.fetches.append(Fetch(path, response.status, response.headers.get("grpc-status")))
            self._changed.set()

    def on_request_failed(self, request: Request) -> None:
        path = self.edge_path(request.url)
        if path is not None:
            self.failed.append(path)
            self._changed.set()

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)
            self._changed.set()

    def on_devtools_request(self, event: dict[str, Any]) -> None:
        self._urls[event["requestId"]] = event["request"]["url"]

    def on_devtools_response(self, event: dict[str, Any]) -> None:
        response = event["response"]
        path = self.edge_path(response["url"])
        if path is not None and event["type"] == "Preflight":
            headers = {key.lower(): value for key, value in response["headers"].items()}
            self.preflights.append(
                Preflight(path, response["status"], headers.get("access-control-allow-origin"))
            )
            self._changed.set()

    def on_devtools_failure(self, event: dict[str, Any]) -> None:
        path = self.edge_path(self._urls.get(event["requestId"], ""))
        cors = event.get("corsErrorStatus")
        if path is not None and cors:
            self.cors_errors.append((path, cors["corsError"]))
            self._changed.set()

    async def settle(self, done: Callable[[Traffic], bool]) -> None:
        """Wait until done(self) holds; fails after SETTLE_SECONDS."""
        async with asyncio.timeout(SETTLE_SECONDS):
            while not done(self):
                self._changed.clear()
                await self._changed.wait()


@dataclass
class SignupPage:
    """The page in a fresh browser context, with its traffic recorded."""

    page: Page
    traffic: Traffic

    async def sign_up(self, user: NewUser) -> tuple[str, str]:
        """Fill the form, press the button, wait for the outcome; returns (state, text)."""
        await self.page.fill("#email", user.email)
        await self.page.fill("#username", user.username)
        await self.page.fill("#password", user.password)
        await self.page.click("text=Sign up and load my profile")
        result = await self.page.wait_for_selector(SETTLED)
        assert result is not None
        return await result.get_attribute("data-state") or "", await result.inner_text()


OpenPage = Callable[[str], Awaitable[SignupPage]]


@pytest.fixture
async def open_page(browser: Browser, edge_url: str) -> AsyncIterator[OpenPage]:
    """Open the sign-up page served from an origin, pointed at the edge; closed after the test."""
    contexts: list[BrowserContext] = []

    async def open_from(origin: str) -> SignupPage:
        context = await browser.new_context()
        contexts.append(context)
        context.set_default_timeout(15_000)
        page = await context.new_page()
        traffic = Traffic(edge_url)
        page.on("response", traffic.on_response)
        page.on("requestfailed", traffic.on_request_failed)
        page.on("console", traffic.on_console)
        devtools = await context.new_cdp_session(page)
        devtools.on("Network.requestWillBeSent", traffic.on_devtools_request)
        devtools.on("Network.responseReceived", traffic.on_devtools_response)
        devtools.on("Network.loadingFailed", traffic.on_devtools_failure)
        await devtools.send("Network.enable")
        await page.goto(f"{origin}/index.html?{urlencode({'edge': edge_url})}")
        # The button is enabled once client.js has loaded and the edge parameter was read.
        await page.wait_for_selector("#go:enabled")
        return SignupPage(page, traffic)

    try:
        yield open_from
    finally:
        for context in contexts:
            await context.close()


def other_origin(origin: str) -> str:
    """The same server under a name the edge does not allow (its allow-list matches exactly)."""
    return origin.replace("://127.0.0.1:", "://localhost:")


async def test_sign_up_and_load_profile_from_the_browser(
    open_page: OpenPage, web_origin: str, tmp_path: Path
) -> None:
    signup = await open_page(web_origin)
    user = new_user()

    state, text = await signup.sign_up(user)

    assert (state, text) == (
        "ok",
        f"Signed up as {user.username}. Profile loaded: @{user.username}",
    )
    screenshot = tmp_path / "signup.png"
    await signup.page.screenshot(path=screenshot, full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")

    traffic = signup.traffic
    await traffic.settle(lambda t: len(t.preflights) == len(t.fetches) == len(RPC_PATHS))
    # Every call was cross-origin: a preflight the edge allowed for this page, then the POST.
    assert [(p.path, p.status, p.allow_origin) for p in traffic.preflights] == [
        (path, 200, web_origin) for path in RPC_PATHS
    ]
    assert [(f.path, f.status) for f in traffic.fetches] == [(path, 200) for path in RPC_PATHS]
    assert not traffic.failed
    assert not traffic.cors_errors
    assert not traffic.console_errors


async def test_error_status_is_readable_across_origins(
    open_page: OpenPage, web_origin: str
) -> None:
    signup = await open_page(web_origin)
    user = new_user()

    state, text = await signup.sign_up(NewUser(user.email, user.username, "short"))

    assert state == "grpc-error"
    assert await signup.page.get_attribute("#result", "data-code") == "3"
    assert text.startswith("gRPC error 3 INVALID_ARGUMENT: ")
    assert "password" in text
    traffic = signup.traffic
    await traffic.settle(lambda t: len(t.fetches) == 1)
    # A trailers-only answer: HTTP 200 whose status is in the headers, exposed by CORS.
    assert [(f.path, f.status, f.grpc_status_header) for f in traffic.fetches] == [
        (REGISTER, 200, "3")
    ]
    assert not traffic.console_errors


async def test_origin_outside_the_allow_list_is_refused(
    open_page: OpenPage, web_origin: str, edge_channel: grpc.aio.Channel
) -> None:
    signup = await open_page(other_origin(web_origin))
    user = new_user()

    state, text = await signup.sign_up(user)

    assert state == "network-error"
    assert "Failed to fetch" in text
    traffic = signup.traffic
    await traffic.settle(lambda t: bool(t.cors_errors))
    # The edge answered the preflight without allowing the origin, so no POST was sent.
    assert [(p.path, p.allow_origin) for p in traffic.preflights] == [(REGISTER, None)]
    assert traffic.cors_errors == [(REGISTER, "PreflightMissingAllowOriginHeader")]
    assert traffic.failed == [REGISTER]
    assert not traffic.fetches
    # ...and the account does not exist: registering it now succeeds.
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    reply = await auth.Register(
        auth_pb2.RegisterRequest(email=user.email, username=user.username, password=user.password)
    )
    assert reply.account.username == user.username


def varint(value: int) -> bytes:
    """Protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    """Protobuf field key."""
    return varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (string, bytes or embedded message)."""
    return key(number, 2) + varint(len(payload)) + payload


# Runs in the page: the codec functions of client.js applied to bytes built here.
CODEC_PROBE = """async ([url, message, body]) => {
  const client = await import(url);
  const bytes = Uint8Array.from(message);
  const errorOf = (call) => {
    try {
      call();
      return null;
    } catch (error) {
      return error.message;
    }
  };
  const { messages, trailers } = client.unframe(Uint8Array.from(body));
  return {
    text: client.stringField(bytes, 6),
    first: client.stringField(client.messageField(bytes, 7), 1),
    second: client.stringField(client.messageField(bytes, 7), 2),
    missing: client.stringField(bytes, 9),
    truncated: errorOf(() => client.stringField(bytes.subarray(0, bytes.length - 1), 6)),
    encoded: Array.from(client.encodeStrings({ 1: "ädä@example.com", 2: "ada", 3: "pässword ✓" })),
    framed: Array.from(client.frame(Uint8Array.from([1, 2, 3]))),
    messages: messages.map((payload) => Array.from(payload)),
    trailers: Object.fromEntries(trailers),
  };
}"""


async def test_client_codec_in_the_browser(open_page: OpenPage, web_origin: str) -> None:
    signup = await open_page(web_origin)
    message = b"".join(
        [
            key(1, 0) + varint(2**64 - 1),  # a ten-byte varint, as int64 -1 is written
            key(2, 1) + bytes(8),  # fixed64
            key(3, 5) + bytes(4),  # fixed32
            length_delimited(6, "héllo ✓".encode()),
            # A group (nested in a group) holding a field 6 that must not count as the message's.
            key(4, 3) + length_delimited(6, b"in a group") + key(5, 3) + key(5, 4) + key(4, 4),
            # A message field given twice is merged.
            length_delimited(7, length_delimited(1, b"first")),
            length_delimited(7, length_delimited(2, b"second")),
        ]
    )
    trailer = b"grpc-status:0\r\ngrpc-message:all%20good\r\n"
    body = grpc_web_frame(b"one") + grpc_web_frame(b"") + b"\x80" + grpc_web_frame(trailer)[1:]

    seen = await signup.page.evaluate(
        CODEC_PROBE, [f"{web_origin}/client.js", list(message), list(body)]
    )

    assert seen == {
        "text": "héllo ✓",
        "first": "first",
        "second": "second",
        "missing": "",
        "truncated": "truncated field",
        "encoded": list(
            auth_pb2.RegisterRequest(
                email="ädä@example.com", username="ada", password="pässword ✓"
            ).SerializeToString()
        ),
        "framed": list(grpc_web_frame(b"\x01\x02\x03")),
        "messages": [list(b"one"), []],
        "trailers": {"grpc-status": "0", "grpc-message": "all%20good"},
    }
