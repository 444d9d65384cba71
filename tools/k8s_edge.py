"""Render the Envoy edge configuration for containers, where the services are DNS names.

`python -m tools.k8s_edge configmap` writes deploy/k8s/edge-config.yaml: a ConfigMap holding the
edge configuration for the Kubernetes Services of deploy/k8s/ and the file layout of the image
(the project in /app). `python -m tools.k8s_edge serve` renders the same configuration inside a
container (docker compose) and replaces itself with Envoy. `--check` compares the ConfigMap with
a fresh rendering, so a changed template or proto cannot leave the deployed edge behind.

tools/edge.py renders STATIC clusters of IP addresses for `make run`; here every cluster becomes
STRICT_DNS, so a headless Service (or a compose service name) resolves to every replica and the
edge health-checks and balances each of them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from meshkit.mesh_tls import spiffe_id
from meshkit.rate_limits import DEFAULT_LIMITS, RateLimit, limits_from_env
from tools import edge_tls
from tools.edge import HEALTH_SERVICES, EdgeConfig, UpstreamTls, render
from tools.edge_hosts import domain_from_env
from tools.edge_tls import DownstreamTls

ROOT = Path(__file__).resolve().parent.parent
IMAGE_ROOT = "/app"
"""Where the Dockerfile puts the project; rendered file paths point there."""
CONFIGMAP_PATH = ROOT / "deploy" / "k8s" / "edge-config.yaml"
CONFIGMAP_NAME = "meshgram-edge"
CONFIG_KEY = "envoy.yaml"
LISTEN_PORT = 8080
MEDIA_CACHE_DIR = Path("/var/cache/meshgram-edge")
"""The edge's media cache in a container: a volume of its own (deploy/k8s/edge.yaml)."""
ADMIN_PORT = 9901
# The Service names of deploy/k8s/ and deploy/compose.yaml, and each service's gRPC port (its
# settings' default).
UPSTREAMS: Mapping[str, str] = {
    "auth_svc": "auth-svc:50051",
    "user_svc": "user-svc:50052",
    "storage_svc": "storage-svc:50053",
}
DEFAULT_CORS_ORIGINS = ("https://app.example.com",)
DEFAULT_DOMAIN = "example.com"
"""The cluster edge routes by host: auth., api. and media. of this domain (docs/routing.md)."""
TLS_DIR = PurePosixPath("/etc/meshgram/tls")
"""Where every container finds its workload certificate (tls.crt), key (tls.key) and the mesh's
CA (ca.crt): a Kubernetes TLS Secret as cert-manager writes it, or compose's bind mounts."""
EDGE_TLS = UpstreamTls(
    cert=Path(TLS_DIR / "tls.crt"),
    key=Path(TLS_DIR / "tls.key"),
    ca=Path(TLS_DIR / "ca.crt"),
    identities={name: spiffe_id(name) for name in HEALTH_SERVICES},
)

_STATIC_CLUSTER = re.compile(r"^(?P<indent>[ ]+)type: STATIC$", re.MULTILINE)


def container_config(
    upstreams: Mapping[str, str] = UPSTREAMS,
    cors_origins: Sequence[str] = DEFAULT_CORS_ORIGINS,
    root: str | None = IMAGE_ROOT,
    tls: UpstreamTls = EDGE_TLS,
    https: DownstreamTls | None = None,
    https_secret: Path = Path("/tmp/edge-certificate.json"),  # noqa: S108 - overridden by serve
    rate_limits: Sequence[RateLimit] = DEFAULT_LIMITS,
    domain: str | None = DEFAULT_DOMAIN,
) -> str:
    """Return the edge YAML for services reached by DNS name, listening on every interface, with
    the project's file paths moved under root (None keeps this checkout's paths), over mutual TLS
    with the certificate files of tls (the container's TLS_DIR unless told); with https, HTTPS
    for clients on its port (certificate read through https_secret) and LISTEN_PORT
    redirecting there; routing by host under domain (None: every Host served alike)."""
    config = EdgeConfig(
        listen_host="0.0.0.0",  # noqa: S104 - inside a container or pod, that is the point
        listen_port=LISTEN_PORT,
        admin_port=ADMIN_PORT,
        cors_origins=tuple(cors_origins),
        upstreams={name: [upstreams[name]] for name in HEALTH_SERVICES},
        media_cache_dir=MEDIA_CACHE_DIR,
        upstream_tls=tls,
        downstream_tls=https,
        downstream_tls_secret=https_secret,
        rate_limits=rate_limits,
        domain=domain,
    )
    text, count = _STATIC_CLUSTER.subn(_dns_cluster, render(config))
    if count != len(HEALTH_SERVICES):
        # The cluster template changed shape: better to stop than ship unresolvable names.
        raise ValueError(f"expected {len(HEALTH_SERVICES)} STATIC clusters, found {count}")
    if root is not None:
        text = text.replace(f"{ROOT}/", f"{root.rstrip('/')}/")
    return text


def _dns_cluster(match: re.Match[str]) -> str:
    """The cluster type line for DNS names: every address of the name, IPv4 as pods have."""
    indent = match["indent"]
    return f"{indent}type: STRICT_DNS\n{indent}dns_lookup_family: V4_ONLY"


def configmap(envoy_yaml: str, namespace: str = "meshgram") -> str:
    """Return a ConfigMap manifest carrying envoy_yaml (its trailing blank lines dropped, as a
    YAML literal block does) under CONFIG_KEY."""
    # Written by hand rather than by a YAML library: the image has none, and a literal block
    # keeps the configuration readable in the manifest.
    body = "".join(f"    {line}\n" if line else "\n" for line in envoy_yaml.rstrip().splitlines())
    return (
        "# Generated by `python -m tools.k8s_edge configmap`; do not edit.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        f"  name: {CONFIGMAP_NAME}\n"
        f"  namespace: {namespace}\n"
        "  labels:\n"
        "    app.kubernetes.io/name: edge\n"
        "    app.kubernetes.io/part-of: meshgram\n"
        "data:\n"
        f"  {CONFIG_KEY}: |\n"
        f"{body}"
    )


def is_current(path: Path = CONFIGMAP_PATH, namespace: str = "meshgram") -> bool:
    """Tell whether path holds the ConfigMap rendered from today's templates and protos (with
    the default CORS origins and domain)."""
    text = configmap(container_config(), namespace)
    return path.exists() and path.read_text() == text


def _origins(raw: str | None) -> tuple[str, ...]:
    """CORS origins from a comma-separated value, the defaults when unset."""
    if not raw:
        return DEFAULT_CORS_ORIGINS
    return tuple(origin.strip() for origin in raw.split(",") if origin.strip())


def _serve(env: Mapping[str, str]) -> None:
    """Render the configuration for this container and become Envoy (never returns)."""
    upstreams = {
        name: env.get(f"EDGE_{name.upper()}_ADDR", address) for name, address in UPSTREAMS.items()
    }
    # A temporary folder: the image's own files stay read-only.
    folder = Path(tempfile.mkdtemp(prefix="meshgram-edge-"))
    https = _https(env)
    secret = edge_tls.sds_path(folder / CONFIG_KEY)
    text = container_config(
        upstreams,
        _origins(env.get("EDGE_CORS_ORIGINS")),
        root=None,
        https=https,
        https_secret=secret,
        rate_limits=limits_from_env(env),
        # Compose sets EDGE_DOMAIN or not: unset, one host serves everything, as in `make run`.
        domain=domain_from_env(env),
    )
    edge_tls.write_secret(https, secret)
    path = folder / CONFIG_KEY
    path.write_text(text)
    MEDIA_CACHE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    envoy = str(Path(sys.executable).parent / "envoy")
    command = [
        envoy,
        "-c",
        str(path),
        "--log-level",
        env.get("EDGE_LOG_LEVEL", "warn"),
        # One Envoy per container: no hot restart, so no shared memory to set up.
        "--disable-hot-restart",
    ]
    os.execv(envoy, command)  # noqa: S606 - a fixed binary beside this interpreter


def _https(env: Mapping[str, str]) -> DownstreamTls | None:
    """HTTPS for clients from EDGE_TLS_CERT / EDGE_TLS_KEY (mounted files); a container makes
    no development certificate, so EDGE_TLS=1 alone is refused."""
    if not env.get("EDGE_TLS_CERT") and env.get("EDGE_TLS", "").strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
    ):
        raise SystemExit("EDGE_TLS=1 in a container needs EDGE_TLS_CERT and EDGE_TLS_KEY (files)")
    try:
        return edge_tls.from_env(env)
    except ValueError as exc:
        raise SystemExit(f"edge: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Write or check the ConfigMap, or serve the edge in a container; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m tools.k8s_edge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("configmap", help="write (or --check) deploy/k8s/edge-config.yaml")
    write.add_argument("--out", type=Path, default=CONFIGMAP_PATH)
    write.add_argument("--namespace", default="meshgram")
    write.add_argument("--cors-origins", default=",".join(DEFAULT_CORS_ORIGINS))
    write.add_argument(
        "--domain", default=DEFAULT_DOMAIN, help="EDGE_DOMAIN: route auth., api., media. by host"
    )
    write.add_argument("--check", action="store_true", help="fail when the file is out of date")
    commands.add_parser("serve", help="render for this container and exec Envoy")
    args = parser.parse_args(argv)
    if args.command == "serve":
        _serve(os.environ)
    domain = domain_from_env({"EDGE_DOMAIN": args.domain})
    text = configmap(
        container_config(cors_origins=_origins(args.cors_origins), domain=domain), args.namespace
    )
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(
                f"{args.out} is out of date: run `python -m tools.k8s_edge configmap`",
                file=sys.stderr,
            )
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
