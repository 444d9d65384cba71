"""A container health check: exit 0 when a gRPC service (or Envoy's admin) says it is ready.

`python -m tools.healthcheck 127.0.0.1:50051` asks the standard gRPC health service of the
process at that address for its overall status ("" unless --service names one); exit 0 on
SERVING, 1 otherwise with the reason on stderr. `--http URL` instead expects a 200 from URL
(Envoy's admin /ready). With --tls-cert/--tls-key/--tls-ca it asks over mutual TLS, presenting
that certificate (a service with mutual TLS accepts nothing else; inside a container, the
service's own). It is what docker compose and the Kubernetes probes run: grpc_health_probe is
not on PyPI, the kubelet's gRPC probe speaks no TLS, and the image already has
grpcio-health-checking.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from meshkit.mesh_tls import MeshTls
from meshkit.peers import health_check


def grpc_status(
    address: str, service: str = "", timeout: float = 2.0, tls: MeshTls | None = None
) -> str:
    """Return the health status name the server at address reports for service (e.g.
    "SERVING"), or "UNREACHABLE: <details>" when it does not answer; over mutual TLS with tls."""
    channel = (
        grpc.insecure_channel(address)
        if tls is None
        else grpc.secure_channel(address, tls.channel_credentials())
    )
    with channel:
        check = health_check(channel)
        try:
            reply = check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            name = code.name if code is not None else "ERROR"
            return f"UNREACHABLE: {name}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def http_ready(url: str, timeout: float = 2.0) -> str | None:
    """Return None when url answers 200, else why not."""
    if not url.startswith(("http://", "https://")):
        return f"not an http(s) URL: {url}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - checked above
            status = int(reply.status)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"unreachable: {exc}"
    return None if status == 200 else f"HTTP {status}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one check; return the exit status (0 healthy, 1 not)."""
    parser = argparse.ArgumentParser(prog="python -m tools.healthcheck", description=__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("address", nargs="?", help="host:port of a gRPC server")
    target.add_argument("--http", metavar="URL", help="expect HTTP 200 from URL instead")
    parser.add_argument("--service", default="", help="gRPC service name ('' = the server)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate to present (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA the server's certificate must have")
    args = parser.parse_args(argv)
    tls_files = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(tls_files) and not all(tls_files):
        parser.error("mutual TLS needs --tls-cert, --tls-key and --tls-ca together")
    if args.http:
        problem = http_ready(args.http, args.timeout)
        if problem is not None:
            print(f"{args.http}: {problem}", file=sys.stderr)
            return 1
        return 0
    tls = MeshTls.from_files(*tls_files) if all(tls_files) else None
    status = grpc_status(args.address, args.service, args.timeout, tls)
    if status != "SERVING":
        print(f"{args.address} {args.service or '(server)'}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
