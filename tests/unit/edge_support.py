"""An edge configuration for tests that render Envoy's config without running it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def rendered_config(tmp_path_factory: pytest.TempPathFactory, **changes: Any) -> dict[str, Any]:
    """The Envoy config of loopback_config(**changes), rendered and parsed. Swagger UI's files
    (unpacked by `make docs-ui`) are stood in for by empty files: only their paths end up in the
    config."""
    stand_ins = tmp_path_factory.mktemp("swagger-ui")
    files = dict(edge.SERVED_FILES)
    for name in ("SWAGGER_UI_BUNDLE", "SWAGGER_UI_CSS"):
        files[name] = stand_ins / files[name].name
        files[name].touch()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(edge, "SERVED_FILES", files)
        text = edge.render(loopback_config(**changes))
    parsed: dict[str, Any] = yaml.safe_load(text)
    return parsed


def envoy_refusal(path: Path) -> str:
    """What the real Envoy says against the config file at path in validate mode: "" when it
    accepts it, else the end of its output."""
    envoy = Path(sys.executable).parent / "envoy"
    result = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return "" if result.returncode == 0 else result.stdout[-2000:] + result.stderr[-2000:]
