"""The Ed25519 key that signs access tokens: loaded from a PEM file, created in development."""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshkit.files import create_private_file

log = logging.getLogger(__name__)


class SigningKeyError(RuntimeError):
    """The signing key file is missing or does not hold an Ed25519 private key."""


def load_signing_key(path: Path, *, create_if_missing: bool) -> Ed25519PrivateKey:
    """Return the Ed25519 key in path; create it (mode 0600) first when allowed and missing."""
    if not path.exists():
        if not create_if_missing:
            raise SigningKeyError(f"signing key file {path} does not exist")
        _create(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read signing key file {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key file {path} does not hold an Ed25519 private key")
    if path.stat().st_mode & 0o077:
        log.warning("signing key file is readable by other users", extra={"path": str(path)})
    return key


def _create(path: Path) -> None:
    """Write a fresh key without ever exposing a partial file or replacing an existing one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    if create_private_file(path, pem):
        log.info("generated a development signing key", extra={"path": str(path)})
