"""The pages of tests/e2e/web in a real headless Chromium, calling the edge with gRPC-web.

The pages are served from another origin than the edge, so the browser does everything a web
app's gRPC-web client lives with: CORS preflights, the allow-list, reading grpc-status from
trailer frames and (for errors without a body) from exposed response headers, and the
refresh-token cookie that the edge sets and reads with credentialed calls.

Page and edge share the host 127.0.0.1 and differ in port: two origins of one site, as
app.example.com and api.example.com are. So the cookie's SameSite=Strict lets the page's calls
carry it, and a page of another site (localhost) never makes the browser send it. A page of the
same site on another port that the edge does not allow gets the cookie sent with requests that
need no preflight (forms, no-cors fetches): there only auth_svc's check of the Origin stands
between it and the session. That check comes before the cookie is read, set or cleared, so no
page it does not allow, of any site, can refresh, sign the browser out, or sign it in as someone
else with a form whose text/plain body passes for a JSON login.

Network traffic is watched in two ways. Playwright's request/response events show the page's
fetches but not CORS preflights, so preflights, the cookies Chromium attached to each request
(or withheld, and why), the Set-Cookie lines of each answer and any Set-Cookie Chromium refused
are read from the Chrome DevTools Protocol.
No test uses page.route: with interception on, Playwright answers preflights itself and would
let any origin through.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import grpc
import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Cookie,
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
WEB_DIR = Path(__file__).parent / "web"
REGISTER = "/meshgram.auth.v1.AuthService/Register"
LOGIN = "/meshgram.auth.v1.AuthService/Login"
REFRESH = "/meshgram.auth.v1.AuthService/RefreshToken"
LOGOUT = "/meshgram.auth.v1.AuthService/Logout"
PROFILE = "/meshgram.user.v1.UserService/GetMyProfile"
REST_LOGIN = "/v1/auth:login"
REST_REFRESH = "/v1/auth:refresh"
REST_LOGOUT = "/v1/auth:logout"
SIGN_UP_PATHS = (REGISTER, LOGIN, PROFILE)
COOKIE = "__Host-meshgram-refresh"
# The result element once the page has finished (any state but idle and pending).
SETTLED = '#result:not([data-state="idle"]):not([data-state="pending"])'
# How long network events may trail the page's own update of the result.
SETTLE_SECONDS = 5.0
# How far a remembered cookie's expiry may be from login time plus the refresh token's lifetime.
EXPIRY_SLACK_SECONDS = 60


def chromium_executable() -> Path:
    """The system Chromium; the test fails (never skips) without one."""
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    searched = ", ".join(map(str, CHROMIUM_CANDIDATES))
    pytest.fail(f"no Chromium found at {searched}: apt-get install chromium")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module's tests; each test opens its own contexts."""
    executable = chromium_executable()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without writing a line per request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def same_site_origin() -> Iterator[str]:
    """The pages again, from another loopback port: the site of the allowed page and the edge,
    but an origin the edge does not allow."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(WEB_DIR)))
    thread = threading.Thread(target=server.serve_forever, name="e2e-web-same-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def other_site(origin: str) -> str:
    """The same server under another site's name, which the edge does not allow either."""
    return origin.replace("://127.0.0.1:", "://localhost:")


@dataclass
class Preflight:
    """A CORS preflight the browser sent to the edge, as DevTools saw its answer."""

    path: str
    status: int
    allow_origin: str | None


@dataclass
class Fetch:
    """A POST to the edge (a fetch or a form) that got an HTTP response."""

    path: str
    status: int
    grpc_status_header: str | None


@dataclass(frozen=True)
class CookieUse:
    """A cookie Chromium considered for a request to the edge: sent unless blocked names why."""

    path: str
    name: str
    value: str
    blocked: tuple[str, ...]


@dataclass
class Traffic:
    """What a page exchanged with the edge, and what it logged as errors."""

    edge: str
    preflights: list[Preflight] = field(default_factory=list)
    fetches: list[Fetch] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """Paths of edge requests that failed without a response."""
    cors_errors: list[tuple[str, str]] = field(default_factory=list)
    """(path, DevTools' corsError) of requests the browser blocked."""
    refused_set_cookies: list[dict[str, Any]] = field(default_factory=list)
    """DevTools' blockedCookies of answers: Set-Cookie lines Chromium did not store."""
    console_errors: list[str] = field(default_factory=list)
    _urls: dict[str, str] = field(default_factory=dict)
    _cookies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _set_cookies: dict[str, list[str]] = field(default_factory=dict)
    _preflight_ids: set[str] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def edge_path(self, url: str) -> str | None:
        """The path of url when it points at the edge."""
        parts = urlsplit(url)
        return parts.path if f"{parts.scheme}://{parts.netloc}" == self.edge else None

    def _of_requests_to(self, path: str, records: dict[str, Any]) -> list[Any]:
        """The records (by request id) of the requests to path, preflights left out."""
        return [
            record
            for request_id, record in records.items()
            if self.edge_path(self._urls.get(request_id, "")) == path
            and request_id not in self._preflight_ids
        ]

    def cookie_uses(self, path: str) -> list[list[CookieUse]]:
        """For each request to path (preflights left out), the cookies Chromium considered."""
        return [
            [
                CookieUse(
                    path,
                    use["cookie"]["name"],
                    use["cookie"]["value"],
                    tuple(use["blockedReasons"]),
                )
                for use in uses
            ]
            for uses in self._of_requests_to(path, self._cookies)
        ]

    def set_cookies(self, path: str) -> list[list[str]]:
        """For each answer to a request to path (preflights left out), its Set-Cookie lines as
        the edge sent them, stored by Chromium or not."""
        return self._of_requests_to(path, self._set_cookies)

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
        if event["request"]["method"] == "OPTIONS":
            self._preflight_ids.add(event["requestId"])
        self._changed.set()

    def on_devtools_request_cookies(self, event: dict[str, Any]) -> None:
        self._cookies[event["requestId"]] = event.get("associatedCookies", [])
        self._changed.set()

    def on_devtools_response(self, event: dict[str, Any]) -> None:
        response = event["response"]
        path = self.edge_path(response["url"])
        if path is not None and event["type"] == "Preflight":
            headers = {key.lower(): value for key, value in response["headers"].items()}
            self.preflights.append(
                Preflight(path, response["status"], headers.get("access-control-allow-origin"))
            )
            self._changed.set()

    def on_devtools_response_cookies(self, event: dict[str, Any]) -> None:
        self.refused_set_cookies.extend(event.get("blockedCookies", []))
        # Raw headers: several Set-Cookie lines come joined by newlines.
        lines = [
            line
            for name, value in event["headers"].items()
            if name.lower() == "set-cookie"
            for line in value.split("\n")
        ]
        self._set_cookies[event["requestId"]] = lines
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


@dataclass(frozen=True)
class Outcome:
    """What a page's #result shows."""

    state: str
    text: str
    data: dict[str, str]
    """Its other data-* attributes, by dataset name (data-refresh-token-in-cookie is
    refreshTokenInCookie)."""


# Runs in the page: the result's dataset and text.
READ_RESULT = "(result) => ({ data: { ...result.dataset }, text: result.textContent })"


@dataclass
class WebPage:
    """One of the pages in a browser context, with its traffic recorded."""

    page: Page
    traffic: Traffic

    @property
    def context(self) -> BrowserContext:
        """The browser context: its cookies are those of every page opened alongside."""
        return self.page.context

    async def outcome(self) -> Outcome:
        """Wait until the page has finished its action; what it shows."""
        result = await self.page.wait_for_selector(SETTLED)
        assert result is not None
        shown: dict[str, Any] = await result.evaluate(READ_RESULT)
        data = dict(shown["data"])
        return Outcome(data.pop("state"), shown["text"], data)

    async def press(self, selector: str) -> Outcome:
        """Click a control and wait for the outcome of its action."""
        await self.page.click(selector)
        return await self.outcome()

    async def sign_up(self, user: NewUser) -> Outcome:
        """Fill the sign-up form, press its button and wait for the outcome."""
        await self.page.fill("#email", user.email)
        await self.page.fill("#username", user.username)
        await self.page.fill("#password", user.password)
        return await self.press("text=Sign up and load my profile")

    async def log_in(self, user: NewUser, *, remember_me: bool = False) -> Outcome:
        """Fill the login form, press Log in and wait for the outcome."""
        await self.page.fill("#email", user.email)
        await self.page.fill("#password", user.password)
        await self.page.set_checked("#remember", remember_me)
        return await self.press("#go")

    async def script_sees_cookie(self) -> bool:
        """Whether the page's own scripts can read the refresh-token cookie."""
        return COOKIE in await self.page.evaluate("document.cookie")


class Pages:
    """Opens the pages of tests/e2e/web, pointed at the edge; closes their contexts at the end."""

    def __init__(self, browser: Browser, edge_url: str) -> None:
        self._browser = browser
        self.edge = edge_url
        self._contexts: list[BrowserContext] = []

    async def open(
        self,
        origin: str,
        document: str = "index.html",
        *,
        alongside: WebPage | None = None,
        query: Mapping[str, str] | None = None,
    ) -> WebPage:
        """Open origin/document (with query added to its address) in a fresh browser context, or
        in the one of `alongside` (one browser, one cookie jar, as two tabs share)."""
        if alongside is None:
            context = await self._browser.new_context()
            self._contexts.append(context)
            context.set_default_timeout(15_000)
        else:
            context = alongside.context
        page = await context.new_page()
        traffic = Traffic(self.edge)
        page.on("response", traffic.on_response)
        page.on("requestfailed", traffic.on_request_failed)
        page.on("console", traffic.on_console)
        devtools = await context.new_cdp_session(page)
        devtools.on("Network.requestWillBeSent", traffic.on_devtools_request)
        devtools.on("Network.requestWillBeSentExtraInfo", traffic.on_devtools_request_cookies)
        devtools.on("Network.responseReceived", traffic.on_devtools_response)
        devtools.on("Network.responseReceivedExtraInfo", traffic.on_devtools_response_cookies)
        devtools.on("Network.loadingFailed", traffic.on_devtools_failure)
        await devtools.send("Network.enable")
        await page.goto(f"{origin}/{document}?{urlencode({'edge': self.edge, **(query or {})})}")
        # The buttons are enabled once the page's script has loaded and read the edge.
        await page.wait_for_selector("button:enabled")
        return WebPage(page, traffic)

    async def close(self) -> None:
        """Close every context opened here."""
        for context in self._contexts:
            await context.close()


@pytest.fixture
async def pages(browser: Browser, edge_url: str) -> AsyncIterator[Pages]:
    """Open pages pointed at the edge; closed after the test."""
    opened = Pages(browser, edge_url)
    try:
        yield opened
    finally:
        await opened.close()


async def edge_cookie(page: WebPage) -> Cookie | None:
    """The refresh-token cookie the page's browser context holds for the edge, if any."""
    found = [c for c in await page.context.cookies(page.traffic.edge) if c.get("name") == COOKIE]
    assert len(found) <= 1, found
    return found[0] if found else None


async def cookie_value(page: WebPage) -> str:
    """The value of the refresh-token cookie the page's browser holds; fails without one."""
    cookie = await edge_cookie(page)
    assert cookie is not None, "the browser holds no refresh-token cookie"
    return cookie.get("value", "")


async def registered_user(edge_channel: grpc.aio.Channel, user: NewUser | None = None) -> NewUser:
    """A fresh account (user, else new credentials), registered by a native client."""
    user = user or new_user()
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    await auth.Register(
        auth_pb2.RegisterRequest(email=user.email, username=user.username, password=user.password)
    )
    return user


@dataclass(frozen=True)
class SignedIn:
    """The session page of the allowed origin, signed in as user in a session."""

    app: WebPage
    user: NewUser
    session: str

    async def still_refreshes(self) -> None:
        """Assert that the page refreshes the same session of the same user, which rotates the
        cookie."""
        before = await cookie_value(self.app)
        refreshed = await self.app.press("#refresh")
        assert (refreshed.state, refreshed.text) == (
            "ok",
            f"Session refreshed: signed in as @{self.user.username}. "
            "The browser keeps the refresh token.",
        )
        assert refreshed.data["session"] == self.session
        assert await cookie_value(self.app) != before


async def signed_in(pages: Pages, web_origin: str, edge_channel: grpc.aio.Channel) -> SignedIn:
    """The session page of the allowed origin, signed in as a fresh user (not remembered)."""
    app = await pages.open(web_origin, "session.html")
    user = await registered_user(edge_channel)
    outcome = await app.log_in(user)
    assert outcome.state == "ok", outcome
    return SignedIn(app, user, outcome.data["session"])


async def test_sign_up_and_load_profile_from_the_browser(
    pages: Pages, web_origin: str, tmp_path: Path
) -> None:
    signup = await pages.open(web_origin)
    user = new_user()

    outcome = await signup.sign_up(user)

    assert (outcome.state, outcome.text) == (
        "ok",
        f"Signed up as {user.username}. Profile loaded: @{user.username}",
    )
    screenshot = tmp_path / "signup.png"
    await signup.page.screenshot(path=screenshot, full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")

    traffic = signup.traffic
    await traffic.settle(lambda t: len(t.preflights) == len(t.fetches) == len(SIGN_UP_PATHS))
    # Every call was cross-origin: a preflight the edge allowed for this page, then the POST.
    assert [(p.path, p.status, p.allow_origin) for p in traffic.preflights] == [
        (path, 200, web_origin) for path in SIGN_UP_PATHS
    ]
    assert [(f.path, f.status) for f in traffic.fetches] == [(path, 200) for path in SIGN_UP_PATHS]
    assert not traffic.failed
    assert not traffic.cors_errors
    assert not traffic.console_errors


async def test_error_status_is_readable_across_origins(pages: Pages, web_origin: str) -> None:
    signup = await pages.open(web_origin)
    user = new_user()

    outcome = await signup.sign_up(NewUser(user.email, user.username, "short"))

    assert outcome.state == "grpc-error"
    assert outcome.data["code"] == "3"
    assert outcome.text.startswith("gRPC error 3 INVALID_ARGUMENT: ")
    assert "password" in outcome.text
    traffic = signup.traffic
    await traffic.settle(lambda t: len(t.fetches) == 1)
    # A trailers-only answer: HTTP 200 whose status is in the headers, exposed by CORS.
    assert [(f.path, f.status, f.grpc_status_header) for f in traffic.fetches] == [
        (REGISTER, 200, "3")
    ]
    assert not traffic.console_errors


async def test_origin_outside_the_allow_list_is_refused(
    pages: Pages, web_origin: str, edge_channel: grpc.aio.Channel
) -> None:
    signup = await pages.open(other_site(web_origin))
    user = new_user()

    outcome = await signup.sign_up(user)

    assert outcome.state == "network-error"
    assert "Failed to fetch" in outcome.text
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


@pytest.mark.parametrize("remember_me", [False, True], ids=["browser-session", "remembered"])
async def test_login_keeps_the_refresh_token_in_a_cookie_scripts_cannot_read(
    pages: Pages, web_origin: str, edge_channel: grpc.aio.Channel, remember_me: bool
) -> None:
    app = await pages.open(web_origin, "session.html")
    user = await registered_user(edge_channel)
    logged_in_at = time.time()

    outcome = await app.log_in(user, remember_me=remember_me)

    assert (outcome.state, outcome.text) == (
        "ok",
        f"Signed in as @{user.username}. The browser keeps the refresh token.",
    )
    # The answer's body holds an access token (the profile loaded with it) but no refresh token.
    assert outcome.data["refreshTokenInBody"] == ""
    assert outcome.data["refreshTokenInCookie"] == "true"
    lifetime = int(outcome.data["refreshExpiresIn"])
    assert lifetime > 0
    # Cookies ignore ports, so the cookie of the edge's host is in this page's scope too; only
    # HttpOnly keeps it from the page's scripts.
    assert not await app.script_sees_cookie()

    cookie = await edge_cookie(app)
    assert cookie is not None
    assert {key: cookie.get(key) for key in ("domain", "path", "httpOnly", "secure")} == {
        "domain": "127.0.0.1",  # host-only: no Domain attribute, as __Host- demands
        "path": "/",
        "httpOnly": True,
        "secure": True,
    }
    assert cookie.get("sameSite") == "Strict"
    expires = cookie.get("expires", 0)
    if remember_me:
        # Stays across browser restarts for as long as the refresh token lives.
        assert abs(expires - (logged_in_at + lifetime)) < EXPIRY_SLACK_SECONDS
    else:
        assert expires == -1  # a browser-session cookie

    traffic = app.traffic
    await traffic.settle(lambda t: len(t.fetches) == 2)
    assert [(f.path, f.status) for f in traffic.fetches] == [(LOGIN, 200), (PROFILE, 200)]
    assert [(p.path, p.allow_origin) for p in traffic.preflights] == [
        (LOGIN, web_origin),
        (PROFILE, web_origin),
    ]
    # Chromium stored the cookie from the answer (secure enough over http://127.0.0.1) and
    # refused no Set-Cookie line; the profile call, without credentials, carried no cookie.
    assert not traffic.refused_set_cookies
    assert traffic.cookie_uses(PROFILE) == [[]]
    assert not traffic.console_errors


async def test_refresh_rotates_the_cookie_and_logout_clears_it(
    pages: Pages, web_origin: str, edge_channel: grpc.aio.Channel
) -> None:
    app = await pages.open(web_origin, "session.html")
    user = await registered_user(edge_channel)
    logged_in = await app.log_in(user)
    first = await cookie_value(app)

    refreshed = await app.press("#refresh")

    assert (refreshed.state, refreshed.text) == (
        "ok",
        f"Session refreshed: signed in as @{user.username}. The browser keeps the refresh token.",
    )
    assert refreshed.data["session"] == logged_in.data["session"]
    assert refreshed.data["refreshTokenInBody"] == ""
    assert refreshed.data["refreshTokenInCookie"] == "true"
    second = await cookie_value(app)
    assert second != first
    assert not await app.script_sees_cookie()

    signed_out = await app.press("#logout")

    assert (signed_out.state, signed_out.text) == ("ok", "Signed out.")
    assert await edge_cookie(app) is None

    again = await app.press("#refresh")

    assert again.state == "grpc-error"
    assert again.data["code"] == "16"
    assert again.text.startswith("gRPC error 16 UNAUTHENTICATED: ")

    traffic = app.traffic
    await traffic.settle(lambda t: len(t.fetches) == 6)
    assert [(f.path, f.status) for f in traffic.fetches] == [
        (LOGIN, 200),
        (PROFILE, 200),
        (REFRESH, 200),
        (PROFILE, 200),
        (LOGOUT, 200),
        (REFRESH, 200),  # gRPC-web: the failure is in grpc-status
    ]
    # Each call carried the cookie the one before had set, and the last one none at all.
    assert traffic.cookie_uses(REFRESH) == [[CookieUse(REFRESH, COOKIE, first, ())], []]
    assert traffic.cookie_uses(LOGOUT) == [[CookieUse(LOGOUT, COOKIE, second, ())]]
    assert not traffic.refused_set_cookies
    # The Set-Cookie lines behind it, as DevTools recorded the answers: a new cookie from the
    # login and the refresh, the cookie cleared by the logout, nothing from the failed refresh.
    await traffic.settle(
        lambda t: len(t.set_cookies(REFRESH)) == 2 and len(t.set_cookies(LOGOUT)) == 1
    )
    [[logged_in_cookie]] = traffic.set_cookies(LOGIN)
    assert logged_in_cookie.startswith(f"{COOKIE}={first};")
    [[refreshed_cookie], failed_refresh] = traffic.set_cookies(REFRESH)
    assert refreshed_cookie.startswith(f"{COOKIE}={second};")
    assert failed_refresh == []
    [[cleared]] = traffic.set_cookies(LOGOUT)
    assert cleared.startswith(f"{COOKIE}=;")
    assert "Max-Age=0" in cleared
    # The session is over at the server, not only forgotten by the browser.
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=second))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_remembered_session_keeps_its_cookie_across_refreshes(
    pages: Pages, web_origin: str, edge_channel: grpc.aio.Channel
) -> None:
    app = await pages.open(web_origin, "session.html")
    await app.log_in(await registered_user(edge_channel), remember_me=True)
    refreshed_at = time.time()

    refreshed = await app.press("#refresh")

    assert refreshed.state == "ok", refreshed
    lifetime = int(refreshed.data["refreshExpiresIn"])
    cookie = await edge_cookie(app)
    assert cookie is not None
    # Still outlives the browser: "stay signed in" holds after the first refresh too.
    assert abs(cookie.get("expires", 0) - (refreshed_at + lifetime)) < EXPIRY_SLACK_SECONDS


@pytest.fixture(params=["same-site", "cross-site"])
def foreign(request: pytest.FixtureRequest, web_origin: str, same_site_origin: str) -> str:
    """An origin the edge does not allow: of the edge's site (cookies ignore ports, so the
    browser would send the cookie) or of another site (SameSite=Strict keeps the cookie home)."""
    return same_site_origin if request.param == "same-site" else other_site(web_origin)


async def test_foreign_page_cannot_refresh_with_the_cookie(
    pages: Pages, web_origin: str, edge_channel: grpc.aio.Channel, foreign: str
) -> None:
    victim = await signed_in(pages, web_origin, edge_channel)
    before = await edge_cookie(victim.app)
    intruder = await pages.open(foreign, "session.html", alongside=victim.app)

    outcome = await intruder.press("#refresh")

    # No access token for the page: the credentialed call never left the browser, so no
    # cookie went anywhere (a preflight never carries one).
    assert outcome.state == "network-error"
    assert "Failed to fetch" in outcome.text
    traffic = intruder.traffic
    await traffic.settle(lambda t: bool(t.cors_errors))
    assert [(p.path, p.status, p.allow_origin) for p in traffic.preflights] == [
        (REFRESH, 200, None)
    ]
    assert traffic.cors_errors == [(REFRESH, "PreflightMissingAllowOriginHeader")]
    assert not traffic.fetches
    assert traffic.cookie_uses(REFRESH) == []
    assert not await intruder.script_sees_cookie()
    # The session is untouched: same cookie, and the allowed page still refreshes with it.
    assert await edge_cookie(victim.app) == before
    await victim.still_refreshes()


def assert_cookie_offered(traffic: Traffic, path: str, cookie: Cookie, *, same_site: bool) -> None:
    """Assert what Chromium did with the cookie for the one request to path: sent it from a page
    of the edge's site (SameSite cannot tell ports apart), withheld it from another site's."""
    [[use]] = traffic.cookie_uses(path)
    assert (use.name, use.value) == (COOKIE, cookie.get("value"))
    if same_site:
        assert use.blocked == ()
    else:
        # SameSite=Strict is enough; for a fetch (not a navigation) Chromium's default blocking
        # of third-party cookies adds "UserPreferences".
        assert "SchemefulSameSiteStrict" in use.blocked


async def assert_refused_for_its_origin(
    traffic: Traffic, path: str, response: Response, *, body_readable: bool = True
) -> None:
    """Assert that the edge refused the page's request to path for the page's Origin: 403
    (PERMISSION_DENIED) with reason ORIGIN_NOT_ALLOWED (when Chromium kept the body: not for an
    opaque answer), no tokens, and no Set-Cookie line at all in the answer as DevTools saw it (so
    none for Chromium to store or refuse)."""
    assert response.status == 403
    if body_readable:
        answer = json.loads(await response.text())
        assert "tokens" not in answer
        assert [detail.get("reason") for detail in answer.get("details", [])] == [
            "ORIGIN_NOT_ALLOWED"
        ]
    await traffic.settle(lambda t: len(t.set_cookies(path)) == 1)
    assert traffic.set_cookies(path) == [[]]
    assert not traffic.refused_set_cookies


@pytest.mark.parametrize("path", [REST_REFRESH, REST_LOGOUT], ids=["refresh", "logout"])
@pytest.mark.parametrize("request_kind", ["urlencoded", "plain", "no-cors"])
async def test_requests_without_preflight_cannot_use_or_clear_the_cookie(
    pages: Pages,
    web_origin: str,
    same_site_origin: str,
    edge_channel: grpc.aio.Channel,
    foreign: str,
    request_kind: str,
    path: str,
) -> None:
    victim = await signed_in(pages, web_origin, edge_channel)
    before = await edge_cookie(victim.app)
    assert before is not None
    intruder = await pages.open(foreign, "csrf.html", alongside=victim.app, query={"path": path})

    async with intruder.page.expect_response(f"{pages.edge}{path}") as answered:
        if request_kind == "no-cors":
            outcome = await intruder.press("#no-cors")
            # All the page gets is an opaque answer: no status, no headers, no body.
            assert outcome.state == "ok"
            assert (outcome.data["type"], outcome.data["status"], outcome.data["readable"]) == (
                "opaque",
                "0",
                "",
            )
        else:
            # A form navigates the page to the answer (a document of the edge's origin).
            await intruder.page.click(f"#{request_kind} button")
    response = await answered.value

    # The edge's verdict, which only this test sees. auth_svc refuses the page's Origin before it
    # reads the cookie, so the answer is the same whether the browser sent the cookie or not.
    assert_cookie_offered(intruder.traffic, path, before, same_site=foreign == same_site_origin)
    await assert_refused_for_its_origin(
        intruder.traffic, path, response, body_readable=request_kind != "no-cors"
    )
    # Nothing rotated, cleared or leaked: the very same cookie, and the session it names still
    # refreshes from the allowed page as the same user.
    assert await edge_cookie(victim.app) == before
    await victim.still_refreshes()


async def test_foreign_form_cannot_sign_the_browser_in_as_someone_else(
    pages: Pages,
    web_origin: str,
    same_site_origin: str,
    edge_channel: grpc.aio.Channel,
    foreign: str,
) -> None:
    victim = await signed_in(pages, web_origin, edge_channel)
    before = await edge_cookie(victim.app)
    assert before is not None
    # The attacker's own account, with an "=" in its password: the body below has its first "="
    # there, so a text/plain form can write it.
    fresh = new_user()
    attacker = await registered_user(
        edge_channel, NewUser(fresh.email, fresh.username, f"attacker={fresh.password}")
    )
    body = json.dumps({"email": attacker.email, "password": attacker.password, "rememberMe": True})
    intruder = await pages.open(
        foreign, "csrf.html", alongside=victim.app, query={"path": REST_LOGIN, "body": body}
    )

    async with intruder.page.expect_response(f"{pages.edge}{REST_LOGIN}") as answered:
        await intruder.page.click("#crafted button")
    response = await answered.value

    # The browser sent the attacker's login as JSON, in a form (no preflight needed)...
    request = response.request
    assert await request.header_value("content-type") == "text/plain"
    assert request.post_data == f"{body}\r\n"
    assert_cookie_offered(
        intruder.traffic, REST_LOGIN, before, same_site=foreign == same_site_origin
    )
    # ...and the edge refused it for the page's Origin before any cookie was set: the browser
    # still holds the victim's cookie, unchanged, and the allowed page refreshes as the victim.
    await assert_refused_for_its_origin(intruder.traffic, REST_LOGIN, response)
    assert await edge_cookie(victim.app) == before
    await victim.still_refreshes()
    # The refusal is the Origin's alone: the very same request from a native client (no Origin)
    # is a working login to the attacker's account.
    async with httpx.AsyncClient(base_url=pages.edge, timeout=30) as native:
        replayed = await native.post(
            REST_LOGIN, content=request.post_data_buffer, headers={"content-type": "text/plain"}
        )
        assert replayed.status_code == 200, replayed.text
        access_token = replayed.json()["tokens"]["accessToken"]
        profile = await native.get(
            "/v1/profiles/me", headers={"authorization": f"Bearer {access_token}"}
        )
    assert profile.status_code == 200, profile.text
    assert profile.json()["profile"]["username"] == attacker.username


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
    number: client.varintField(bytes, 8),
    absent: client.varintField(bytes, 9),
    notVarint: client.varintField(bytes, 6),
    encoded: Array.from(client.encodeMessage({ 1: "ädä@example.com", 2: "pässword ✓", 3: true })),
    defaults: Array.from(client.encodeMessage({ 1: "", 3: false })),
    framed: Array.from(client.frame(Uint8Array.from([1, 2, 3]))),
    messages: messages.map((payload) => Array.from(payload)),
    trailers: Object.fromEntries(trailers),
  };
}"""


async def test_client_codec_in_the_browser(pages: Pages, web_origin: str) -> None:
    signup = await pages.open(web_origin)
    message = b"".join(
        [
            key(1, 0) + varint(2**64 - 1),  # a ten-byte varint, as int64 -1 is written
            key(2, 1) + bytes(8),  # fixed64
            key(3, 5) + bytes(4),  # fixed32
            key(8, 0) + varint(300),
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
        "number": 300,
        "absent": 0,
        "notVarint": 0,
        "encoded": list(
            auth_pb2.LoginRequest(
                email="ädä@example.com", password="pässword ✓", remember_me=True
            ).SerializeToString()
        ),
        "defaults": [],
        "framed": list(grpc_web_frame(b"\x01\x02\x03")),
        "messages": [list(b"one"), []],
        "trailers": {"grpc-status": "0", "grpc-message": "all%20good"},
    }
