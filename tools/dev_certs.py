"""Development certificates: a private CA, the edge's server certificate and one certificate per
workload of the mesh with a SPIFFE identity, made with `cryptography` and kept in var/certs/.

`make certs` makes them; `make run` and the tests make them when missing. Every key is ECDSA P-256
in a 0600 file; a certificate is made again when it is about to expire or no longer names what it
must (another host for the edge), and all of them when the CA is. Real deployments give the
same files from their own CA (docs/tls.md); nothing here is meant for production.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshkit.files import create_private_file
from meshkit.mesh_tls import DEFAULT_TRUST_DOMAIN, spiffe_id

ROOT = Path(__file__).resolve().parent.parent
CERTS_DIR = ROOT / "var" / "certs"
TRUST_DOMAIN = DEFAULT_TRUST_DOMAIN
"""The SPIFFE trust domain of the development mesh: identities are spiffe://<it>/<workload>."""
WORKLOADS = ("edge", "auth_svc", "user_svc", "storage_svc", "data_access")
"""Every process of the mesh that holds a workload certificate."""
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Names every development certificate is valid for, so loopback connections verify."""

CA_DAYS = 3650
LEAF_DAYS = 90
RENEW_BEFORE = datetime.timedelta(days=14)
"""A certificate expiring sooner than this is made again."""


@dataclass(frozen=True)
class CertFiles:
    """Paths of one certificate (PEM), its private key (PEM, 0600) and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


def ensure_ca(directory: Path = CERTS_DIR) -> CertFiles:
    """Return the development CA in directory, making it when missing or about to expire."""
    with _locked(directory):
        return _ensure_ca(directory)


def _ensure_ca(directory: Path) -> CertFiles:
    """ensure_ca without the lock."""
    files = CertFiles(directory / "ca.pem", directory / "ca.key", directory / "ca.pem")
    if _valid(files.cert, files.cert, required_sans=None):
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshgram development CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _replace(files, cert, key)
    return files


def ensure_server_certificate(
    hosts: Sequence[str] = LOCAL_HOSTS, directory: Path = CERTS_DIR
) -> CertFiles:
    """Return the edge's HTTPS certificate for hosts (DNS names, wildcards or IP addresses),
    signed by the development CA."""
    with _locked(directory):
        return _ensure_leaf("edge-server", hosts, None, directory)


def server_certificate_hosts(directory: Path = CERTS_DIR) -> tuple[str, ...]:
    """The DNS names and IP addresses the edge's HTTPS certificate in directory is valid for
    now (none when there is none), so that a caller can keep names `make certs --host` added."""
    path = directory / "edge-server.pem"
    if not path.is_file():
        return ()
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return ()
    addresses = [str(address) for address in sans.get_values_for_type(x509.IPAddress)]
    return (*sans.get_values_for_type(x509.DNSName), *addresses)


def ensure_workload_certificate(
    workload: str, hosts: Sequence[str] = LOCAL_HOSTS, directory: Path = CERTS_DIR
) -> CertFiles:
    """Return workload's mutual-TLS certificate: its SPIFFE identity as a URI SAN, valid for
    hosts too (a server's address is checked by the client), usable as client and server."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; one of {', '.join(WORKLOADS)}")
    with _locked(directory):
        return _ensure_leaf(workload, hosts, spiffe_id(workload), directory)


def ensure_all(
    edge_hosts: Sequence[str] = LOCAL_HOSTS,
    directory: Path = CERTS_DIR,
    workload_hosts: Sequence[str] = (),
) -> dict[str, CertFiles]:
    """Make (or keep) the CA, the edge's server certificate and every workload's certificate
    (valid for the local names and workload_hosts, e.g. the DNS names of docker compose);
    return them by name ("edge-server" and each of WORKLOADS)."""
    hosts = (*LOCAL_HOSTS, *workload_hosts)
    with _locked(directory):
        made = {"edge-server": _ensure_leaf("edge-server", edge_hosts, None, directory)}
        for workload in WORKLOADS:
            made[workload] = _ensure_leaf(workload, hosts, spiffe_id(workload), directory)
        return made


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on directory's certificates: runners and tests starting together
    make them once, and nobody reads a key whose certificate is being replaced."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is reduced by the umask and ignored for a folder that already exists.
    directory.chmod(0o700)
    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ensure_leaf(name: str, hosts: Sequence[str], uri: str | None, directory: Path) -> CertFiles:
    """Make or keep directory/name.pem and name.key for hosts (and uri), signed by the CA."""
    ca = _ensure_ca(directory)
    files = CertFiles(directory / f"{name}.pem", directory / f"{name}.key", ca.cert)
    sans = _sans(hosts, uri)
    if _valid(files.cert, ca.cert, required_sans=sans):
        return files
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca.key} is not an EC key; delete {directory} to start over")
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if uri is not None:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _replace(files, cert, key)
    return files


def _sans(hosts: Sequence[str], uri: str | None) -> list[x509.GeneralName]:
    """Subject alternative names for hosts (IP addresses as such) and an optional URI."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if uri is not None:
        names.append(x509.UniformResourceIdentifier(uri))
    return names


def _valid(cert_path: Path, ca_path: Path, required_sans: list[x509.GeneralName] | None) -> bool:
    """True when cert_path exists, is issued by the CA in ca_path, names required_sans and is
    not about to expire."""
    if not cert_path.is_file() or not ca_path.is_file():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    if cert.not_valid_after_utc - RENEW_BEFORE < _now() or cert.issuer != ca.subject:
        return False
    if cert_path != ca_path:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
    if required_sans is None:
        return True
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(present) == set(required_sans)


def _replace(files: CertFiles, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a new key (0600) and certificate over the old ones, key first."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for path, data in (
        (files.key, key_pem),
        (files.cert, cert.public_bytes(serialization.Encoding.PEM)),
    ):
        temp = path.with_name(f".{path.name}.new")
        temp.unlink(missing_ok=True)
        create_private_file(temp, data)
        temp.replace(path)
    files.cert.chmod(0o644)


def _now() -> datetime.datetime:
    """The current time in UTC."""
    return datetime.datetime.now(datetime.UTC)


def main() -> None:
    """`make certs`: make the development certificates and say where they are."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="another name for the edge's certificate (repeatable), e.g. '*.meshgram.test'",
    )
    parser.add_argument(
        "--workload-host",
        action="append",
        default=[],
        help="another name for every workload certificate (repeatable): the host names peers "
        "dial, e.g. data-access and auth-svc in docker compose",
    )
    parser.add_argument("--dir", type=Path, default=CERTS_DIR, help="where to keep them")
    args = parser.parse_args()
    made = ensure_all((*LOCAL_HOSTS, *args.host), args.dir, args.workload_host)
    for name, files in made.items():
        print(f"{name:12} {files.cert}")
    print(f"{'CA':12} {made['edge-server'].ca} (trust it to verify the edge and the mesh)")


if __name__ == "__main__":
    main()
