"""Render the Envoy edge configuration from envoy/*.yaml.tmpl."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parent.parent
ENVOY_DIR = ROOT / "envoy"
DESCRIPTOR = ENVOY_DIR / "api_descriptor.pb"

# Cluster name -> the gRPC service whose health decides whether Envoy routes to an endpoint.
HEALTH_SERVICES = {
    "auth_svc": "meshgram.auth.v1.AuthService",
    "user_svc": "meshgram.user.v1.UserService",
    "storage_svc": "meshgram.storage.v1.StorageService",
}


@dataclass(frozen=True)
class EdgeConfig:
    """What the edge needs to know: where to listen and where each public service runs."""

    listen_host: str
    listen_port: int
    admin_port: int
    cors_origins: Sequence[str]
    upstreams: Mapping[str, Sequence[str]]
    """Cluster name -> endpoint addresses ("host:port"); several make Envoy balance."""
    max_connections: int = 10_000


def render(config: EdgeConfig) -> str:
    """Return the Envoy YAML for config."""
    clusters = [_cluster(name, config.upstreams[name]) for name in HEALTH_SERVICES]
    origins = [{"exact": origin} for origin in config.cors_origins]
    template = Template((ENVOY_DIR / "envoy.yaml.tmpl").read_text())
    return template.substitute(
        ADMIN_PORT=config.admin_port,
        MAX_CONNECTIONS=config.max_connections,
        LISTEN_HOST=config.listen_host,
        LISTEN_PORT=config.listen_port,
        CORS_ORIGINS=json.dumps(origins),
        DESCRIPTOR=str(DESCRIPTOR),
        CLUSTERS="".join(clusters),
    )


def write(config: EdgeConfig, path: Path) -> Path:
    """Render config into path and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(config))
    return path


def _cluster(name: str, endpoints: Sequence[str]) -> str:
    """Render one upstream cluster with its endpoints."""
    lines = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        lines.append(
            "              - endpoint:\n"
            "                  address:\n"
            f"                    socket_address: {{address: {host}, port_value: {int(port)}}}\n"
        )
    template = Template((ENVOY_DIR / "cluster.yaml.tmpl").read_text())
    return template.substitute(
        NAME=name, HEALTH_SERVICE=HEALTH_SERVICES[name], ENDPOINTS="".join(lines)
    )
