"""The API reference page the edge serves at /docs: Swagger UI on docs/openapi.json, in a real
headless Chromium launched as tests/e2e/test_browser.py launches it, calling the same edge.

Also checks the files behind the page over plain HTTP, and that real answers of the edge match
the schemas the document gives them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, async_playwright

from tests.e2e.support import new_user, rest_sign_in
from tests.e2e.test_browser import CHROMIUM_ARGS, chromium_executable
from tools.docs_ui import SWAGGER_UI_BUNDLE
from tools.gen_openapi import OPENAPI_DOC

# The status and body cells of the answer "Execute" got (the table's header row aside).
LIVE_STATUS = ".live-responses-table tr.response .response-col_status"
LIVE_BODY = ".live-responses-table tr.response .response-col_description pre"
DOCUMENT: dict[str, Any] = json.loads(OPENAPI_DOC.read_text(encoding="utf-8"))
OPERATIONS = {
    operation["operationId"]: (verb, path)
    for path, item in DOCUMENT["paths"].items()
    for verb, operation in item.items()
}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module's tests."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def execute(page: Page, operation_id: str) -> Locator:
    """Open an operation's block, press "Try it out" then "Execute"; returns the block."""
    tag = operation_id.split("_", 1)[0]
    block = page.locator(f"#operations-{tag}-{operation_id}")
    await block.locator(".opblock-summary").first.click()
    await block.locator("button.try-out__btn").click()
    await block.locator("button.execute").click()
    await block.locator(LIVE_STATUS).first.wait_for()
    return block


async def test_page_lists_every_route_and_tries_them_against_the_edge(
    browser: Browser, edge_url: str, http: httpx.Client, tmp_path: Path
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    try:
        page = await context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
        await page.goto(f"{edge_url}/docs")

        blocks = page.locator(".opblock")
        await blocks.first.wait_for()
        assert await blocks.count() == len(OPERATIONS)
        shown = set()
        for i in range(await blocks.count()):
            block = blocks.nth(i)
            verb = await block.locator(".opblock-summary-method").inner_text()
            path = await block.locator(".opblock-summary-path").get_attribute("data-path")
            shown.add((verb.lower(), path))
        assert shown == set(OPERATIONS.values())

        jwks = await execute(page, "AuthService_GetJwks")
        status = jwks.locator(LIVE_STATUS).first
        assert (await status.inner_text()).strip() == "200"

        user, tokens = rest_sign_in(http)
        username, token = user.username, tokens["accessToken"]
        await page.locator(".auth-wrapper button.authorize").click()
        dialog = page.locator(".dialog-ux")
        await dialog.locator("input").first.fill(token)
        await dialog.locator("button.authorize").click()
        await dialog.locator("button.btn-done").click()
        mine = await execute(page, "UserService_GetMyProfile")
        status = mine.locator(LIVE_STATUS).first
        assert (await status.inner_text()).strip() == "200"
        body = mine.locator(LIVE_BODY).first
        assert f'"username": "{username}"' in await body.inner_text()

        screenshot = tmp_path / "docs-page.png"
        await page.screenshot(path=screenshot, full_page=True)
        assert screenshot.read_bytes().startswith(b"\x89PNG")
        assert not errors
    finally:
        await context.close()


@pytest.mark.parametrize("path", ["/docs", "/docs/"])
def test_page_is_served_at_docs_with_and_without_a_slash(http: httpx.Client, path: str) -> None:
    reply = http.get(path)

    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in reply.headers["content-security-policy"]
    assert '<div id="swagger-ui"></div>' in reply.text


@pytest.mark.parametrize(
    ("path", "content_type", "cache_control", "source"),
    [
        ("/docs/openapi.json", "application/json", "no-cache", OPENAPI_DOC),
        (
            "/docs/swagger-ui-bundle.js",
            "text/javascript; charset=utf-8",
            "public, max-age=86400",
            SWAGGER_UI_BUNDLE,
        ),
    ],
)
def test_files_are_served_as_they_are(
    http: httpx.Client, path: str, content_type: str, cache_control: str, source: Path
) -> None:
    reply = http.get(path)

    assert reply.status_code == 200
    assert (reply.headers["content-type"], reply.headers["cache-control"]) == (
        content_type,
        cache_control,
    )
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.content == source.read_bytes()


def test_other_paths_under_docs_are_404_json(http: httpx.Client) -> None:
    reply = http.get("/docs/nope")

    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["code"] == 12


def schema_of(operation_id: str, status: str) -> OAS31Validator:
    """A validator for the JSON body the document gives an operation's answer."""
    verb, path = OPERATIONS[operation_id]
    response = DOCUMENT["paths"][path][verb]["responses"][status]
    schema = response["content"]["application/json"]["schema"]
    return OAS31Validator({**schema, "components": DOCUMENT["components"]})


def test_real_answers_match_the_document(http: httpx.Client) -> None:
    user = new_user()
    sign_up = {"email": user.email, "username": user.username, "password": user.password}
    answers = [
        ("AuthService_Register", http.post("/v1/auth:register", json=sign_up)),
        ("AuthService_Register", http.post("/v1/auth:register", json=sign_up)),
        ("AuthService_Register", http.post("/v1/auth:register", json={**sign_up, "password": ""})),
        ("AuthService_Login", http.post("/v1/auth:login", json=sign_up | {"password": "nope"})),
        ("AuthService_GetJwks", http.get("/.well-known/jwks.json")),
    ]
    login = http.post("/v1/auth:login", json={"email": user.email, "password": user.password})
    answers.append(("AuthService_Login", login))
    bearer = {"authorization": f"Bearer {login.json()['tokens']['accessToken']}"}
    answers += [
        ("UserService_GetMyProfile", http.get("/v1/profiles/me", headers=bearer)),
        ("UserService_GetMyProfile", http.get("/v1/profiles/me")),
        ("UserService_GetProfile", http.get("/v1/profiles/no_such_user_zz", headers=bearer)),
        (
            "UserService_UpdateMyProfile",
            http.patch("/v1/profiles/me?updateMask=bio", json={"bio": "b"}, headers=bearer),
        ),
    ]

    statuses = []
    for operation_id, reply in answers:
        status = str(reply.status_code)
        statuses.append(status)
        schema_of(operation_id, status).validate(reply.json())
    assert statuses == ["200", "409", "400", "401", "200", "200", "200", "401", "404", "200"]
