"""The edge traces only when the OTEL_* variables say so, exporting to the services' endpoint
and keeping the query (signed media URLs) out of its spans."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.edge_support import loopback_config
from tools import edge
from tools.edge_tracing import COLLECTOR_CLUSTER, edge_tracing


def connection_manager(config: dict[str, object]) -> dict[str, object]:
    """The typed config of the edge listener's HTTP connection manager."""
    listener = config["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def clusters(config: dict[str, object]) -> dict[str, dict[str, object]]:
    """The rendered clusters by name."""
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def test_without_otel_settings_the_edge_config_has_no_tracing() -> None:
    assert edge_tracing({}) is None
    rendered = edge.render(loopback_config())
    config = yaml.safe_load(rendered)
    assert "tracing" not in connection_manager(config)
    assert COLLECTOR_CLUSTER not in clusters(config)


def test_with_an_endpoint_the_edge_exports_over_otlp_grpc_to_it() -> None:
    tracing = edge_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    config = yaml.safe_load(edge.render(loopback_config(tracing=tracing)))
    block = connection_manager(config)["tracing"]
    provider = block["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    assert provider["typed_config"]["grpc_service"]["envoy_grpc"] == {
        "cluster_name": COLLECTOR_CLUSTER
    }
    assert provider["typed_config"]["service_name"] == "edge"
    assert block["random_sampling"] == {"value": 100.0}
    assert block["custom_tags"] == [{"tag": "http.url", "value": "%PATH(NQ)%"}]
    collector = clusters(config)[COLLECTOR_CLUSTER]
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 4317}
    assert "transport_socket" not in collector


def test_an_https_endpoint_is_reached_over_tls_checked_against_its_name() -> None:
    tracing = edge_tracing({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otel.example.com"})
    assert tracing is not None
    assert (tracing.host, tracing.port, tracing.tls) == ("otel.example.com", 443, True)
    collector = clusters(yaml.safe_load(edge.render(loopback_config(tracing=tracing))))[
        COLLECTOR_CLUSTER
    ]
    tls = collector["transport_socket"]["typed_config"]
    assert tls["sni"] == "otel.example.com"


@pytest.mark.parametrize(("sampler", "percent"), [("always_off", 0.0), ("traceidratio", 10.0)])
def test_the_edge_samples_new_traces_like_the_services(sampler: str, percent: float) -> None:
    tracing = edge_tracing(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_TRACES_SAMPLER": sampler,
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        }
    )
    assert tracing is not None
    assert tracing.sample_percent == percent


def test_printing_spans_on_the_console_leaves_the_edge_untraced() -> None:
    assert edge_tracing({"OTEL_TRACES_EXPORTER": "console"}) is None
