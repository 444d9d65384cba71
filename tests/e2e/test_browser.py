from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.e2e.support import new_user

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        yield b
        await b.close()


async def test_probe(browser: Browser, web_origin: str, edge_url: str) -> None:
    for origin in (web_origin, web_origin.replace("127.0.0.1", "localhost")):
        context = await browser.new_context()
        page = await context.new_page()
        page.on("request", lambda r: print("REQ", r.method, r.url, r.resource_type))
        page.on("response", lambda r: print("RESP", r.request.method, r.url, r.status))
        page.on("requestfailed", lambda r: print("FAIL", r.method, r.url, r.failure))
        page.on("console", lambda m: print("CONSOLE", m.text))
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        cdp.on("Network.responseReceived", lambda e: print("CDPRESP", e["type"], e["response"]["url"], e["response"]["status"], e["response"]["headers"].get("access-control-allow-origin")))
        cdp.on("Network.loadingFailed", lambda e: print("CDPFAIL", e))
        cdp.on("Network.requestWillBeSent", lambda e: print("CDP", e["request"]["method"], e["request"]["url"], e.get("type"), e["initiator"]["type"]))
        await page.goto(f"{origin}/index.html?edge={edge_url}")
        user = new_user()
        await page.fill("#email", user.email)
        await page.fill("#username", user.username)
        await page.fill("#password", user.password)
        await page.click("#go")
        await page.wait_for_selector('#result:not([data-state="idle"]):not([data-state="pending"])')
        print("RESULT", await page.inner_text("#result"))
        await context.close()
