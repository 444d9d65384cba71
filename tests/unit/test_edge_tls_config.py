"""The edge's HTTPS configuration as rendered for Envoy: TLS 1.2+, forward-secret AEAD ciphers,
ALPN h2 and http/1.1, a reloadable certificate, HSTS, and the plain port redirecting; plus the
settings that turn it on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.edge_support import envoy_refusal, loopback_config
from tools import edge, edge_tls, k8s_edge, validate_deploy
from tools.dev_certs import LOCAL_HOSTS, ensure_server_certificate, server_certificate_hosts
from tools.edge_tls import HSTS_DEVELOPMENT, HSTS_REAL, DownstreamTls
from tools.mesh import Mesh
from tools.run import banner

TLS = DownstreamTls(cert=Path("/certs/edge.pem"), key=Path("/certs/edge.key"), https_port=8443)
SECRET_FILE = Path("/run/edge-certificate.json")


def rendered(tls: DownstreamTls | None) -> dict[str, Any]:
    """The edge configuration on 127.0.0.1:8080 with tls, parsed."""
    config = loopback_config(downstream_tls=tls, downstream_tls_secret=SECRET_FILE)
    document: dict[str, Any] = yaml.safe_load(edge.render(config))
    return document


def listeners(document: dict[str, Any]) -> dict[str, Any]:
    """The listeners by name."""
    return {item["name"]: item for item in document["static_resources"]["listeners"]}


def manager(listener: dict[str, Any]) -> dict[str, Any]:
    """The HTTP connection manager of a listener's one filter chain."""
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def tls_context(document: dict[str, Any]) -> dict[str, Any]:
    """The edge listener's DownstreamTlsContext."""
    socket = listeners(document)["edge"]["filter_chains"][0]["transport_socket"]
    context: dict[str, Any] = socket["typed_config"]
    return context


def test_without_tls_the_edge_is_one_plain_listener_and_sends_no_hsts() -> None:
    document = rendered(None)
    found = listeners(document)
    assert "edge_http" not in found
    edge_listener = found["edge"]
    assert edge_listener["address"]["socket_address"]["port_value"] == 8080
    assert "transport_socket" not in edge_listener["filter_chains"][0]
    assert "response_headers_to_add" not in manager(edge_listener)["route_config"]


def test_https_listens_on_its_port_with_tls_1_2_or_later() -> None:
    document = rendered(TLS)
    edge_listener = listeners(document)["edge"]
    assert edge_listener["address"]["socket_address"]["port_value"] == 8443
    params = tls_context(document)["common_tls_context"]["tls_params"]
    assert params["tls_minimum_protocol_version"] == "TLSv1_2"
    assert params["tls_maximum_protocol_version"] == "TLSv1_3"


def test_only_forward_secret_aead_ciphers_are_offered_under_tls_1_2() -> None:
    ciphers = tls_context(rendered(TLS))["common_tls_context"]["tls_params"]["cipher_suites"]
    assert ciphers
    for cipher in ciphers:
        assert cipher.startswith("ECDHE-"), cipher
        assert cipher.endswith(("-GCM-SHA256", "-GCM-SHA384", "-CHACHA20-POLY1305")), cipher


def test_alpn_offers_http2_then_http1() -> None:
    common = tls_context(rendered(TLS))["common_tls_context"]
    assert common["alpn_protocols"] == ["h2", "http/1.1"]


def test_the_certificate_comes_from_a_watched_secret_file() -> None:
    common = tls_context(rendered(TLS))["common_tls_context"]
    [sds] = common["tls_certificate_sds_secret_configs"]
    assert sds["name"] == edge_tls.SECRET_NAME
    assert sds["sds_config"]["path_config_source"]["path"] == str(SECRET_FILE)
    [resource] = json.loads(edge_tls.secret(TLS))["resources"]
    assert resource["@type"] == edge_tls.SECRET_TYPE
    assert resource["name"] == edge_tls.SECRET_NAME
    certificate = resource["tls_certificate"]
    assert certificate["certificate_chain"] == {"filename": "/certs/edge.pem"}
    assert certificate["private_key"] == {"filename": "/certs/edge.key"}
    # The folder, not the files: a Kubernetes Secret volume swaps a symlink in it.
    assert certificate["watched_directory"] == {"path": "/certs"}


@pytest.mark.parametrize(
    ("development", "expected"),
    [(True, HSTS_DEVELOPMENT), (False, "max-age=31536000; includeSubDomains")],
)
def test_every_https_answer_carries_hsts(development: bool, expected: str) -> None:
    tls = DownstreamTls(cert=TLS.cert, key=TLS.key, development=development)
    assert tls.hsts == expected
    route_config = manager(listeners(rendered(tls))["edge"])["route_config"]
    [header] = route_config["response_headers_to_add"]
    assert header["header"] == {"key": "strict-transport-security", "value": expected}


def test_the_plain_port_redirects_and_refuses_grpc() -> None:
    redirect = listeners(rendered(TLS))["edge_http"]
    assert redirect["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}
    assert "transport_socket" not in redirect["filter_chains"][0]
    config = manager(redirect)
    grpc_route, safe, unsafe = config["route_config"]["virtual_hosts"][0]["routes"]
    assert grpc_route["match"]["headers"][0]["name"] == "content-type"
    assert grpc_route["direct_response"]["status"] == 400
    assert "TLS" in grpc_route["direct_response"]["body"]["inline_string"]
    assert safe["redirect"] == {
        "https_redirect": True,
        "port_redirect": 8443,
        "response_code": "MOVED_PERMANENTLY",
    }
    assert unsafe["redirect"]["response_code"] == "PERMANENT_REDIRECT"
    assert "headers" not in unsafe["match"]
    # Both gRPC flavours learn FAILED_PRECONDITION (9).
    statuses = [
        header["header"]["value"]
        for mapper in config["local_reply_config"]["mappers"]
        for header in mapper["headers_to_add"]
        if header["header"]["key"] == "grpc-status"
    ]
    assert statuses == ["9", "9"]
    # Nothing on the plain port reaches a service.
    assert all("route" not in route for route in (grpc_route, safe, unsafe))


def test_envoy_accepts_the_https_configuration(tmp_path: Path) -> None:
    files = ensure_server_certificate(directory=tmp_path / "certs")
    tls = DownstreamTls(cert=files.cert, key=files.key, development=True)
    path = tmp_path / "envoy.yaml"
    config = loopback_config(
        downstream_tls=tls,
        downstream_tls_secret=edge_tls.sds_path(path),
        media_cache_dir=tmp_path / "cache",
    )
    edge.write(config, path)
    assert envoy_refusal(path) == ""


def test_settings_off_by_default() -> None:
    assert edge_tls.from_env({}) is None
    assert edge_tls.from_env({"EDGE_TLS": "0"}) is None


def test_edge_tls_1_makes_and_serves_the_development_certificate(tmp_path: Path) -> None:
    tls = edge_tls.from_env({"EDGE_TLS": "1"}, tmp_path)
    assert tls is not None
    assert tls.development
    assert tls.https_port == 8443
    assert tls.cert == tmp_path / "edge-server.pem"
    assert tls.cert.is_file()
    assert tls.key.is_file()
    assert tls.hsts == HSTS_DEVELOPMENT


def test_the_development_certificate_names_the_routed_hosts(tmp_path: Path) -> None:
    # With EDGE_DOMAIN, clients ask for auth./api./media. by name (grpcurl -authority checks
    # the certificate against it), so the certificate must carry them.
    edge_tls.from_env({"EDGE_TLS": "1", "EDGE_DOMAIN": "Meshgram.Test"}, tmp_path)
    names = server_certificate_hosts(tmp_path)
    assert {"meshgram.test", "*.meshgram.test", "localhost", "127.0.0.1"} <= set(names)


def test_real_certificate_files_turn_https_on(tmp_path: Path) -> None:
    files = ensure_server_certificate(directory=tmp_path)
    env = {
        "EDGE_TLS_CERT": str(files.cert),
        "EDGE_TLS_KEY": str(files.key),
        "EDGE_HTTPS_PORT": "443",
    }
    tls = edge_tls.from_env(env, tmp_path / "unused")
    assert tls == DownstreamTls(cert=files.cert, key=files.key, https_port=443)
    assert tls.hsts == HSTS_REAL
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EDGE_TLS": "maybe"}, "EDGE_TLS must be"),
        ({"EDGE_TLS_CERT": "/x.pem"}, "set both or neither"),
        ({"EDGE_TLS": "0", "EDGE_TLS_CERT": "/x.pem", "EDGE_TLS_KEY": "/x.key"}, "contradicts"),
        ({"EDGE_TLS_CERT": "/nope.pem", "EDGE_TLS_KEY": "/nope.key"}, "no such file"),
        ({"EDGE_TLS": "1", "EDGE_HTTPS_PORT": "70000"}, "EDGE_HTTPS_PORT"),
        ({"EDGE_TLS": "1", "EDGE_HTTPS_PORT": "https"}, "EDGE_HTTPS_PORT"),
        ({"EDGE_TLS": "1", "EDGE_HTTPS_PUBLIC_PORT": "0"}, "EDGE_HTTPS_PUBLIC_PORT"),
    ],
)
def test_contradictory_or_broken_settings_are_refused(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        edge_tls.from_env(env, tmp_path)


def test_containers_redirect_on_8080_and_serve_https_on_every_interface() -> None:
    https = DownstreamTls(cert=Path("/etc/meshgram/edge-tls/tls.crt"), key=TLS.key)
    found = listeners(yaml.safe_load(k8s_edge.container_config(https=https)))
    assert found["edge_http"]["address"]["socket_address"] == {
        "address": "0.0.0.0",
        "port_value": k8s_edge.LISTEN_PORT,
    }
    assert found["edge"]["address"]["socket_address"]["port_value"] == 8443


def test_a_container_makes_no_development_certificate() -> None:
    with pytest.raises(SystemExit, match="EDGE_TLS_CERT and EDGE_TLS_KEY"):
        k8s_edge._https({"EDGE_TLS": "1"})


def test_the_compose_https_overlay_is_valid() -> None:
    assert validate_deploy.validate_compose_tls() == []


def test_an_overlay_mounting_the_certificate_file_itself_is_caught(tmp_path: Path) -> None:
    # A file mounted on its own keeps its first contents: a renewal would never be served.
    overlay = yaml.safe_load(validate_deploy.COMPOSE_TLS_FILE.read_text())
    edge_service = overlay["services"]["edge"]
    edge_service["volumes"] = ["./edge-tls/tls.crt:/etc/tls.crt:ro"]
    edge_service["environment"]["EDGE_TLS_CERT"] = "/etc/tls.crt"
    edge_service["ports"] = []
    overlay["services"]["proxy"] = {}
    path = tmp_path / "compose.tls.yaml"
    path.write_text(yaml.safe_dump(overlay))
    problems = [problem.message for problem in validate_deploy.validate_compose_tls(path)]
    assert "service proxy is not one of compose.yaml" in problems
    assert "edge: EDGE_TLS_CERT must lie in a mounted folder, not be one" in problems
    assert "edge: EDGE_TLS_KEY must lie in a mounted folder, not be one" in problems
    assert "edge: the HTTPS port 8443 is not published" in problems


def test_make_run_announces_the_https_address_and_the_ca_to_trust(tmp_path: Path) -> None:
    mesh = Mesh(database_url="postgresql://unused", state_dir=tmp_path, edge_tls=True)
    text = banner(mesh)
    ca = tmp_path / "certs" / "ca.pem"
    assert "edge https://localhost:8443" in text
    assert f"http://{mesh.edge_address} redirects there" in text
    assert f"grpcurl -cacert {ca} localhost:8443 list" in text
    assert f"curl -s --cacert {ca} https://localhost:8443/" in text
    assert mesh.https_address == "127.0.0.1:8443"


def test_make_run_without_tls_keeps_plain_http(tmp_path: Path) -> None:
    mesh = Mesh(database_url="postgresql://unused", state_dir=tmp_path, edge_tls=False)
    assert f"edge http://{mesh.edge_address}" in banner(mesh)
    with pytest.raises(RuntimeError, match="plain HTTP"):
        _ = mesh.https_address
    assert not (tmp_path / "certs").exists()


def test_behind_a_port_mapping_redirects_name_the_public_port(tmp_path: Path) -> None:
    env = {"EDGE_TLS": "1", "EDGE_HTTPS_PORT": "8443", "EDGE_HTTPS_PUBLIC_PORT": "443"}
    tls = edge_tls.from_env(env, tmp_path)
    assert tls is not None
    assert tls.redirect_port == 443
    found = listeners(rendered(tls))
    assert found["edge"]["address"]["socket_address"]["port_value"] == 8443
    config = manager(found["edge_http"])
    grpc_route, safe, unsafe = config["route_config"]["virtual_hosts"][0]["routes"]
    assert safe["redirect"]["port_redirect"] == 443
    assert unsafe["redirect"]["port_redirect"] == 443
    assert "call port 443 with TLS" in grpc_route["direct_response"]["body"]["inline_string"]


def test_names_added_by_make_certs_are_kept_when_https_turns_on(tmp_path: Path) -> None:
    made = ensure_server_certificate((*LOCAL_HOSTS, "*.meshgram.test"), tmp_path)
    before = made.cert.read_bytes()
    tls = edge_tls.from_env({"EDGE_TLS": "1"}, tmp_path)
    assert tls is not None
    assert tls.cert.read_bytes() == before
    assert "*.meshgram.test" in server_certificate_hosts(tmp_path)
