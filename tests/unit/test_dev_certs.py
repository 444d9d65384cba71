"""The development certificates: a CA, the edge's server certificate and SPIFFE workload ones."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from tools import dev_certs


def _sans(path: Path) -> x509.SubjectAlternativeName:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_every_certificate_is_signed_by_the_ca_and_keys_are_private(tmp_path: Path) -> None:
    made = dev_certs.ensure_all(directory=tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert set(made) == {"edge-server", *dev_certs.WORKLOADS}
    for files in made.values():
        x509.load_pem_x509_certificate(files.cert.read_bytes()).verify_directly_issued_by(ca)
        assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700


def test_a_workload_certificate_names_its_spiffe_identity(tmp_path: Path) -> None:
    files = dev_certs.ensure_workload_certificate("data_access", directory=tmp_path)
    uris = _sans(files.cert).get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["spiffe://meshgram.internal/data_access"]
    assert "localhost" in _sans(files.cert).get_values_for_type(x509.DNSName)


def test_certificates_are_kept_until_what_they_name_changes(tmp_path: Path) -> None:
    first = dev_certs.ensure_server_certificate(("localhost",), tmp_path).cert.read_bytes()
    again = dev_certs.ensure_server_certificate(("localhost",), tmp_path).cert.read_bytes()
    assert again == first
    wider = dev_certs.ensure_server_certificate(("localhost", "*.meshgram.test"), tmp_path)
    assert "*.meshgram.test" in _sans(wider.cert).get_values_for_type(x509.DNSName)


def test_a_new_ca_makes_every_certificate_again(tmp_path: Path) -> None:
    old = dev_certs.ensure_workload_certificate("auth_svc", directory=tmp_path).cert.read_bytes()
    (tmp_path / "ca.pem").unlink()
    files = dev_certs.ensure_workload_certificate("auth_svc", directory=tmp_path)
    assert files.cert.read_bytes() != old
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    x509.load_pem_x509_certificate(files.cert.read_bytes()).verify_directly_issued_by(ca)


def test_an_unknown_workload_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mallory"):
        dev_certs.ensure_workload_certificate("mallory", directory=tmp_path)
