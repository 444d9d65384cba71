"""The edge's part in tracing: Envoy's OpenTelemetry tracer starts (or continues) each request's
trace, exports its spans over OTLP/gRPC to the same endpoint the services use, and passes the
W3C traceparent to the service it routes to. Rendered only when the OTEL_* variables turn
tracing on (meshkit.tracing); otherwise the edge config has no trace of it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from meshkit.tracing import TracingSettingsError, tracing_settings

COLLECTOR_CLUSTER = "otlp_collector"
EDGE_SERVICE_NAME = "edge"
# Debian's bundle of public CAs, which a collector reached over https is checked against.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_TYPES = "type.googleapis.com/envoy.extensions"


@dataclass(frozen=True)
class EdgeTracing:
    """Where the edge sends its spans and which share of new traces it records."""

    host: str
    port: int
    tls: bool
    """https endpoint: TLS to the collector, checked against the system's public CAs."""
    sample_percent: float
    """Share of the traces the edge starts that are recorded, in percent."""


def edge_tracing(env: Mapping[str, str]) -> EdgeTracing | None:
    """The edge's tracing from the OTEL_* variables in env; None when tracing is off or only
    prints spans (console)."""
    settings = tracing_settings(env)
    if settings is None or settings.exporter != "otlp":
        return None
    url = urlsplit(settings.endpoint)
    tls = url.scheme == "https"
    if not url.hostname:
        raise TracingSettingsError("the OTLP endpoint names no host")
    return EdgeTracing(
        host=url.hostname,
        port=url.port or (443 if tls else 4317),
        tls=tls,
        sample_percent=round(settings.ratio * 100, 4),
    )


def tracing_block(tracing: EdgeTracing | None) -> str:
    """The connection manager's `tracing:` entry (one YAML line), or "" without tracing."""
    if tracing is None:
        return ""
    config = {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {
                    "envoy_grpc": {"cluster_name": COLLECTOR_CLUSTER},
                    "timeout": "2s",
                },
                "service_name": EDGE_SERVICE_NAME,
            },
        },
        # Requests that arrive with a traceparent keep its decision; this decides the others.
        "random_sampling": {"value": tracing.sample_percent},
        # Envoy's own http.url tag carries the query, where signed media URLs keep their
        # signature: replaced by the path alone.
        "custom_tags": [{"tag": "http.url", "value": "%PATH(NQ)%"}],
    }
    return f"                tracing: {json.dumps(config)}\n"


def collector_cluster(tracing: EdgeTracing | None) -> str:
    """The cluster of the OTLP/gRPC receiver (HTTP/2, resolved by DNS), or "" without
    tracing."""
    if tracing is None:
        return ""
    cluster: dict[str, object] = {
        "name": COLLECTOR_CLUSTER,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{_TYPES}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": COLLECTOR_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": tracing.host,
                                        "port_value": tracing.port,
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if tracing.tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": f"{_TYPES}.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": tracing.host,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {
                        "trusted_ca": {"filename": SYSTEM_CA_BUNDLE},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": tracing.host}}
                        ],
                    },
                },
            },
        }
    # JSON is YAML: one list item under "clusters:".
    return f"    - {json.dumps(cluster)}\n"
