"""The account page the edge serves for the links in auth_svc's mails (envoy/account): its routes
and headers in the rendered Envoy config, and what the page's files may and may not contain.

How the page behaves in a browser against a running edge is tests/e2e/test_account_pages.py.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from auth_svc.mail.messages import RESET_PASSWORD_PATH, VERIFY_EMAIL_PATH
from tests.unit.edge_support import rendered_config
from tools import edge
from tools.gen_openapi import OPENAPI_DOC

PAGE = edge.SERVED_FILES["ACCOUNT_PAGE"]
SCRIPT = edge.SERVED_FILES["ACCOUNT_SCRIPT"]
STYLE = edge.SERVED_FILES["ACCOUNT_STYLE"]
PAGE_PATHS = (VERIFY_EMAIL_PATH, RESET_PASSWORD_PATH)
# What the page sends to each REST method it calls: the request's JSON field names.
CALLS = {
    "verifyEmail": {"token"},
    "resetPassword": {"token", "newPassword"},
    "requestPasswordReset": {"email"},
    "resendVerificationEmail": {"email"},
}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The rendered Envoy config, parsed."""
    return rendered_config(tmp_path_factory)


def connection_manager(config: dict[str, Any]) -> dict[str, Any]:
    """The typed config of the edge listener's HTTP connection manager."""
    [listener] = [
        listener
        for listener in config["static_resources"]["listeners"]
        if listener["name"] == "edge"
    ]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    typed: dict[str, Any] = manager["typed_config"]
    return typed


def route_for(config: dict[str, Any], path: str) -> dict[str, Any]:
    """The first route a browser's GET of path takes (routes that need gRPC headers aside)."""
    (host,) = connection_manager(config)["route_config"]["virtual_hosts"]
    for route in host["routes"]:
        match = route["match"]
        if "headers" in match:
            continue
        if (
            match.get("path") == path
            or ("prefix" in match and path.startswith(match["prefix"]))
            or ("safe_regex" in match and re.fullmatch(match["safe_regex"]["regex"], path))
        ):
            found: dict[str, Any] = route
            return found
    raise AssertionError(f"no route for {path}")


def headers_of(route: dict[str, Any]) -> dict[str, str]:
    """The response headers a route sets, by name."""
    return {
        entry["header"]["key"]: entry["header"]["value"]
        for entry in route.get("response_headers_to_add", [])
    }


def served_file(route: dict[str, Any]) -> Path:
    """The file a route answers with by itself (a 200 direct response)."""
    answer = route["direct_response"]
    assert answer["status"] == 200
    return Path(answer["body"]["filename"])


def transcoder_disabled(route: dict[str, Any]) -> bool:
    filters = route.get("typed_per_filter_config", {})
    return bool(filters.get("envoy.filters.http.grpc_json_transcoder", {}).get("disabled"))


def csp_directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as directive -> sources."""
    directives = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


@pytest.mark.parametrize("path", PAGE_PATHS)
def test_the_mail_links_open_the_page_with_its_headers(config: dict[str, Any], path: str) -> None:
    route = route_for(config, path)

    assert served_file(route) == PAGE
    assert transcoder_disabled(route)
    headers = headers_of(route)
    assert headers["content-type"] == "text/html; charset=utf-8"
    # The address holds a token until the page's script removes it.
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    csp = csp_directives(headers["content-security-policy"])
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["form-action"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert not any("unsafe" in source for sources in csp.values() for source in sources)


@pytest.mark.parametrize(
    ("path", "file", "content_type"),
    [
        ("/account/account.js", SCRIPT, "text/javascript; charset=utf-8"),
        ("/account/account.css", STYLE, "text/css; charset=utf-8"),
    ],
)
def test_the_page_files_are_served_as_they_are(
    config: dict[str, Any], path: str, file: Path, content_type: str
) -> None:
    route = route_for(config, path)

    assert served_file(route) == file
    assert transcoder_disabled(route)
    headers = headers_of(route)
    assert headers["content-type"] == content_type
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/account/", "/account/login.html", "/account/verify-email/x"])
def test_other_paths_under_account_are_not_the_page(config: dict[str, Any], path: str) -> None:
    assert route_for(config, path)["match"] == {"prefix": "/"}


def test_the_docs_routes_still_serve_their_files(config: dict[str, Any]) -> None:
    for path, name in [("/docs", "DOCS_PAGE"), ("/docs/openapi.json", "DOCS_OPENAPI")]:
        route = route_for(config, path)
        assert served_file(route) == edge.SERVED_FILES[name]
        assert transcoder_disabled(route)
        assert headers_of(route)["cache-control"] == "no-cache"


def path_prefixes(node: object) -> set[str]:
    """The :path prefixes that a local reply filter (and the filters inside it) look at."""
    if isinstance(node, dict):
        header = node.get("header_filter", {}).get("header", {})
        found = {header["string_match"]["prefix"]} if header.get("name") == ":path" else set()
        return found.union(*(path_prefixes(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(path_prefixes(value) for value in node))
    return set()


def test_files_go_out_unwrapped_by_the_json_error_format(config: dict[str, Any]) -> None:
    (first, *_) = connection_manager(config)["local_reply_config"]["mappers"]
    prefixes = path_prefixes(first["filter"])

    assert first["body_format_override"] == {
        "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"}
    }
    assert prefixes == {"/docs", "/account/"}
    for path in [*PAGE_PATHS, "/account/account.js", "/account/account.css", "/docs"]:
        assert any(path.startswith(prefix) for prefix in prefixes), path


class _Resources(HTMLParser):
    """Collects what an HTML page loads and any script written into it."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.references += [values[key] or "" for key in ("src", "href") if key in values]
        self.inline += [name for name, _ in attrs if name.startswith("on")]
        self.inline += ["style attribute"] if "style" in values else []
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def test_the_page_loads_only_the_edge_files_and_has_no_inline_code() -> None:
    parser = _Resources()
    parser.feed(PAGE.read_text(encoding="utf-8"))

    assert not parser.inline
    assert sorted(parser.references) == ["/account/account.css", "/account/account.js", "data:,"]


def test_the_script_calls_rest_methods_that_exist_with_their_fields() -> None:
    script = SCRIPT.read_text(encoding="utf-8")
    document = json.loads(OPENAPI_DOC.read_text(encoding="utf-8"))
    routes = edge.rest_routes()

    assert "fetch(`/v1/auth:${method}`" in script
    called = set(re.findall(r'(?:call|offerNewLink)\(\s*"(\w+)"', script))
    assert called == set(CALLS)
    for method, fields in CALLS.items():
        assert routes[f"/v1/auth:{method}"] == {"POST"}
        body = document["paths"][f"/v1/auth:{method}"]["post"]["requestBody"]
        reference = body["content"]["application/json"]["schema"]["$ref"]
        schema = document["components"]["schemas"][reference.rsplit("/", 1)[1]]
        assert fields <= set(schema["properties"]), method


def test_the_script_keeps_the_token_out_of_the_address_bar_storage_and_logs() -> None:
    script = SCRIPT.read_text(encoding="utf-8")

    assert "window.history.replaceState(" in script
    for forbidden in ("console.", "localStorage", "sessionStorage", "document.cookie", "innerHTML"):
        assert forbidden not in script, forbidden
