"""Which calls the edge lets through without an access token: exactly those meshkit.public_api
lists, for every method of the public services (read from their descriptors) and so for every
REST route, which the edge checks by the gRPC path the transcoder gives it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2
from meshkit.access_tokens import ACCOUNT_HEADER, CLAIMS_HEADER, token_expired, token_missing
from meshkit.public_api import ANONYMOUS_METHODS, OPTIONAL_TOKEN_METHODS, PUBLIC_SERVICES
from tests.unit.edge_support import loopback_config
from tools import edge
from tools.edge_jwt import PROVIDER, EdgeJwt, edge_jwt_from_env, rest_body
from tools.http_rules import bindings

FILES = (auth_pb2.DESCRIPTOR, user_pb2.DESCRIPTOR, storage_pb2.DESCRIPTOR)


def every_method() -> dict[str, list[str]]:
    """Each public method's gRPC path -> its REST routes ("GET /v1/..."), from the descriptors."""
    methods = {}
    for file in FILES:
        for service in file.services_by_name.values():
            assert service.full_name in PUBLIC_SERVICES
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                routes = [f"{b.verb} {b.path}" for b in bindings(rule)]
                methods[f"/{service.full_name}/{method.name}"] = routes
    return methods


def edge_filters(jwt: EdgeJwt | None = None) -> list[dict[str, Any]]:
    """The HTTP filters of the edge's client listener, in order."""
    document = yaml.safe_load(edge.render(loopback_config(jwt=jwt or EdgeJwt())))
    manager = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    found: list[dict[str, Any]] = manager["typed_config"]["http_filters"]
    return found


def requirement(rules: list[dict[str, Any]], path: str, method: str = "POST") -> Any:
    """What jwt_authn requires of a request for path: its first matching rule's requirement
    (None: nothing checked); "no rule" when none matches."""
    for rule in rules:
        match = rule["match"]
        verbs = [h["string_match"]["exact"] for h in match.get("headers", [])]
        if verbs and method not in verbs:
            continue
        if match.get("path") == path or path.startswith(match.get("prefix", "\0")):
            return rule.get("requires")
    return "no rule"


REQUIRED = {"provider_name": PROVIDER}
OPTIONAL = {"requires_any": {"requirements": [REQUIRED, {"allow_missing": {}}]}}


def test_every_method_needs_a_token_unless_the_public_list_names_it() -> None:
    names = [item["name"] for item in edge_filters()]
    # REST requests are gRPC calls by the time tokens are checked, and the edge's answers to
    # malformed or oversized requests come first, as they did before it checked tokens.
    earlier_checks = (
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.buffer",
        "meshgram.upstream",
    )
    for earlier in earlier_checks:
        assert names.index(earlier) < names.index("envoy.filters.http.jwt_authn")
    [authn] = [item for item in edge_filters() if item["name"] == "envoy.filters.http.jwt_authn"]
    rules = authn["typed_config"]["rules"]
    methods = every_method()
    for path, routes in methods.items():
        wanted: Any = REQUIRED
        if path in ANONYMOUS_METHODS:
            wanted = None
        elif path in OPTIONAL_TOKEN_METHODS:
            wanted = OPTIONAL
        assert requirement(rules, path) == wanted, (path, routes)
        # Another verb never reaches a service: its route answers UNIMPLEMENTED, as before.
        assert requirement(rules, path, "GET") in (None, "no rule")
    # Methods added to a service later are protected before anyone lists them.
    for service in PUBLIC_SERVICES:
        assert requirement(rules, f"/{service}/SomeFutureMethod") == REQUIRED
    # The list names real methods only, each in one kind.
    assert methods.keys() >= ANONYMOUS_METHODS | OPTIONAL_TOKEN_METHODS
    assert not ANONYMOUS_METHODS & OPTIONAL_TOKEN_METHODS


def test_signing_in_stays_open_and_own_data_needs_a_token() -> None:
    methods = every_method()
    assert "POST /v1/auth:login" in methods["/meshgram.auth.v1.AuthService/Login"]
    assert "/meshgram.auth.v1.AuthService/Login" in ANONYMOUS_METHODS
    assert "/meshgram.auth.v1.AuthService/GetJwks" in ANONYMOUS_METHODS
    assert "/meshgram.user.v1.UserService/GetProfile" in OPTIONAL_TOKEN_METHODS
    protected = [path for path in methods if path.endswith(("/GetMyProfile", "/ListMyImages"))]
    assert len(protected) == 2
    assert not set(protected) & (ANONYMOUS_METHODS | OPTIONAL_TOKEN_METHODS)


def test_client_copies_of_the_claims_headers_are_removed_even_without_edge_checks() -> None:
    for jwt in (EdgeJwt(), EdgeJwt(enabled=False)):
        filters = edge_filters(jwt)
        [strip] = [item for item in filters if item["name"] == "meshgram.forwarded_claims"]
        removed = {m["remove"] for m in strip["typed_config"]["mutations"]["request_mutations"]}
        assert removed == {CLAIMS_HEADER, ACCOUNT_HEADER}
        names = [item["name"] for item in filters]
        assert ("envoy.filters.http.jwt_authn" in names) is jwt.enabled
        if jwt.enabled:
            # Removed before jwt_authn writes the verified ones.
            assert names.index("meshgram.forwarded_claims") < names.index(
                "envoy.filters.http.jwt_authn"
            )


def test_the_provider_checks_what_the_services_check() -> None:
    [authn] = [item for item in edge_filters() if item["name"] == "envoy.filters.http.jwt_authn"]
    provider = authn["typed_config"]["providers"][PROVIDER]
    assert provider["issuer"] == "meshgram-auth"
    assert provider["audiences"] == ["meshgram"]
    assert provider["require_expiration"] is True
    assert provider["forward"] is True
    assert provider["remote_jwks"]["cache_duration"] == "60s"
    assert provider["claim_to_headers"] == [{"header_name": ACCOUNT_HEADER, "claim_name": "sub"}]


def test_refusals_read_as_the_services_errors() -> None:
    body = json.loads(rest_body(token_expired()))
    assert body["code"] == 16
    assert body["message"] == "access token expired"
    assert body["details"][0]["reason"] == "TOKEN_EXPIRED"
    assert json.loads(rest_body(token_missing()))["details"][0]["reason"] == "TOKEN_MISSING"


def test_only_jwt_authns_refusals_get_the_token_answers() -> None:
    document = yaml.safe_load(edge.render(loopback_config()))
    manager = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    mappers = manager["typed_config"]["local_reply_config"]["mappers"]

    def metadata_filters(item: dict[str, Any]) -> list[dict[str, Any]]:
        """The metadata filters of a mapper's filter, nested ones included."""
        found = [item["metadata_filter"]] if "metadata_filter" in item else []
        for inner in item.get("and_filter", {}).get("filters", []):
            found += metadata_filters(inner)
        return found

    token_mappers = [m for m in mappers if metadata_filters(m["filter"])]
    assert len(token_mappers) == 8
    for mapper in token_mappers:
        # An answer without jwt_authn's failure (a 404, a 431...) must not match.
        assert all(f["match_if_key_not_found"] is False for f in metadata_filters(mapper["filter"]))


def test_settings() -> None:
    assert edge_jwt_from_env({}) == EdgeJwt(enabled=True, jwks_refresh_seconds=60.0)
    assert edge_jwt_from_env({"EDGE_JWT": "0"}).enabled is False
    assert edge_jwt_from_env({"EDGE_JWKS_REFRESH_SECONDS": "5"}).jwks_refresh_seconds == 5.0
    with pytest.raises(ValueError, match="EDGE_JWT"):
        edge_jwt_from_env({"EDGE_JWT": "maybe"})
    with pytest.raises(ValueError, match="EDGE_JWKS_REFRESH_SECONDS"):
        edge_jwt_from_env({"EDGE_JWKS_REFRESH_SECONDS": "0"})
