"""The REST contract as docs/openapi.json states it, checked against the running edge: every
route, driven by examples generated from the document (schemathesis), answers within its
documented statuses and schemas, never with a 5xx, and every error is a JSON google.rpc.Status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case

from tests.e2e.support import rest_sign_in

ROOT = Path(__file__).resolve().parents[2]
# Methods sent to check that undocumented ones are refused (405 with Allow): schemathesis's
# default list less QUERY, which Envoy's HTTP/1 codec refuses (400) before any filter runs.
CONFIG = schemathesis.Config.from_dict(
    {
        "phases": {
            "coverage": {
                "unexpected-methods": ["get", "put", "post", "delete", "options", "patch", "trace"]
            }
        }
    }
)
schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json", config=CONFIG)

# Examples per route in `make test`: enough to reach every parameter's edge cases, small enough
# to keep the whole contract run to seconds.
EXAMPLES_PER_ROUTE = 25


@pytest.fixture(scope="module")
def bearer(edge_url: str) -> dict[str, str]:
    """Authorization of a freshly registered user, so protected routes run past the token check."""
    with httpx.Client(base_url=edge_url, timeout=30) as http:
        _, tokens = rest_sign_in(http)
    return {"authorization": f"Bearer {tokens['accessToken']}"}


def assert_json_status(body: Any) -> None:
    """An error body is a google.rpc.Status in JSON: an int code, a message, a details list."""
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), int), body
    assert body["code"] > 0, body
    assert isinstance(body.get("message"), str), body
    assert isinstance(body.get("details", []), list), body
    for detail in body.get("details", []):
        assert isinstance(detail.get("@type"), str), body


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_ROUTE,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_route_behaves_as_documented(
    case: Case, edge_url: str, bearer: dict[str, str]
) -> None:
    secured = bool(case.operation.definition.raw.get("security"))
    response = case.call(base_url=edge_url, headers=bearer if secured else None, timeout=30)
    assert response.status_code < 500, (case.as_curl_command(), response.text)
    case.validate_response(
        response,
        excluded_checks=[
            # The token is ours, not one schemathesis made up, so its check that a made-up
            # token is refused does not apply; the refusal is checked below instead.
            schemathesis.checks.ignored_auth,
            # The document states types and required fields, not the domain's rules (what a
            # valid email or username is); those answer 400 with field violations.
            schemathesis.checks.positive_data_acceptance,
            # Envoy's JSON parser is lenient where the document is strict (a number where a
            # string is expected is read as that string); nothing reaches a service unparsed.
            schemathesis.checks.negative_data_rejection,
        ],
    )
    if response.status_code >= 400:
        assert response.headers["content-type"][0].startswith("application/json")
        assert_json_status(response.json())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        (method.upper(), path)
        for path, operations in schema.raw_schema["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    ],
)
def test_secured_routes_refuse_a_missing_token(edge_url: str, method: str, path: str) -> None:
    concrete = path.replace("{username}", "ada").replace("{image_id}", "x")
    reply = httpx.request(method, edge_url + concrete, json={}, timeout=30)
    assert reply.status_code == 401, reply.text
    assert_json_status(reply.json())
