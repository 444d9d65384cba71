"""TLS at the edge for clients: HTTPS (HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 or later) with a
certificate Envoy reloads when its files change, the plain HTTP port redirecting to it, and HSTS.

Settings: EDGE_TLS=1 serves the development edge certificate (tools/dev_certs.py, made when
missing); EDGE_TLS_CERT and EDGE_TLS_KEY name real certificate files instead (and turn HTTPS
on); EDGE_HTTPS_PORT is the HTTPS port (8443), EDGE_HTTPS_PUBLIC_PORT the one clients reach it
on when a port mapping or load balancer sits in front. docs/tls.md tells the whole story.

Not to be confused with mutual TLS between the edge and the services (UpstreamTls in
tools/edge.py, meshkit/mesh_tls.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from tools.dev_certs import (
    CERTS_DIR,
    LOCAL_HOSTS,
    ensure_server_certificate,
    server_certificate_hosts,
)
from tools.edge_hosts import domain_from_env

ENVOY_DIR = Path(__file__).resolve().parent.parent / "envoy"
DEFAULT_HTTPS_PORT = 8443
SECRET_NAME = "edge_server_certificate"
"""The name under which the edge's listener asks for its certificate (Envoy SDS)."""
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
HSTS_REAL = "max-age=31536000; includeSubDomains"
"""One year, subdomains too: browsers refuse plain HTTP to the host from then on."""
HSTS_DEVELOPMENT = "max-age=0"
"""The development CA is trusted by hand on one machine: a laptop's browser must not be pinned
to HTTPS for localhost, where every other project runs too."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class DownstreamTls:
    """The edge's HTTPS side: its certificate and key files, the HTTPS port, and whether the
    certificate is the development one (which decides HSTS)."""

    cert: Path
    key: Path
    https_port: int = DEFAULT_HTTPS_PORT
    development: bool = False
    public_port: int | None = None
    """The HTTPS port clients reach, when it is not https_port (a port mapping in front)."""

    @property
    def redirect_port(self) -> int:
        """The port the plain listener's redirects and gRPC refusals name."""
        return self.https_port if self.public_port is None else self.public_port

    @property
    def hsts(self) -> str:
        """The Strict-Transport-Security value of every HTTPS answer."""
        return HSTS_DEVELOPMENT if self.development else HSTS_REAL


def from_env(env: Mapping[str, str], certs_dir: Path = CERTS_DIR) -> DownstreamTls | None:
    """The edge's HTTPS settings from EDGE_TLS, EDGE_TLS_CERT, EDGE_TLS_KEY and EDGE_HTTPS_PORT,
    making the development certificate in certs_dir when it is the one asked for; None when
    HTTPS is off. Raise ValueError for settings that contradict each other."""
    switch = env.get("EDGE_TLS", "").strip().lower()
    if switch not in _TRUE + _FALSE:
        raise ValueError("EDGE_TLS must be 1 (HTTPS at the edge) or 0 (plain HTTP, the default)")
    cert, key = env.get("EDGE_TLS_CERT", "").strip(), env.get("EDGE_TLS_KEY", "").strip()
    if bool(cert) != bool(key):
        raise ValueError("EDGE_TLS_CERT and EDGE_TLS_KEY go together: set both or neither")
    if cert and switch in _FALSE[:-1]:
        raise ValueError("EDGE_TLS=0 contradicts EDGE_TLS_CERT: unset one of them")
    if not cert and switch not in _TRUE:
        return None
    port = https_port_from_env(env)
    public = _port("EDGE_HTTPS_PUBLIC_PORT", env.get("EDGE_HTTPS_PUBLIC_PORT", ""))
    if cert:
        for name, path in (("EDGE_TLS_CERT", cert), ("EDGE_TLS_KEY", key)):
            if not Path(path).is_file():
                raise ValueError(f"{name}: no such file {path}")
        return DownstreamTls(Path(cert), Path(key), port, public_port=public)
    # Names `make certs --host` added stay: turning HTTPS on must not take them away. With
    # EDGE_DOMAIN, the domain and its hosts (auth., api., media., www.) are named too.
    domain = domain_from_env(env)
    routed = (domain, f"*.{domain}") if domain else ()
    hosts = tuple(dict.fromkeys((*LOCAL_HOSTS, *server_certificate_hosts(certs_dir), *routed)))
    files = ensure_server_certificate(hosts, certs_dir)
    return DownstreamTls(files.cert, files.key, port, development=True, public_port=public)


def https_port_from_env(env: Mapping[str, str]) -> int:
    """EDGE_HTTPS_PORT, a TCP port number (8443 when unset)."""
    return _port("EDGE_HTTPS_PORT", env.get("EDGE_HTTPS_PORT", "")) or DEFAULT_HTTPS_PORT


def _port(name: str, value: str) -> int | None:
    """The port number the setting `name` holds in value, None when empty; ValueError when it
    is no port number."""
    raw = value.strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 65_535:
        raise ValueError(f"{name} must be a port number from 1 to 65535")
    return int(raw)


def sds_path(config_path: Path) -> Path:
    """Where the certificate secret of the edge configuration at config_path is written."""
    return config_path.with_name(f"{config_path.stem}-certificate.json")


def transport_socket(tls: DownstreamTls | None, secret_file: Path) -> str:
    """YAML lines closing the edge listener's filter chain: TLS with the certificate Envoy
    reads through secret_file; nothing when tls is None."""
    if tls is None:
        return ""
    template = Template((ENVOY_DIR / "downstream_tls.yaml.tmpl").read_text())
    return template.substitute(SECRET_NAME=SECRET_NAME, SDS_PATH=json.dumps(str(secret_file)))


def secret(tls: DownstreamTls) -> str:
    """The secret file Envoy watches: the certificate and key by file name, read again when
    a file in their folder is replaced (as `make certs`, cert-manager and a Kubernetes Secret
    volume replace them)."""
    resource = {
        "@type": SECRET_TYPE,
        "name": SECRET_NAME,
        "tls_certificate": {
            "certificate_chain": {"filename": str(tls.cert)},
            "private_key": {"filename": str(tls.key)},
            "watched_directory": {"path": str(tls.cert.parent)},
        },
    }
    return json.dumps({"resources": [resource]}, indent=2) + "\n"


def write_secret(tls: DownstreamTls | None, secret_file: Path) -> None:
    """Write secret(tls) to secret_file (atomically: Envoy watches it) when tls is given."""
    if tls is None:
        return
    temp = secret_file.with_name(f".{secret_file.name}.new")
    temp.write_text(secret(tls))
    temp.replace(secret_file)


def hsts_headers(tls: DownstreamTls | None) -> str:
    """The route configuration's HSTS header line for HTTPS answers; nothing without tls."""
    if tls is None:
        return ""
    header = {
        "header": {"key": "strict-transport-security", "value": tls.hsts},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
    return f"                  response_headers_to_add: [{json.dumps(header)}]\n"


def redirect_listener(tls: DownstreamTls | None, listen_host: str, listen_port: int) -> str:
    """The plain HTTP listener on listen_port that sends clients to HTTPS; nothing without
    tls."""
    if tls is None:
        return ""
    refusal = f"this edge takes gRPC over TLS only: call port {tls.redirect_port} with TLS"
    template = Template((ENVOY_DIR / "http_redirect.yaml.tmpl").read_text())
    return template.substitute(
        LISTEN_HOST=listen_host,
        LISTEN_PORT=listen_port,
        HTTPS_PORT=tls.redirect_port,
        GRPC_REFUSAL=json.dumps(refusal),
    )
