"""An edge configuration for tests that render Envoy's config without running it."""

from __future__ import annotations

from typing import Any

from tools import edge


def loopback_config(**changes: Any) -> edge.EdgeConfig:
    """An edge on 127.0.0.1:8080 (admin 9901), no CORS origins, one unreachable endpoint per
    service, with changes applied."""
    fields: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "listen_port": 8080,
        "admin_port": 9901,
        "cors_origins": (),
        "upstreams": {name: ["127.0.0.1:1"] for name in edge.HEALTH_SERVICES},
    }
    return edge.EdgeConfig(**{**fields, **changes})
