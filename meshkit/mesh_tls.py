"""Mutual TLS inside the mesh: a workload's certificate, key and CA as gRPC credentials, and the
SPIFFE identity a verified peer certificate names.

Every workload certificate carries exactly one URI SAN `spiffe://<trust domain>/<workload>`; a
server asks every client for its certificate (require_client_auth) and a client checks the
server's chain and host name, so both ends of every internal hop know who the other is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc

DEFAULT_TRUST_DOMAIN = "meshgram.internal"
"""The SPIFFE trust domain of meshgram's workloads: identities are spiffe://<it>/<workload>."""

# What grpcio's auth context says about a peer (grpc core's ssl_transport_security names).
_SECURITY_TYPE = "transport_security_type"
_PEER_URI = "peer_uri"


def spiffe_id(workload: str, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
    """The SPIFFE identity of a workload, as its certificate's URI SAN writes it."""
    return f"spiffe://{trust_domain}/{workload}"


@dataclass(frozen=True)
class MeshTls:
    """One workload's certificate chain, private key and the CA its peers are verified with."""

    cert: bytes = field(repr=False)
    key: bytes = field(repr=False)
    ca: bytes = field(repr=False)

    @classmethod
    def from_files(cls, cert: Path, key: Path, ca: Path) -> MeshTls:
        """Read the three PEM files (read once: replacing them takes effect at a restart)."""
        return cls(cert=cert.read_bytes(), key=key.read_bytes(), ca=ca.read_bytes())

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials of a server that accepts only clients with a certificate from the CA."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials of a client that presents this workload's certificate and trusts only
        servers whose certificate the CA signed."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def server_name(target: str) -> str | None:
    """The host name a client must find in the server's certificate for a gRPC target that names
    several addresses (ipv4:a:1,b:2 or ipv6:[..]:1,...): the first one's host. None for other
    targets, whose own authority is checked (host:port, dns:///name:port)."""
    scheme, _, rest = target.partition(":")
    if scheme not in ("ipv4", "ipv6") or not rest:
        return None
    first = rest.split(",", 1)[0]
    host = first.rsplit(":", 1)[0] if not first.endswith("]") else first
    return host.strip("[]") or None


def peer_spiffe_id(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The SPIFFE identity of a peer that proved it over TLS: the one spiffe:// URI SAN of its
    verified certificate. None over plaintext, and for a certificate with none or several (a
    certificate that names two identities proves neither)."""
    if b"ssl" not in auth_context.get(_SECURITY_TYPE, ()):
        return None
    found = [
        uri.decode("ascii", "replace")
        for uri in auth_context.get(_PEER_URI, ())
        if uri.lower().startswith(b"spiffe://")
    ]
    return found[0] if len(found) == 1 else None


def workload_of(identity: str, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str | None:
    """The workload named by a SPIFFE identity of trust_domain (spiffe://<domain>/<workload>),
    else None: another trust domain, a path of several segments, a query or a fragment."""
    parts = urlsplit(identity)
    if parts.scheme.lower() != "spiffe" or parts.netloc.lower() != trust_domain.lower():
        return None
    if parts.query or parts.fragment or identity.endswith(("?", "#")):
        return None
    workload = parts.path.removeprefix("/")
    if not workload or "/" in workload or not parts.path.startswith("/"):
        return None
    return workload
