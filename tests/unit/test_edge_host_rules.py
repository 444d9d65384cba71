"""Routing by host in the rendered Envoy config (tools/edge_hosts.py): without EDGE_DOMAIN one
virtual host serves everything; with it, auth., api. and media. share the routes and CORS of
that host and each lets through only its own paths, from the one table of hosts.

How the hosts answer through a running edge is tests/e2e/test_edge_hosts.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2
from meshkit.reasons import Reason
from tests.unit.edge_support import rendered_config
from tests.unit.test_edge_account_pages import connection_manager
from tools.edge_hosts import HOSTS, REFLECTION_PREFIX, domain_from_env, served

PUBLIC_FILES = (auth_pb2.DESCRIPTOR, user_pb2.DESCRIPTOR, storage_pb2.DESCRIPTOR)
RBAC = "envoy.filters.http.rbac"


def rendered(tmp_path_factory: pytest.TempPathFactory, domain: str | None) -> dict[str, Any]:
    """The Envoy config rendered for domain, parsed."""
    return rendered_config(tmp_path_factory, domain=domain)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The local-development config: no EDGE_DOMAIN."""
    return connection_manager(rendered(tmp_path_factory, None))


@pytest.fixture(scope="module")
def by_host(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The config for EDGE_DOMAIN=Meshgram.Example (written in mixed case on purpose)."""
    return connection_manager(rendered(tmp_path_factory, "Meshgram.Example"))


def vhosts(manager: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The virtual hosts by name: "*" for the one of any Host, else the host's label ("home"
    for the bare domain and www.)."""
    return {
        vhost["name"].removeprefix("host_") if vhost["domains"] != ["*"] else "*": vhost
        for vhost in manager["route_config"]["virtual_hosts"]
    }


def allows(vhost: dict[str, Any], path: str) -> bool:
    """Whether the virtual host's access rule lets a request for path through (no rule: yes)."""
    rule = vhost.get("typed_per_filter_config", {}).get(RBAC)
    if rule is None:
        return True
    for policy in rule["rbac"]["rules"].get("policies", {}).values():
        for permission in policy["permissions"]:
            for matcher in permission["or_rules"]["rules"]:
                wanted = matcher["url_path"]["path"]
                if path == wanted.get("exact") or path.startswith(wanted.get("prefix", "\0")):
                    return True
    return False


def grpc_paths() -> dict[str, str]:
    """Every public method's gRPC path -> its proto package."""
    return {
        f"/{service.full_name}/{method.name}": file.package
        for file in PUBLIC_FILES
        for service in file.services_by_name.values()
        for method in service.methods
    }


def test_without_a_domain_one_host_serves_everything_on_any_host(single: dict[str, Any]) -> None:
    [only] = vhosts(single).values()
    assert only["name"] == "api"
    assert RBAC not in only["typed_per_filter_config"]
    assert all(allows(only, path) for path in grpc_paths())
    # The access filter is there, without rules of its own: it refuses nothing.
    [access] = [f for f in single["http_filters"] if f["name"] == RBAC]
    assert "rules" not in access["typed_config"]


def test_each_host_of_the_domain_has_its_names_with_any_port(by_host: dict[str, Any]) -> None:
    hosts = vhosts(by_host)
    assert list(hosts) == ["*", "auth", "api", "media", "home"]
    assert len({vhost["name"] for vhost in hosts.values()}) == len(hosts)
    for label in HOSTS:
        name = f"{label}.meshgram.example"
        assert hosts[label]["domains"] == [name, f"{name}:*"]
    assert hosts["home"]["domains"] == [
        "meshgram.example",
        "meshgram.example:*",
        "www.meshgram.example",
        "www.meshgram.example:*",
    ]


def test_every_host_shares_the_routes_cors_and_headers_of_the_single_host(
    by_host: dict[str, Any],
) -> None:
    hosts = vhosts(by_host)
    catch_all = hosts["*"]
    for label in HOSTS:
        vhost = hosts[label]
        assert vhost["routes"] == catch_all["routes"]
        cors = "envoy.filters.http.cors"
        assert vhost["typed_per_filter_config"][cors] == catch_all["typed_per_filter_config"][cors]
        assert vhost["request_headers_to_remove"] == catch_all["request_headers_to_remove"]
        assert vhost["request_headers_to_add"] == catch_all["request_headers_to_add"]


def test_any_other_host_is_refused_everything(by_host: dict[str, Any]) -> None:
    catch_all = vhosts(by_host)["*"]
    assert not any(allows(catch_all, path) for path in [*grpc_paths(), "/docs", "/media/x/w320"])


def test_each_public_service_lives_on_exactly_one_of_auth_and_api(
    by_host: dict[str, Any],
) -> None:
    hosts = vhosts(by_host)
    packages = {file.package for file in PUBLIC_FILES}
    assert {package for plan in HOSTS.values() for package in plan.packages} == packages
    for path, package in grpc_paths().items():
        serving = [label for label in ("auth", "api") if allows(hosts[label], path)]
        assert serving == ["auth" if package == "meshgram.auth.v1" else "api"], path


def test_the_media_host_serves_downloads_and_media_files_only(by_host: dict[str, Any]) -> None:
    media = vhosts(by_host)["media"]
    allowed = [path for path in grpc_paths() if allows(media, path)]
    assert allowed == ["/meshgram.storage.v1.StorageService/DownloadImage"]
    assert allows(media, "/media/abc/w320")
    assert not any(allows(media, path) for path in ("/docs", "/account/verify-email"))
    assert not allows(media, REFLECTION_PREFIX + "ServerReflectionInfo")


def test_pages_and_reflection_sit_on_their_hosts(by_host: dict[str, Any]) -> None:
    hosts = vhosts(by_host)
    assert allows(hosts["auth"], "/account/reset-password")
    assert not allows(hosts["api"], "/account/reset-password")
    assert allows(hosts["api"], "/docs/openapi.json")
    assert not allows(hosts["auth"], "/docs")
    # The API's media URLs are paths: the api host serves them as the media host does.
    assert allows(hosts["api"], "/media/abc/w320")
    for label in ("auth", "api"):
        assert allows(hosts[label], REFLECTION_PREFIX + "ServerReflectionInfo")


def test_the_bare_domain_and_www_redirect_to_the_api_reference(by_host: dict[str, Any]) -> None:
    home = vhosts(by_host)["home"]
    first, rest = home["routes"]
    assert first["match"] == {"path": "/"}
    assert first["redirect"]["host_redirect"] == "api.meshgram.example"
    assert first["redirect"]["path_redirect"] == "/docs"
    assert rest["redirect"]["host_redirect"] == "api.meshgram.example"
    assert allows(home, "/")
    assert allows(home, "/docs/openapi.json")
    assert not allows(home, "/v1/profiles/me")


def test_a_refusal_is_a_json_404_with_not_found(by_host: dict[str, Any]) -> None:
    mappers = by_host["local_reply_config"]["mappers"]
    refusals = [m for m in mappers if "rbac" in str(m["filter"])]
    grpc, rest = refusals
    assert grpc["status_code"] == rest["status_code"] == 404
    assert grpc["headers_to_add"][0]["header"] == {"key": "grpc-status", "value": "5"}
    body = rest["body_format_override"]["json_format"]
    assert body["code"] == 5
    assert body["details"][0]["reason"] == Reason.NOT_ON_THIS_HOST
    # Before the mappers by status (403 has none), and only for the access rule's refusals.
    first_by_status = next(i for i, m in enumerate(mappers) if "edge.reply.4" in str(m))
    assert mappers.index(rest) < first_by_status
    expression = rest["filter"]["extension_filter"]["typed_config"]["expression"]
    assert "rbac_access_denied" in expression


def test_served_is_derived_from_the_protos() -> None:
    auth = served(HOSTS["auth"], PUBLIC_FILES)
    assert "/meshgram.auth.v1.AuthService/" in auth.prefixes
    assert not auth.paths


@pytest.mark.parametrize("raw", ["https://meshgram.example", "meshgram.example:443", "*.x", "a b"])
def test_a_domain_that_is_not_a_dns_name_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="EDGE_DOMAIN"):
        domain_from_env({"EDGE_DOMAIN": raw})


def test_the_domain_is_read_lowercased_and_unset_means_one_host() -> None:
    assert domain_from_env({"EDGE_DOMAIN": " Meshgram.Example. "}) == "meshgram.example"
    assert domain_from_env({"EDGE_DOMAIN": ""}) is None
    assert domain_from_env({}) is None
