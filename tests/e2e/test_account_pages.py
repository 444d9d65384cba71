"""The account page that the links in auth_svc's mails open (/account/verify-email and
/account/reset-password, served by the edge from envoy/account), in a real headless Chromium
launched as tests/e2e/test_browser.py launches it, calling the same edge.

With made-up tokens: the page comes with its Content-Security-Policy, takes the token out of the
address bar, sends nothing before the reader presses a button (mail scanners open links), and
shows what the edge really answered. With the links of real mails from the mesh's mailbox: both
flows to the end, a weak password refused by auth_svc included.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    async_playwright,
)

from auth_svc.mail.messages import RESET_PASSWORD_PATH, VERIFY_EMAIL_PATH
from tests.e2e.support import new_user
from tests.e2e.test_browser import CHROMIUM_ARGS, chromium_executable
from tools.mailbox import latest_mail
from tools.mesh import Mesh

# Long and odd enough that no real token has it, and easy to look for in traffic.
BOGUS_TOKEN = "made-up-token-Zq7Xk2Vb9Lr4Wn8Ts1Hd"
# The status line once the page has an outcome (any state but idle and pending).
SETTLED = '#status:not([data-state="idle"]):not([data-state="pending"])'
MAIL_WAIT_SECONDS = 15.0
UNSUCCESSFUL_ANSWER = "Failed to load resource: the server responded with a status of "


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module's tests; each test opens its own context."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class AccountPage:
    """The page in a fresh browser context, with what it sent and what went wrong in it."""

    page: Page
    headers: dict[str, str]
    """The response headers of the page itself."""
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Console errors (CSP violations among them), uncaught exceptions, failed requests."""

    def on_console(self, message: ConsoleMessage) -> None:
        # Chromium reports every answer that is not 2xx this way, the 404 and 400 the tests
        # expect included; those are checked where they are expected.
        if message.type == "error" and not message.text.startswith(UNSUCCESSFUL_ANSWER):
            self.errors.append(message.text)

    def posts(self) -> list[Request]:
        return [request for request in self.requests if request.method == "POST"]

    async def outcome(self) -> tuple[str, str]:
        """Wait for the page's outcome; returns (data-state, text) of its status line."""
        status = await self.page.wait_for_selector(SETTLED)
        assert status is not None
        return await status.get_attribute("data-state") or "", await status.inner_text()

    async def post_and_settle(self, action: Awaitable[None]) -> tuple[int, dict[str, object]]:
        """Run action (a click), which must POST once; returns the answer's status and JSON."""
        async with self.page.expect_response(lambda r: r.request.method == "POST") as answer:
            await action
        response = await answer.value
        body = await response.json()
        await self.outcome()
        return response.status, body

    async def storage_is_empty(self) -> bool:
        lengths = await self.page.evaluate("[localStorage.length, sessionStorage.length]")
        return bool(lengths == [0, 0])


OpenAccount = Callable[[str], Awaitable[AccountPage]]


@pytest.fixture
async def api(edge_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the edge for the REST calls the tests make besides the page's."""
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as client:
        yield client


@pytest.fixture
async def open_account(browser: Browser, edge_url: str) -> AsyncIterator[OpenAccount]:
    """Open edge_url + a path (with its #fragment) and wait for the page's script to run."""
    contexts: list[BrowserContext] = []

    async def open_page(path: str) -> AccountPage:
        context = await browser.new_context()
        contexts.append(context)
        context.set_default_timeout(15_000)
        page = await context.new_page()
        opened = AccountPage(page, headers={})
        page.on("request", lambda request: opened.requests.append(request))
        page.on("console", lambda message: opened.on_console(message))
        page.on("pageerror", lambda error: opened.errors.append(str(error)))
        page.on("requestfailed", lambda r: opened.errors.append(f"failed: {r.url}"))
        response = await page.goto(f"{edge_url}{path}")
        assert response is not None
        assert response.status == 200
        opened.headers = await response.all_headers()
        # Every request the script might make on load has been made (and answered) by then.
        await page.wait_for_load_state("networkidle")
        return opened

    try:
        yield open_page
    finally:
        for context in contexts:
            await context.close()


def sent_json(request: Request) -> tuple[str, object]:
    """The path a POST went to and its JSON body."""
    return urlsplit(request.url).path, json.loads(request.post_data or "null")


def error_reason(body: dict[str, object]) -> str:
    """The ErrorInfo reason of a JSON error answer."""
    details = body.get("details")
    assert isinstance(details, list)
    (reason,) = [d["reason"] for d in details if d["@type"].endswith("google.rpc.ErrorInfo")]
    return str(reason)


async def test_page_comes_with_its_policy_and_drops_the_token_from_the_address_bar(
    open_account: OpenAccount, edge_url: str
) -> None:
    opened = await open_account(f"{VERIFY_EMAIL_PATH}#token={BOGUS_TOKEN}")

    csp = opened.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert opened.headers["referrer-policy"] == "no-referrer"
    assert opened.headers["cache-control"] == "no-store"
    assert opened.headers["content-type"] == "text/html; charset=utf-8"
    assert await opened.page.locator("#verify-button").is_visible()
    assert opened.page.url == f"{edge_url}{VERIFY_EMAIL_PATH}"
    assert await opened.page.evaluate("window.location.hash") == ""
    # The fragment never left the browser, and the page loaded nothing from elsewhere.
    assert all(BOGUS_TOKEN not in request.url for request in opened.requests)
    assert all(request.url.startswith(edge_url) for request in opened.requests)
    assert await opened.storage_is_empty()
    assert not opened.errors


async def test_verify_page_sends_nothing_before_the_click_then_shows_the_real_answer(
    open_account: OpenAccount,
) -> None:
    opened = await open_account(f"{VERIFY_EMAIL_PATH}#token={BOGUS_TOKEN}")
    assert not opened.posts()

    status, body = await opened.post_and_settle(opened.page.click("#verify-button"))

    assert (status, error_reason(body)) == (404, "ACCOUNT_TOKEN_INVALID")
    assert [sent_json(r) for r in opened.posts()] == [
        ("/v1/auth:verifyEmail", {"token": BOGUS_TOKEN})
    ]
    state, text = await opened.outcome()
    assert state == "invalid"
    assert "invalid or expired" in text
    # Instead of the spent link: the form that mails a new one.
    assert await opened.page.locator("#verify").is_hidden()
    assert await opened.page.locator("#request-form").is_visible()
    assert await opened.storage_is_empty()
    assert not opened.errors


async def test_reset_page_checks_the_repeat_then_refuses_a_made_up_token(
    open_account: OpenAccount,
) -> None:
    opened = await open_account(f"{RESET_PASSWORD_PATH}#token={BOGUS_TOKEN}")
    page = opened.page
    assert await page.locator("#reset-form").is_visible()
    assert not opened.posts()

    await page.fill("#new-password", "password")
    await page.fill("#confirm-password", "passwort")
    await page.click("#reset-button")
    assert await page.locator("#reset-problems").inner_text() == "The two passwords differ."
    assert not opened.posts()

    await page.fill("#confirm-password", "password")
    status, body = await opened.post_and_settle(page.click("#reset-button"))

    # auth_svc looks the token up before it judges the password: a made-up token is refused
    # however weak the password.
    assert (status, error_reason(body)) == (404, "ACCOUNT_TOKEN_INVALID")
    assert [sent_json(r) for r in opened.posts()] == [
        ("/v1/auth:resetPassword", {"token": BOGUS_TOKEN, "newPassword": "password"})
    ]
    state, text = await opened.outcome()
    assert state == "invalid"
    assert "invalid or expired" in text
    assert await page.locator("#reset").is_hidden()
    assert await page.input_value("#new-password") == ""
    assert await page.locator("#request-form").is_visible()
    assert await opened.storage_is_empty()
    assert not opened.errors


async def test_reset_page_without_a_token_asks_for_a_link(open_account: OpenAccount) -> None:
    opened = await open_account(RESET_PASSWORD_PATH)
    page = opened.page
    assert await page.locator("#reset").is_hidden()
    assert await page.locator("#request-form").is_visible()
    assert not opened.posts()
    address = new_user().email

    await page.fill("#email", address)
    status, body = await opened.post_and_settle(page.click("#request-button"))

    assert (status, body) == (200, {})
    assert [sent_json(r) for r in opened.posts()] == [
        ("/v1/auth:requestPasswordReset", {"email": address})
    ]
    state, text = await opened.outcome()
    assert state == "sent"
    assert address in text
    assert not opened.errors


async def mailed_link(mesh: Mesh, address: str, path: str) -> str:
    """The path and fragment of the newest link to path mailed to address; waits for the
    mail (auth_svc sends it in the background) and fails after MAIL_WAIT_SECONDS."""
    async with asyncio.timeout(MAIL_WAIT_SECONDS):
        while True:
            mail = latest_mail(mesh.mailbox_dir, to=address)
            for link in mail.links() if mail is not None else []:
                parts = urlsplit(link)
                if parts.path == path and parts.fragment.startswith("token="):
                    # The link names the edge as AUTH_PUBLIC_URL does; open it at edge_url.
                    return f"{parts.path}#{parts.fragment}"
            await asyncio.sleep(0.1)


async def test_a_real_verification_link_verifies_on_the_click(
    open_account: OpenAccount, mesh: Mesh, api: httpx.AsyncClient
) -> None:
    user = new_user()
    sign_up = {"email": user.email, "username": user.username, "password": user.password}
    assert (await api.post("/v1/auth:register", json=sign_up)).status_code == 200
    link = await mailed_link(mesh, user.email, VERIFY_EMAIL_PATH)
    token = link.split("#token=", 1)[1]

    opened = await open_account(link)
    assert not opened.posts()
    status, body = await opened.post_and_settle(opened.page.click("#verify-button"))

    assert status == 200
    account = body["account"]
    assert isinstance(account, dict)
    assert account["emailVerified"] is True
    state, text = await opened.outcome()
    assert state == "ok"
    assert account["email"] in text
    # The token worked once.
    again = await api.post("/v1/auth:verifyEmail", json={"token": token})
    assert (again.status_code, error_reason(again.json())) == (404, "ACCOUNT_TOKEN_INVALID")
    assert not opened.errors


async def test_a_real_reset_link_shows_why_a_password_is_refused_then_sets_one(
    open_account: OpenAccount, mesh: Mesh, api: httpx.AsyncClient
) -> None:
    user = new_user()
    sign_up = {"email": user.email, "username": user.username, "password": user.password}
    assert (await api.post("/v1/auth:register", json=sign_up)).status_code == 200
    reset = await api.post("/v1/auth:requestPasswordReset", json={"email": user.email})
    assert reset.status_code == 200
    link = await mailed_link(mesh, user.email, RESET_PASSWORD_PATH)
    opened = await open_account(link)
    page = opened.page

    await page.fill("#new-password", "password")
    await page.fill("#confirm-password", "password")
    status, body = await opened.post_and_settle(page.click("#reset-button"))

    assert status == 400
    assert (await opened.outcome())[0] == "rejected"
    problems = await page.locator("#reset-problems li").all_inner_texts()
    assert problems
    assert all(p.startswith("The new password ") for p in problems)
    assert await page.locator("#reset-form").is_visible()

    new_password = f"{user.password} and then some"
    await page.fill("#new-password", new_password)
    await page.fill("#confirm-password", new_password)
    status, body = await opened.post_and_settle(page.click("#reset-button"))

    assert (status, body) == (200, {})
    assert (await opened.outcome())[0] == "ok"
    assert await page.locator("#reset").is_hidden()
    login = {"email": user.email, "password": new_password}
    assert (await api.post("/v1/auth:login", json=login)).status_code == 200
    assert not opened.errors
