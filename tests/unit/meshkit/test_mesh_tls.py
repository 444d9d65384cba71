"""Mutual TLS inside the mesh: SPIFFE identities read from grpcio's auth context, the workload
named by an identity, and the host name checked for targets of several replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshkit.mesh_tls import MeshTls, peer_spiffe_id, server_name, spiffe_id, workload_of
from tools.dev_certs import ensure_workload_certificate


def _context(*uris: bytes, security: bytes = b"ssl") -> dict[str, list[bytes]]:
    return {"transport_security_type": [security], "peer_uri": list(uris)}


def test_the_one_spiffe_uri_of_a_verified_certificate_is_the_peer() -> None:
    context = _context(b"spiffe://meshgram.internal/user_svc")

    assert peer_spiffe_id(context) == "spiffe://meshgram.internal/user_svc"


@pytest.mark.parametrize(
    "context",
    [
        {},
        _context(b"spiffe://meshgram.internal/user_svc", security=b"insecure"),
        _context(),
        _context(b"https://example.com/user_svc"),
        _context(b"spiffe://meshgram.internal/user_svc", b"spiffe://meshgram.internal/auth_svc"),
    ],
    ids=["plaintext", "not-tls", "no-uri", "no-spiffe-uri", "two-identities"],
)
def test_no_single_identity_means_no_peer(context: dict[str, list[bytes]]) -> None:
    assert peer_spiffe_id(context) is None


def test_a_spiffe_uri_beside_other_uris_still_counts() -> None:
    context = _context(b"https://example.com/", b"spiffe://meshgram.internal/edge")

    assert peer_spiffe_id(context) == "spiffe://meshgram.internal/edge"


@pytest.mark.parametrize("workload", ["auth_svc", "user_svc", "storage_svc", "data_access", "edge"])
def test_an_identity_names_its_workload(workload: str) -> None:
    assert workload_of(spiffe_id(workload)) == workload
    assert workload_of(spiffe_id(workload, "prod.example"), "prod.example") == workload


@pytest.mark.parametrize(
    "identity",
    [
        "spiffe://other.example/auth_svc",
        "spiffe://meshgram.internal/",
        "spiffe://meshgram.internal",
        "spiffe://meshgram.internal/ns/auth_svc",
        "spiffe://meshgram.internal/auth_svc?x=1",
        "spiffe://meshgram.internal/auth_svc#frag",
        "spiffe://meshgram.internal/auth_svc?",
        "https://meshgram.internal/auth_svc",
        "spiffe://user@meshgram.internal/auth_svc",
        "spiffe://meshgram.internal:443/auth_svc",
    ],
)
def test_anything_but_one_workload_of_the_domain_names_none(identity: str) -> None:
    assert workload_of(identity) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:50060", None),
        ("dns:///data-access:50060", None),
        ("ipv4:127.0.0.1:50060,127.0.0.1:50160", "127.0.0.1"),
        ("ipv6:[::1]:50060,[::1]:50160", "::1"),
    ],
)
def test_targets_of_several_addresses_check_their_first_host(
    target: str, expected: str | None
) -> None:
    assert server_name(target) == expected


def test_the_private_key_never_shows_in_a_repr(tmp_path: Path) -> None:
    files = ensure_workload_certificate("user_svc", directory=tmp_path)
    tls = MeshTls.from_files(files.cert, files.key, files.ca)

    assert tls.key.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert "PRIVATE" not in repr(tls)
